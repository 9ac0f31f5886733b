r"""Input pipeline throughput: load time, batch iterators, on-device augmentation.

  python -m benchmarks.input_pipeline [--data_dir=DIR] [--out_dir=benchmarks/out]

Uses brain_tumor_mri at 64x64 grey, or synthetic data of similar size when the
dataset is absent. Writes input_pipeline.json and input_pipeline.md to --out_dir.
"""
from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp

from benchmarks import results as bench_results
import datasets
from datasets import augment
from datasets import pipeline

_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Default MEDNAS_DATA_DIR or ./data.')
_OUT_DIR = flags.DEFINE_string('out_dir', 'benchmarks/out', 'Where results are written.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 64, 'Image side in pixels.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 128, 'Batch size.')
_EPOCHS = flags.DEFINE_integer('epochs', 3, 'Epochs timed per measurement.')
_STRENGTH = flags.DEFINE_float('strength', 0.5, 'Augmentation strength.')


def _timed(fn: Callable[[], object]) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def _load(cache_dir: str) -> datasets.Splits:
  try:
    return datasets.load('brain_tumor_mri', data_dir=_DATA_DIR.value,
                         image_size=_IMAGE_SIZE.value, cache_dir=cache_dir)
  except datasets.DataError as e:
    logging.warning('brain_tumor_mri unavailable (%s); using synthetic data', e)
    return datasets.load('synthetic', image_size=_IMAGE_SIZE.value, num_train=5708,
                         num_test=1311, cache_dir=cache_dir)


def main(argv: list[str]) -> None:
  del argv
  bs = _BATCH_SIZE.value
  results: dict[str, object] = {}
  with tempfile.TemporaryDirectory() as cache_dir:  # a cold cache, then a warm one
    results['first_load_s'] = _timed(lambda: _load(cache_dir))
    results['second_load_s'] = _timed(lambda: _load(cache_dir))
    splits = _load(cache_dir)
  train = splits.train
  per_epoch = len(train) // bs * bs
  results.update(dataset=splits.name, train_images=len(train),
                 image_shape=list(train.images.shape[1:]), batch_size=bs,
                 backend=jax.default_backend(), cpu=platform.processor() or platform.machine(),
                 cpu_count=os.cpu_count())

  def host_epochs():
    for epoch in range(_EPOCHS.value):
      for _ in pipeline.train_batches(train, bs, seed=0, epoch=epoch):
        pass

  def eval_epochs():
    for _ in range(_EPOCHS.value):
      for _ in pipeline.eval_batches(train, bs):
        pass

  @jax.jit
  def step(key, images):
    x = images.astype(jnp.float32) / 255.0
    return augment.augment(key, x, _STRENGTH.value).mean()

  def augmented_epochs():
    key = jax.random.key(0)
    for epoch in range(_EPOCHS.value):
      for i, batch in enumerate(pipeline.train_batches(train, bs, seed=0, epoch=epoch)):
        step(jax.random.fold_in(key, epoch * 10_000 + i), batch['image']).block_until_ready()

  resident = jnp.asarray(train.images[:bs])
  step(jax.random.key(0), resident).block_until_ready()  # compile outside the timing
  n = _EPOCHS.value * per_epoch
  results['train_batches_images_per_s'] = n / _timed(host_epochs)
  results['eval_batches_images_per_s'] = _EPOCHS.value * len(train) / _timed(eval_epochs)
  results['train_batches_plus_augment_images_per_s'] = n / _timed(augmented_epochs)
  reps = max(1, n // bs)
  results['augment_only_images_per_s'] = reps * bs / _timed(
      lambda: [step(jax.random.key(i), resident).block_until_ready() for i in range(reps)])

  rows = [f'| {k} | {v:,.2f} |' if isinstance(v, float) else f'| {k} | {v} |'
          for k, v in results.items()]
  bench_results.write(_OUT_DIR.value, 'input_pipeline', results,
                      '\n'.join(['| measure | value |', '|---|---|', *rows]))


if __name__ == '__main__':
  app.run(main)
