"""Procedural shapes and textures: a dataset for tests and smoke runs that needs no files.

Each class is a shape drawn at a random position, size and rotation on a random
background, with Gaussian noise; `difficulty` (0..1) lowers the contrast and
raises the noise and the clutter (small distracting blobs).
"""
from __future__ import annotations

import numpy as np

from datasets.records import DataError, Source, Split, make_split

CLASS_NAMES = ('disc', 'square', 'cross', 'stripes', 'ring', 'triangle', 'checker', 'frame')


def _shape_mask(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Inside-mask of a shape in its own frame, where the shape spans about [-1, 1]^2."""
  r = np.hypot(u, v)
  box = np.maximum(np.abs(u), np.abs(v))
  if name == 'disc':
    return r < 1.0
  if name == 'square':
    return box < 0.8
  if name == 'cross':
    return ((np.abs(u) < 0.3) | (np.abs(v) < 0.3)) & (box < 1.0)
  if name == 'stripes':
    return (np.sin(u * 2.0 * np.pi) > 0) & (box < 1.0)
  if name == 'ring':
    return (r > 0.6) & (r < 1.0)
  if name == 'triangle':
    return (v > -0.7) & (v < 0.9 - 1.6 * np.abs(u))
  if name == 'checker':
    return ((np.floor(u * 1.5) + np.floor(v * 1.5)) % 2 == 0) & (box < 1.0)
  if name == 'frame':
    return (box < 0.9) & (box > 0.55)
  raise ValueError(name)


def generate(num: int, num_classes: int, image_size: int, difficulty: float,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Balanced, shuffled images uint8 (num, image_size, image_size) and labels."""
  labels = rng.permutation(np.arange(num) % num_classes).astype(np.int32)
  size = float(image_size)
  shape = (num, 1, 1)
  cy, cx = rng.uniform(0.38, 0.62, (2,) + shape) * size
  radius = rng.uniform(0.25, 0.38, shape) * size
  angle = rng.uniform(0, 2 * np.pi, shape)
  background = rng.uniform(0.0, 0.3, shape)
  # Bright structures on a darker background, as lesions and organs on scans.
  foreground = background + rng.uniform(0.4, 0.7, shape) * (1.0 - 0.6 * difficulty)

  y, x = np.mgrid[:image_size, :image_size] + 0.5
  dy, dx = (y - cy) / radius, (x - cx) / radius
  u = np.cos(angle) * dx + np.sin(angle) * dy
  v = -np.sin(angle) * dx + np.cos(angle) * dy
  images = np.broadcast_to(background, (num, image_size, image_size)).copy()
  for label in range(num_classes):
    idx = np.flatnonzero(labels == label)
    mask = _shape_mask(CLASS_NAMES[label], u[idx], v[idx])
    images[idx] = np.where(mask, foreground[idx], images[idx])

  # Clutter: blobs small enough not to be mistaken for a shape.
  for _ in range(int(round(4 * difficulty))):
    by, bx = rng.uniform(0, size, (2,) + shape)
    br = rng.uniform(0.03, 0.08, shape) * size
    blob = (y - by) ** 2 + (x - bx) ** 2 < br ** 2
    images = np.where(blob, rng.uniform(0, 1, shape), images)
  images += rng.normal(0, 0.03 + 0.2 * difficulty, images.shape)
  return np.rint(np.clip(images, 0, 1) * 255).astype(np.uint8), labels


def load_source(name: str, *, data_dir: str | None, image_size: int, channels: int, seed: int,
                cache_dir: str | None, num_classes: int = 4, num_train: int = 512,
                num_test: int = 128, difficulty: float = 0.3) -> Source:
  """Options: num_classes (2..8), num_train, num_test, difficulty (0..1). Seeded by `seed`."""
  del name, data_dir, cache_dir
  if not 2 <= num_classes <= len(CLASS_NAMES):
    raise DataError(f'synthetic num_classes must be in 2..{len(CLASS_NAMES)}, '
                    f'got {num_classes}')
  if not 0.0 <= difficulty <= 1.0:
    raise DataError(f'synthetic difficulty must be in [0, 1], got {difficulty}')

  def split(which: int, num: int, prefix: str) -> Split:
    images, labels = generate(num, num_classes, image_size, difficulty,
                              np.random.default_rng([seed, which]))
    if channels == 3:
      images = np.repeat(images[..., None], 3, axis=-1)
    return make_split(images, labels, tuple(f'{prefix}/{i}' for i in range(num)))

  return Source(train=split(0, num_train, 'train'), val=None, test=split(1, num_test, 'test'),
                class_names=CLASS_NAMES[:num_classes], source='procedural')
