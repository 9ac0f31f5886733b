"""Trained networks on disk: genotype JSON, orbax checkpoint and preprocessing, in one folder.

  model = models.load('runs/pso_brain_mri-.../best')
  probs = model.predict(images)  # uint8 (N, H, W, C) at model.image_size

A classifier predicts class probabilities (N, classes); a segmenter foreground
probabilities per pixel (N, H, W, 1).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
from typing import Any

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from models import compiler
from models import genotype as genotype_lib
from models import network
from models.genotype import AnyGenotype, Genotype, SegGenotype

_GENOTYPE = 'genotype.json'
_PREPROCESSING = 'preprocessing.json'
_CHECKPOINT = 'checkpoint'
# What a trained network is; init's other collections (e.g. perturbations) are not saved.
_SAVED_COLLECTIONS = ('params', 'batch_stats')
# Genotype kind -> logits to probabilities: softmax over classes, or binary masks' sigmoid.
_PROBABILITIES = {
    Genotype: jax.nn.softmax,
    SegGenotype: jax.nn.sigmoid,
}


@dataclasses.dataclass(frozen=True)
class SavedModel:
  """A trained network and what its inputs must look like."""
  genotype: AnyGenotype
  variables: Any
  class_names: tuple[str, ...]
  image_size: int
  channels: int
  info: dict[str, Any]

  @property
  def module(self):
    return network.build(self.genotype, len(self.class_names))

  def logits(self, images: np.ndarray) -> jax.Array:
    """uint8 images (N, image_size, image_size, channels) -> float32 logits."""
    return _jitted_apply(self.module, self.variables, jnp.asarray(images))

  def predict(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Probabilities, (N, classes) or (N, H, W, 1), computed `batch_size` images at a time.

    Every batch is padded to `batch_size`, so any number of images compiles once.
    """
    out = []
    for start in range(0, len(images), batch_size):
      batch = images[start:start + batch_size]
      padding = np.zeros((batch_size - len(batch),) + batch.shape[1:], batch.dtype)
      logits = self.logits(np.concatenate([batch, padding]))[:len(batch)]
      out.append(np.asarray(_PROBABILITIES[type(self.genotype)](logits)))
    if out:
      return np.concatenate(out)
    shape = jax.eval_shape(self.logits, np.zeros((1, self.image_size, self.image_size,
                                                  self.channels), np.uint8)).shape
    return np.zeros((0,) + shape[1:], np.float32)


def _apply(module, variables, images):
  return module.apply(variables, network.preprocess(images), train=False)


_jitted_apply = compiler.jit_on_first_call(_apply, static_argnums=0)


def save(directory: str, genotype: AnyGenotype, variables: Any, class_names: tuple[str, ...],
         image_size: int, channels: int, **info) -> str:
  """Writes a loadable model to `directory` (which must not exist yet).

  With several JAX processes every one calls it with the same `directory` (orbax saves
  collectively) and process 0 writes the files.
  """
  directory = os.path.abspath(directory)
  checkpointer = ocp.StandardCheckpointer()
  variables = {k: v for k, v in variables.items() if k in _SAVED_COLLECTIONS}
  with uninterrupted():
    checkpointer.save(os.path.join(directory, _CHECKPOINT), jax.device_get(variables))
    checkpointer.wait_until_finished()
  if jax.process_index() == 0:
    with open(os.path.join(directory, _GENOTYPE), 'w') as f:
      f.write(genotype.to_json())
    with open(os.path.join(directory, _PREPROCESSING), 'w') as f:
      json.dump({'class_names': list(class_names), 'image_size': image_size,
                 'channels': channels, **info}, f, indent=2, sort_keys=True)
  if jax.process_count() > 1:  # the files exist for every process once it returns
    multihost_utils.sync_global_devices(f'models.save {directory}')
  return directory


@contextlib.contextmanager
def uninterrupted():
  """Holds a Ctrl-C back until the block ends, then raises it; for orbax writes.

  Interrupted mid-write, orbax leaves its writer threads running into interpreter shutdown,
  and each prints tracebacks after the command's one-line message. A checkpoint here takes
  about a second, so Ctrl-C waits for it.
  """
  handler = signal.getsignal(signal.SIGINT)
  if threading.current_thread() is not threading.main_thread() or handler is None:
    yield  # only the main thread receives signals; None: a handler Python did not set
    return
  received = []
  signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, handler)
  if received:
    raise KeyboardInterrupt


def load(directory: str) -> SavedModel:
  """The model saved in `directory` by `save`."""
  directory = os.path.abspath(directory)
  with open(os.path.join(directory, _GENOTYPE)) as f:
    text = f.read()
  try:
    genotype = genotype_lib.from_json(text)
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(f'{os.path.join(directory, _GENOTYPE)} holds no genotype this version '
                     f'reads ({type(e).__name__}: {e})') from e
  with open(os.path.join(directory, _PREPROCESSING)) as f:
    info = json.load(f)
  class_names = tuple(info.pop('class_names'))
  image_size, channels = info.pop('image_size'), info.pop('channels')
  module = network.build(genotype, len(class_names))
  shape = jnp.zeros((1, image_size, image_size, channels))
  target = jax.eval_shape(lambda: module.init(jax.random.key(0), shape, train=False))
  target = {k: v for k, v in target.items() if k in _SAVED_COLLECTIONS}
  checkpoint = os.path.join(directory, _CHECKPOINT)
  if not os.path.isdir(checkpoint):
    raise OSError(f'no {_CHECKPOINT}/ folder in {directory}')
  try:
    variables = ocp.StandardCheckpointer().restore(checkpoint, target)
  except (ValueError, RuntimeError) as e:  # tensorstore's errors quote its whole spec
    if not getattr(sys.unraisablehook, 'drops_closed_loop', False):
      sys.unraisablehook = _without_closed_loop_noise(sys.unraisablehook)
    raise ValueError(f'its weights in {checkpoint} are corrupt or incomplete '
                     f'({type(e).__name__}: {str(e)[:120]}...)') from e
  return SavedModel(genotype, variables, class_names, image_size, channels, info)


def _without_closed_loop_noise(hook):
  """`hook`, silent on 'Event loop is closed'.

  After one array fails to restore, orbax closes its event loop while tensorstore is still
  reading the others; each of their callbacks then raises this error in a tensorstore thread,
  which Python prints as a traceback after the one-line error the user should read.
  """
  def quiet(unraisable):
    if not (isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == 'Event loop is closed'):
      hook(unraisable)
  quiet.drops_closed_loop = True
  return quiet
