"""The fixed networks and batch that the step benchmarks time (train_step, compile_time)."""
from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from models import zoo
from models.genotype import Genotype, Stage, TrainGenes
from nas import train

BATCH = 64
CHANNELS = 3
CLASSES = 4


def _plain(cell: str, dilation: int = 1, attention: str = 'none') -> Genotype:
  """A 9-convolution CNN (stem, then 4 stages of 2 cells), as in ANCHORS.md's CPU table."""
  return Genotype((Stage(2, cell, 3, 32, dilation, attention, 'none'),
                   Stage(2, cell, 3, 64, dilation, attention, 'max'),
                   Stage(2, cell, 3, 128, dilation, attention, 'max'),
                   Stage(2, cell, 3, 256, dilation, attention, 'max')), stem_width=32)


NETWORKS = {
    'plain': lambda: _plain('conv'),
    'sep': lambda: _plain('sep'),
    'dilated': lambda: _plain('conv', dilation=2),
    'se': lambda: _plain('conv', attention='se'),
    'shrinkage': lambda: _plain('shrinkage'),
    'resnet18': lambda: zoo.resnet18(width_multiplier=0.5),
    'mobilenetv2': lambda: zoo.mobilenetv2(width_multiplier=0.5),
}


def random_batch(size: int) -> dict[str, np.ndarray]:
  """BATCH seeded random images of size x size x CHANNELS, and their labels."""
  rng = np.random.default_rng(0)
  return {'image': rng.integers(0, 256, (BATCH, size, size, CHANNELS), dtype=np.uint8),
          'label': rng.integers(0, CLASSES, BATCH).astype(np.int32)}


def step_hparams() -> dict[str, jax.Array]:
  """The training step's hyperparameters: the default genes, learning rate 1e-3."""
  return {**train.step_hparams(TrainGenes(), np.ones(CLASSES)),
          'learning_rate': jnp.float32(1e-3)}


def median_step_seconds(compiled: train.Steps, state: Any, batch: dict[str, np.ndarray],
                        hparams: dict[str, jax.Array], steps: int) -> tuple[Any, float]:
  """The state after `steps` more training steps, and their median seconds (compiled before)."""
  times = []
  for i in range(steps):
    start = time.perf_counter()
    state, loss = compiled.train(state, batch, jax.random.key(i + 1), hparams)
    jax.block_until_ready(loss)
    times.append(time.perf_counter() - start)
  return state, float(np.median(times))
