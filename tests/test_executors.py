"""Every executor runs the same synchronous search as the local one: same trials, same order."""
import os

import pytest

from benchmarks import kill_resume
import experiments
from nas import errors
from nas import executors


def _trials(workdir):
  return kill_resume.outcome(str(workdir))['trials']


# local without compiling ahead: the shared search compiles the next candidates in a thread.
# Executors run the search only, so these runs skip the final stage (top_k=0).
@pytest.mark.parametrize('kind', ['local', 'process', 'dask', 'slurm'])
def test_executor_gives_the_same_trials_as_local(tmp_path, small_search, kind):
  kill_resume.run_search(
      str(tmp_path / 'run'), small_search.env,
      small_search.args + (f'--config.executor.kind={kind}', '--config.executor.workers=2',
                           '--config.executor.slurm.cluster=local',
                           '--config.executor.compile_ahead=0', '--config.final.top_k=0'))
  local, trials = _trials(small_search.workdir), _trials(tmp_path / 'run')
  assert [t[:4] for t in trials] == [t[:4] for t in local]
  assert [t[4] for t in trials] == pytest.approx([t[4] for t in local], abs=1e-6)
  if kind == 'slurm':
    assert (tmp_path / 'run' / 'slurm').is_dir()  # submitit's job folders


@pytest.mark.parametrize('slot, visible, device', [
    (0, '', '0'), (3, '', '3'), (0, '4,5,6,7', '4'), (2, '4, 5,6', '6'),
    (1, 'GPU-ab,GPU-cd', 'GPU-cd'),
])
def test_a_gpu_worker_takes_its_slot_of_the_jobs_own_devices(slot, visible, device):
  assert executors.device_for_slot(slot, visible) == device


def test_more_gpu_workers_than_the_job_has_is_one_clear_error():
  with pytest.raises(errors.UserError, match='CUDA_VISIBLE_DEVICES=4,5 holds 2'):
    executors.device_for_slot(2, '4,5')


def _jax_platforms():
  import jax  # pylint: disable=g-import-not-at-top
  return jax.config.jax_platforms, os.environ.get('JAX_PLATFORMS'), jax.default_backend()


# On this CPU host JAX would pick the CPU anyway, so the option itself is what is checked.
def test_cpu_workers_keep_off_the_hosts_gpus(monkeypatch):
  monkeypatch.delenv('JAX_PLATFORMS', raising=False)  # or workers would inherit it
  process = executors.ProcessExecutor(1, 'cpu', '')
  dask = executors.DaskExecutor(1, '', 'cpu', '')
  try:
    assert process.submit(_jax_platforms).result() == ('cpu', 'cpu', 'cpu')
    assert dask.submit(_jax_platforms).result() == ('cpu', 'cpu', 'cpu')
    dask._client.restart()  # pylint: disable=protected-access
    assert dask.submit(_jax_platforms).result() == ('cpu', 'cpu', 'cpu')  # a nanny's restart
  finally:
    process.shutdown()
    dask.shutdown()


def _plugins(dask_worker):
  return sorted(dask_worker.plugins)


def test_an_existing_dask_cluster_is_left_as_it_was(monkeypatch):
  from distributed import Client, LocalCluster  # pylint: disable=g-import-not-at-top
  monkeypatch.delenv('JAX_PLATFORMS', raising=False)
  with LocalCluster(n_workers=1, processes=True, dashboard_address=None) as cluster, \
      Client(cluster) as client:
    before = list(client.run(_plugins).values())
    executor = executors.DaskExecutor(1, cluster.scheduler_address, 'cpu', '')
    try:
      # Its workers are the user's to place on devices, whatever executor.accelerator says.
      assert executor.submit(_jax_platforms).result()[:2] == (None, None)
    finally:
      executor.shutdown()
    assert list(client.run(_plugins).values()) == before


def _executor(**fields):
  config = experiments.get_config('pso_synthetic', 'smoke').executor
  config.update(fields)
  return config


@pytest.mark.parametrize('fields, message', [
    (dict(kind='pool'), "unknown executor.kind 'pool'"),
    (dict(kind='process', accelerator='cuda'), "unknown executor.accelerator 'cuda'"),
    (dict(kind='process', accelerator='tpu'), 'cannot share a TPU host'),
    (dict(kind='dask', accelerator='gpu'), "a dask LocalCluster's workers would each take"),
])
def test_an_executor_that_cannot_work_is_one_clear_error(fields, message):
  with pytest.raises(errors.UserError, match=message):
    executors.check_config(_executor(**fields))


@pytest.mark.parametrize('fields', [
    dict(kind='process', accelerator='gpu'), dict(kind='dask', accelerator='gpu',
                                                  address='tcp://scheduler:8786'),
    dict(kind='slurm'), dict(kind='local')])
def test_executors_that_can_work_pass_the_check(fields):
  executors.check_config(_executor(**fields))


@pytest.mark.parametrize('fields, user_value, expected', [
    (dict(kind='process', accelerator='gpu'), None, 'false'),
    (dict(kind='process', accelerator='gpu'), 'true', 'true'),  # the user's choice stays
    (dict(kind='process', accelerator='cpu'), None, None),
    (dict(kind='local'), None, None),
])
def test_gpu_workers_leave_the_search_process_no_preallocated_memory(monkeypatch, fields,
                                                                      user_value, expected):
  # setenv first, so that the variable is restored (or removed) after the test
  monkeypatch.setenv('XLA_PYTHON_CLIENT_PREALLOCATE', user_value or '')
  if not user_value:
    monkeypatch.delenv('XLA_PYTHON_CLIENT_PREALLOCATE')
  executors.prepare_this_process(_executor(**fields))
  assert os.environ.get('XLA_PYTHON_CLIENT_PREALLOCATE') == expected
