"""Fixtures shared by test modules."""
import dataclasses
import os
import pathlib

import filelock
import pytest

from benchmarks import kill_resume

# A small synthetic search: a few candidates, one final seed. Tests that compare searches
# run it with other executors or kill it, and compare with this one.
SMALL_SEARCH = ('--experiment=pso_synthetic', '--preset=smoke', '--config.search.budget=4',
                '--config.final.seeds=1')


@dataclasses.dataclass(frozen=True)
class SearchRun:
  workdir: pathlib.Path
  env: dict  # with the MEDNAS_CACHE_DIR that later runs share, compiled steps included
  args: tuple[str, ...]


@pytest.fixture(scope='session')
def small_search(tmp_path_factory, worker_id) -> SearchRun:
  # Under pytest-xdist each worker has its own session: the first to get here runs the
  # search, the others wait on the lock and reuse it.
  base = tmp_path_factory.getbasetemp()
  shared = base if worker_id == 'master' else base.parent
  run = SearchRun(shared / 'small_search' / 'run',
                  dict(os.environ, MEDNAS_CACHE_DIR=str(shared / 'small_search_cache')),
                  SMALL_SEARCH)
  with filelock.FileLock(str(shared / 'small_search.lock')):
    if not (run.workdir.parent / 'done').exists():
      kill_resume.run_search(str(run.workdir), run.env, SMALL_SEARCH)
      (run.workdir.parent / 'done').touch()
  return run
