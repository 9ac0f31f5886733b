"""The setup of a dask worker, as a plugin: it also runs in a worker that joins or restarts
later (a nanny restarts a worker that crashed or outgrew its memory limit)."""
from __future__ import annotations

from distributed.diagnostics import plugin

from nas import executors


class PrepareWorker(plugin.WorkerPlugin):
  """Runs `executors.prepare_worker` in every worker before its first task."""

  name = 'mednas-prepare-worker'

  def __init__(self, cpu_only: bool, compilation_cache: str):
    self.cpu_only = cpu_only
    self.compilation_cache = compilation_cache

  def setup(self, worker) -> None:
    del worker
    executors.prepare_worker(self.cpu_only, self.compilation_cache)
