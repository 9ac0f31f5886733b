"""Every executor runs the same synchronous search as the local one: same trials, same order."""
import os
import sqlite3
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = ('--experiment=pso_synthetic', '--preset=smoke', '--config.search.budget=4',
         '--config.final.seeds=1')


def _search(workdir, cache, *overrides):
  env = dict(os.environ, MEDNAS_CACHE_DIR=str(cache))
  result = subprocess.run([sys.executable, 'launch.py', *SMOKE, *overrides,
                           f'--workdir={workdir}'], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-5000:]
  with sqlite3.connect(workdir / 'trials.sqlite') as db:
    return db.execute('SELECT ask_index, fidelity, genotype_hash, status, loss FROM trials '
                      'ORDER BY ask_index, fidelity').fetchall()


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  cache = tmp_path_factory.mktemp('cache')
  return cache, _search(tmp_path_factory.mktemp('local') / 'run', cache)


@pytest.mark.parametrize('kind', ['process', 'dask', 'slurm'])
def test_executor_gives_the_same_trials_as_local(tmp_path, reference, kind):
  cache, local = reference
  trials = _search(tmp_path / 'run', cache, f'--config.executor.kind={kind}',
                   '--config.executor.workers=2', '--config.executor.slurm.cluster=local')
  assert [t[:4] for t in trials] == [t[:4] for t in local]
  assert [t[4] for t in trials] == pytest.approx([t[4] for t in local], abs=1e-6)
  if kind == 'slurm':
    assert (tmp_path / 'run' / 'slurm').is_dir()  # submitit's job folders
