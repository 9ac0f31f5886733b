"""Executors run candidate evaluations; the search only sees `submit(fn, *args) -> future`.

`executor.kind` picks one:
- local: in this process, one candidate at a time (the default).
- process: a pool of worker processes, one per GPU (each pinned to its device) or
  `workers` CPU processes.
- dask: a dask.distributed cluster: a LocalCluster of `workers` processes, or the scheduler
  at `address`.
- slurm: submitit jobs (SLURM job arrays; `slurm.cluster='local'` runs them as local
  processes, which is how the tests run it). A preempted job is requeued and its candidate
  continues from its last training checkpoint.

A future only needs `.done()` and `.result()`. `slots` is how many candidates an executor
trains at once, which is how many an asynchronous search keeps in flight. Every executor's
workers share the JAX compilation cache.

A submitted function may carry `ahead`: a function of the same arguments that prepares its
run (`nas.search.evaluate_candidate`'s compiles the candidate). The local executor runs it
in `compile_ahead` background threads as soon as a candidate is submitted, so the next
candidates compile while one trains; on MedMNIST-sized data compiling is most of a
candidate's cost. Pool workers train candidates side by side, so they need no such help.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import multiprocessing
import os
from typing import Any, Callable

import ml_collections

from nas import errors
from nas import host_memory


class _Deferred(concurrent.futures.Future):
  """A future that runs its call when its result is first asked for."""

  def __init__(self, call: Callable[[], Any]):
    super().__init__()
    self._call = call

  def result(self, timeout: float | None = None) -> Any:
    if not self.done():
      try:
        self.set_result(self._call())
      except Exception as e:  # pylint: disable=broad-except
        self.set_exception(e)
    return super().result(timeout)


def _after(prepared: concurrent.futures.Future, fn: Callable[..., Any], *args, **kwargs) -> Any:
  """fn(*args, **kwargs) once its preparation has ended; a preparation not yet started is
  dropped, and one that failed is ignored: the run meets the same error and reports it."""
  if not prepared.cancel():
    concurrent.futures.wait([prepared])
  return fn(*args, **kwargs)


class LocalExecutor:
  """In-process, one candidate at a time, each run when the search collects its result.

  Deferring the run lets the search store every result the moment it exists, so a kill
  loses at most the one candidate in training. With `compile_ahead` threads, a submitted
  function's `ahead` runs in the background from submission on (see the module docstring).
  """

  slots = 1

  def __init__(self, compile_ahead: int = 0):
    self._ahead = (concurrent.futures.ThreadPoolExecutor(compile_ahead, 'compile-ahead')
                   if compile_ahead else None)

  def submit(self, fn: Callable[..., Any], *args, **kwargs) -> concurrent.futures.Future:
    ahead = getattr(fn, 'ahead', None)
    if self._ahead is None or ahead is None:
      return _Deferred(functools.partial(fn, *args, **kwargs))
    prepared = self._ahead.submit(ahead, *args, **kwargs)
    return _Deferred(functools.partial(_after, prepared, fn, *args, **kwargs))

  def batch(self):
    return contextlib.nullcontext()

  def shutdown(self) -> None:
    if self._ahead is not None:
      self._ahead.shutdown(wait=False, cancel_futures=True)


def _start_worker(slots, accelerator: str, compilation_cache: str) -> None:
  """Runs first in every worker process, before it starts JAX: takes a device slot."""
  slot = slots.get()
  if accelerator == 'gpu':
    os.environ['CUDA_VISIBLE_DEVICES'] = device_for_slot(
        slot, os.environ.get('CUDA_VISIBLE_DEVICES', ''))
  prepare_worker(accelerator == 'cpu', compilation_cache)


def device_for_slot(slot: int, visible: str) -> str:
  """The GPU of worker `slot`: the slot-th of the job's own CUDA_VISIBLE_DEVICES, if set.

  A scheduler that gives a job GPUs 4-7 sets CUDA_VISIBLE_DEVICES=4,5,6,7; worker 0 must
  take GPU 4, not GPU 0, which belongs to another job.
  """
  devices = [d.strip() for d in visible.split(',') if d.strip()]
  if not devices:
    return str(slot)
  if slot >= len(devices):
    raise errors.UserError(f'executor.workers asks for GPU slot {slot}, but '
                           f'CUDA_VISIBLE_DEVICES={visible} holds {len(devices)}; lower '
                           'executor.workers')
  return devices[slot]


def prepare_worker(cpu_only: bool, compilation_cache: str) -> None:
  """Runs in a worker process, before its first computation."""
  if cpu_only:
    # JAX would open every GPU of the host, taking 75% of each, in every worker. It reads
    # JAX_PLATFORMS when imported, which the spawned worker may have done already (it
    # imports the launching script), so the option is set too. The malloc settings for CPU
    # training were skipped when `nas` was imported on a host with a GPU plugin; JAX's CPU
    # client has not started its threads yet, so they still come before those.
    os.environ['JAX_PLATFORMS'] = 'cpu'
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update('jax_platforms', 'cpu')
    host_memory.keep_freed_memory()
  _use_compilation_cache(compilation_cache)


def _use_compilation_cache(directory: str) -> None:
  from nas import train  # pylint: disable=g-import-not-at-top
  if directory:
    train.enable_compilation_cache(directory)


class ProcessExecutor:
  """A pool of spawned worker processes; on a GPU host, one per device."""

  def __init__(self, workers: int, accelerator: str, compilation_cache: str):
    self.slots = workers
    if accelerator == 'gpu':  # refused here, not in a worker, where it would break the pool
      device_for_slot(workers - 1, os.environ.get('CUDA_VISIBLE_DEVICES', ''))
    context = multiprocessing.get_context('spawn')  # never fork a process that holds JAX
    slots = context.Queue()
    for slot in range(workers):
      slots.put(slot)
    self._pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker,
        initargs=(slots, accelerator, compilation_cache))

  def submit(self, fn: Callable[..., Any], *args, **kwargs) -> concurrent.futures.Future:
    return self._pool.submit(fn, *args, **kwargs)

  def batch(self):
    return contextlib.nullcontext()

  def shutdown(self) -> None:
    self._pool.shutdown(cancel_futures=True)


class DaskExecutor:
  """dask.distributed: a LocalCluster of worker processes, or an existing scheduler."""

  def __init__(self, workers: int, address: str, accelerator: str, compilation_cache: str):
    import dask  # pylint: disable=g-import-not-at-top
    from distributed import Client, LocalCluster  # pylint: disable=g-import-not-at-top
    self.slots = workers
    if address:
      self._client = Client(address)
      self._cluster = None
    else:
      # Dask limits its workers to one OpenMP thread and sets a malloc trim threshold; the
      # oneDNN convolutions then sum in another order and train other numbers than the local
      # executor's. The workers keep this process's environment instead.
      with dask.config.set({'distributed.nanny.pre-spawn-environ': {}}):
        self._cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                     dashboard_address=None)
      self._client = Client(self._cluster)
    from nas import dask_plugin  # pylint: disable=g-import-not-at-top
    # An existing cluster's workers are the user's to place on devices.
    self._client.register_plugin(dask_plugin.PrepareWorker(
        not address and accelerator == 'cpu', compilation_cache))

  def submit(self, fn: Callable[..., Any], *args, **kwargs):
    return self._client.submit(fn, *args, pure=False, **kwargs)

  def batch(self):
    return contextlib.nullcontext()

  def shutdown(self) -> None:
    from nas import dask_plugin  # pylint: disable=g-import-not-at-top
    if self._cluster is None:  # the next user of the cluster needs none of this search's setup
      self._client.unregister_worker_plugin(dask_plugin.PrepareWorker.name)
    self._client.close()
    if self._cluster is not None:
      self._cluster.close()


class _Requeueable:
  """A submitit job that asks to be requeued when SLURM preempts or times it out.

  The requeued job calls the same function again; a candidate then continues from its last
  orbax training checkpoint (see `train.checkpoint_every_epochs`).
  """

  def __init__(self, fn: Callable[..., Any], compilation_cache: str):
    self.fn = fn
    self.compilation_cache = compilation_cache

  def __call__(self, *args, **kwargs):
    _use_compilation_cache(self.compilation_cache)
    return self.fn(*args, **kwargs)

  def checkpoint(self, *args, **kwargs):
    import submitit  # pylint: disable=g-import-not-at-top
    return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class SlurmExecutor:
  """submitit: one SLURM job per candidate, submitted as one job array per batch."""

  def __init__(self, folder: str, slurm: ml_collections.ConfigDict, compilation_cache: str):
    import submitit  # pylint: disable=g-import-not-at-top
    self.slots = slurm.array_parallelism
    self._compilation_cache = compilation_cache
    self._executor = submitit.AutoExecutor(folder=folder, cluster=slurm.cluster or None)
    parameters = {'timeout_min': slurm.timeout_min, 'gpus_per_node': slurm.gpus_per_node,
                  'cpus_per_task': slurm.cpus_per_task, 'name': 'mednas'}
    if self._executor.cluster == 'slurm':
      parameters.update(slurm_partition=slurm.partition or None,
                        slurm_array_parallelism=slurm.array_parallelism,
                        slurm_additional_parameters=slurm.additional_parameters.to_dict())
    self._executor.update_parameters(**{k: v for k, v in parameters.items() if v is not None})

  def submit(self, fn: Callable[..., Any], *args, **kwargs):
    return self._executor.submit(_Requeueable(fn, self._compilation_cache), *args, **kwargs)

  def batch(self):
    """Jobs submitted inside go to SLURM as one array when the block ends."""
    return self._executor.batch()

  def shutdown(self) -> None:
    pass


# kind -> factory(executor config, workdir, compilation cache directory).
EXECUTORS: dict[str, Callable[[ml_collections.ConfigDict, str, str], Any]] = {
    'local': lambda config, workdir, cache: LocalExecutor(config.compile_ahead),
    'process': lambda config, workdir, cache: ProcessExecutor(
        config.workers, config.accelerator, cache),
    'dask': lambda config, workdir, cache: DaskExecutor(
        config.workers, config.address, config.accelerator, cache),
    'slurm': lambda config, workdir, cache: SlurmExecutor(
        os.path.join(workdir, 'slurm'), config.slurm, cache),
}


_ACCELERATORS = ('cpu', 'gpu', 'tpu')


def check_config(config: ml_collections.ConfigDict) -> None:
  """Refuses an executor block (the experiment's `executor`) that cannot work."""
  if config.kind not in EXECUTORS:
    raise errors.UserError(f'unknown executor.kind {config.kind!r}; choose one of '
                           f'{", ".join(EXECUTORS)}')
  if config.accelerator not in _ACCELERATORS:
    raise errors.UserError(f'unknown executor.accelerator {config.accelerator!r}; choose one '
                           f'of {", ".join(_ACCELERATORS)}')
  local_workers = config.kind == 'process' or (config.kind == 'dask' and not config.address)
  if local_workers and config.accelerator == 'tpu':
    # libtpu lets one process hold the host's TPU, and this one opens it (its JAX client
    # keeps the search's records and then trains the final stage): workers would fall back
    # to the CPU.
    raise errors.UserError(
        f'executor.kind={config.kind} cannot share a TPU host between worker processes; use '
        'executor.kind=local, which trains each candidate over every chip, or slurm')
  if config.kind == 'dask' and local_workers and config.accelerator == 'gpu':
    raise errors.UserError(
        'executor.accelerator=gpu pins one worker to each GPU with executor.kind=process '
        'only; a dask LocalCluster\'s workers would each take every GPU. Use '
        'executor.kind=process, or pass executor.address of a cluster whose workers each see '
        'their own GPU (e.g. one dask-cuda worker per GPU)')


def slots(config) -> int:
  """How many candidates the executor of the block `config` (a ConfigDict, or its dict as a
  store keeps it) trains at once: its executor's `slots`, what an async search keeps in flight.
  """
  if config['kind'] in ('process', 'dask'):
    return config['workers']
  if config['kind'] == 'slurm':
    return config['slurm']['array_parallelism']
  return 1


def prepare_this_process(config: ml_collections.ConfigDict) -> None:
  """Call before this process starts JAX: leaves the host's GPUs to `process` workers.

  JAX's client takes 75% of every GPU's memory when it starts, and this process starts one
  too (it keeps the search's records, then trains the final stage), so workers pinned one to
  each GPU would find a quarter of it left. Here it allocates as it needs instead (its
  workers inherit that); a value the user set stays.
  """
  if config.kind == 'process' and config.accelerator == 'gpu':
    os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')


def make(config: ml_collections.ConfigDict, workdir: str, compilation_cache: str = ''):
  """The executor that `config` (the experiment's `executor` block, checked) names."""
  return EXECUTORS[config.kind](config, workdir, compilation_cache)
