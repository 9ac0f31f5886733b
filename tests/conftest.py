"""Fixtures shared by test modules."""
import dataclasses
import os
import pathlib

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
def small_search(tmp_path_factory) -> SearchRun:
  env = dict(os.environ, MEDNAS_CACHE_DIR=str(tmp_path_factory.mktemp('cache')))
  workdir = tmp_path_factory.mktemp('small_search') / 'run'
  kill_resume.run_search(str(workdir), env, SMALL_SEARCH)
  return SearchRun(workdir, env, SMALL_SEARCH)
