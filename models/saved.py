"""Trained networks on disk: genotype JSON, orbax checkpoint and preprocessing, in one folder.

  model = models.load('runs/pso_brain_mri-.../best')
  probs = model.predict(images)  # uint8 (N, H, W, C) at model.image_size
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from models import network
from models.genotype import Genotype

_GENOTYPE = 'genotype.json'
_PREPROCESSING = 'preprocessing.json'
_CHECKPOINT = 'checkpoint'
# What a trained network is; init's other collections (e.g. perturbations) are not saved.
_SAVED_COLLECTIONS = ('params', 'batch_stats')


@dataclasses.dataclass(frozen=True)
class SavedModel:
  """A trained classifier and what its inputs must look like."""
  genotype: Genotype
  variables: Any
  class_names: tuple[str, ...]
  image_size: int
  channels: int
  info: dict[str, Any]

  @property
  def module(self):
    return network.build(self.genotype, len(self.class_names))

  def logits(self, images: np.ndarray) -> jax.Array:
    """uint8 images (N, image_size, image_size, channels) -> float32 logits (N, classes)."""
    return _apply(self.module, self.variables, jnp.asarray(images))

  def predict(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Class probabilities, (N, classes), computed `batch_size` images at a time.

    Every batch is padded to `batch_size`, so any number of images compiles once.
    """
    out = []
    for start in range(0, len(images), batch_size):
      batch = images[start:start + batch_size]
      padding = np.zeros((batch_size - len(batch),) + batch.shape[1:], batch.dtype)
      logits = self.logits(np.concatenate([batch, padding]))[:len(batch)]
      out.append(np.asarray(jax.nn.softmax(logits)))
    return np.concatenate(out) if out else np.zeros((0, len(self.class_names)), np.float32)


@functools.partial(jax.jit, static_argnums=0)
def _apply(module, variables, images):
  return module.apply(variables, network.preprocess(images), train=False)


def save(directory: str, genotype: Genotype, variables: Any, class_names: tuple[str, ...],
         image_size: int, channels: int, **info) -> str:
  """Writes a loadable model to `directory` (which must not exist yet)."""
  directory = os.path.abspath(directory)
  checkpointer = ocp.StandardCheckpointer()
  variables = {k: v for k, v in variables.items() if k in _SAVED_COLLECTIONS}
  checkpointer.save(os.path.join(directory, _CHECKPOINT), jax.device_get(variables))
  checkpointer.wait_until_finished()
  with open(os.path.join(directory, _GENOTYPE), 'w') as f:
    f.write(genotype.to_json())
  with open(os.path.join(directory, _PREPROCESSING), 'w') as f:
    json.dump({'class_names': list(class_names), 'image_size': image_size,
               'channels': channels, **info}, f, indent=2, sort_keys=True)
  return directory


def load(directory: str) -> SavedModel:
  """The model saved in `directory` by `save`."""
  directory = os.path.abspath(directory)
  with open(os.path.join(directory, _GENOTYPE)) as f:
    genotype = Genotype.from_json(f.read())
  with open(os.path.join(directory, _PREPROCESSING)) as f:
    info = json.load(f)
  class_names = tuple(info.pop('class_names'))
  image_size, channels = info.pop('image_size'), info.pop('channels')
  module = network.build(genotype, len(class_names))
  shape = jnp.zeros((1, image_size, image_size, channels))
  target = jax.eval_shape(lambda: module.init(jax.random.key(0), shape, train=False))
  target = {k: v for k, v in target.items() if k in _SAVED_COLLECTIONS}
  variables = ocp.StandardCheckpointer().restore(os.path.join(directory, _CHECKPOINT), target)
  return SavedModel(genotype, variables, class_names, image_size, channels, info)
