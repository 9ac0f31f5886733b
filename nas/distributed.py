"""Several hosts training one candidate together, with `jax.distributed`.

Every host runs the same `launch.py` command (SPMD, as big_vision does): the search is
deterministic, so every process asks the same candidates in the same order, and each trains
with the devices of all hosts in one mesh, reading its own rows of every global batch.
Process 0 owns the workdir (store, checkpoints, report); the others keep their own replay
store under `<workdir>/hosts/<index>`, replaced by a copy of process 0's on `--resume`
(launch.py), so that every process replays the same trials.

On SLURM (one task per host) and Cloud TPU, `jax.distributed.initialize()` finds the
coordinator itself; elsewhere `distributed.coordinator_address`, `num_processes` and
`process_id` say where it is and who is who.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
import numpy as np


def initialize(config: ml_collections.ConfigDict) -> None:
  """Connects this process to the others when `config.enabled`; must run before JAX does."""
  if not config.enabled:
    return
  # CPU hosts exchange gradients through gloo; accelerators use their own collectives.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  given = {'coordinator_address': config.coordinator_address or None,
           'num_processes': config.num_processes or None,
           'process_id': None if config.process_id < 0 else config.process_id}
  jax.distributed.initialize(**{k: v for k, v in given.items() if v is not None})


def is_main() -> bool:
  return jax.process_index() == 0


def host_workdir(workdir: str) -> str:
  """Where this process keeps its files: the workdir itself on process 0."""
  if is_main():
    return workdir
  return os.path.join(workdir, 'hosts', str(jax.process_index()))


def global_batch(batch: Any, sharding: jax.sharding.Sharding) -> Any:
  """`batch` (an array or a dict of arrays) as global arrays over every host's devices.

  Every process iterates over the same global batches (same seed, same order), so each
  takes the contiguous block of rows that its devices hold.
  """
  def place(value: np.ndarray) -> jax.Array:
    per_process = len(value) // jax.process_count()
    start = jax.process_index() * per_process
    return jax.make_array_from_process_local_data(
        sharding, value[start:start + per_process], value.shape)
  return jax.tree.map(place, batch)
