"""Fixtures shared by test modules."""
import dataclasses
import os
import pathlib

import filelock
import numpy as np
import pytest

from benchmarks import kill_resume

# A small synthetic search: a few candidates, two final seeds and their ensemble. Tests that
# compare searches run it with other executors or kill it, and compare with this one. Half
# the smoke preset's images: two hosts pay a gloo all-reduce of every gradient each step.
SMALL_SEARCH = ('--experiment=pso_synthetic', '--preset=smoke', '--config.search.budget=4',
                '--config.final.seeds=2', '--config.data.options.num_train=512')


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


@pytest.fixture
def write_medmnist():
  """Writes a MedMNIST v2-style `.npz` of random images, every class in each split's first rows."""
  def write(path, n=(30, 6, 10), shape=(28, 28), num_classes=3, label_cols=1):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in zip(('train', 'val', 'test'), n):
      arrays[f'{split}_images'] = rng.integers(0, 256, (count,) + shape, dtype=np.uint8)
      arrays[f'{split}_labels'] = rng.integers(0, num_classes, (count, label_cols),
                                               dtype=np.uint8)
      arrays[f'{split}_labels'][:num_classes, 0] = np.arange(num_classes)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez(path, **arrays)
    return arrays
  return write


@pytest.fixture
def save_tiny_model():
  """Saves an untrained one-stage classifier of 16x16 grey images; returns its folder."""
  # Imported on use: every test process loads this file, and few of its tests need JAX.
  import jax  # pylint: disable=g-import-not-at-top
  import models  # pylint: disable=g-import-not-at-top
  from models.genotype import Genotype, Stage  # pylint: disable=g-import-not-at-top

  def save(path, class_names):
    genotype = Genotype((Stage(1, 'conv', 3, 8, 1, 'none', 'max'),), stem_width=8)
    module = models.build(genotype, len(class_names))
    variables = module.init(jax.random.key(0), np.zeros((1, 16, 16, 1), np.float32),
                            train=False)
    return models.save(path, genotype, variables, class_names, 16, 1, dataset='synthetic')
  return save
