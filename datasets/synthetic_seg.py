"""Procedural segmentation: bright textured blobs on a shaded, noisy background, and their masks.

Each image holds 1..max_shapes shapes (discs, ellipses and lobed blobs) at
random positions, sizes and rotations, as lesions on tissue: the background is
a smooth random shading with fine grain, the shapes are brighter and striped.
`difficulty` (0..1) lowers the contrast, raises the noise and adds dark spots
that are not foreground. Needs no files; seeded by `seed`.
"""
from __future__ import annotations

import numpy as np

from datasets.records import DataError, Source, Split, make_seg_split

CLASS_NAMES = ('background', 'shape')
_SHADING_WAVES = 3  # smooth background variations, each at most 2 cycles per image


def generate(num: int, image_size: int, difficulty: float, rng: np.random.Generator,
             max_shapes: int = 3) -> tuple[np.ndarray, np.ndarray]:
  """Images uint8 (num, image_size, image_size) and masks uint8 of 0 and 1, same shape."""
  size = float(image_size)
  shape = (num, 1, 1)
  y, x = np.mgrid[:image_size, :image_size] + 0.5

  images = np.broadcast_to(rng.uniform(0.15, 0.35, shape), (num, image_size, image_size))
  for _ in range(_SHADING_WAVES):
    fy, fx = rng.uniform(-2, 2, (2,) + shape) * (2 * np.pi / size)
    images = images + 0.04 * np.sin(fy * y + fx * x + rng.uniform(0, 2 * np.pi, shape))

  masks = np.zeros((num, image_size, image_size), bool)
  count = rng.integers(1, max_shapes + 1, shape)
  for k in range(max_shapes):
    cy, cx = rng.uniform(0.2, 0.8, (2,) + shape) * size
    ry, rx = rng.uniform(0.08, 0.2, (2,) + shape) * size
    angle = rng.uniform(0, np.pi, shape)
    dy, dx = y - cy, x - cx
    u = (np.cos(angle) * dx + np.sin(angle) * dy) / rx
    v = (-np.sin(angle) * dx + np.cos(angle) * dy) / ry
    # Lobes: the radius wobbles with the angle; amplitude 0 leaves an ellipse.
    wobble = rng.uniform(0, 0.25, shape) * (rng.uniform(size=shape) < 0.6)
    lobes = rng.integers(2, 6, shape)
    radius = 1.0 + wobble * np.sin(lobes * np.arctan2(v, u) + rng.uniform(0, 2 * np.pi, shape))
    masks |= (k < count) & (np.hypot(u, v) < radius)

  contrast = rng.uniform(0.3, 0.5, shape) * (1.0 - 0.6 * difficulty)
  period = rng.uniform(3, 6, shape)
  stripes = 0.05 * np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period)
  images = np.where(masks, images + contrast + stripes, images)
  for _ in range(int(round(4 * difficulty))):
    by, bx = rng.uniform(0, size, (2,) + shape)
    spot = (y - by) ** 2 + (x - bx) ** 2 < (rng.uniform(0.02, 0.05, shape) * size) ** 2
    images = np.where(spot & ~masks, images - 0.1, images)
  images = images + rng.normal(0, 0.02 + 0.15 * difficulty, images.shape)
  return np.rint(np.clip(images, 0, 1) * 255).astype(np.uint8), masks.astype(np.uint8)


def load_source(name: str, *, data_dir: str | None, image_size: int, channels: int, seed: int,
                cache_dir: str | None, num_train: int = 512, num_test: int = 128,
                difficulty: float = 0.3, max_shapes: int = 3) -> Source:
  """Options: num_train, num_test, difficulty (0..1), max_shapes (1..8). Seeded by `seed`."""
  del name, data_dir, cache_dir
  if not 0.0 <= difficulty <= 1.0:
    raise DataError(f'synthetic_seg difficulty must be in [0, 1], got {difficulty}')
  if not 1 <= max_shapes <= 8:
    raise DataError(f'synthetic_seg max_shapes must be in 1..8, got {max_shapes}')

  def split(which: int, num: int, prefix: str) -> Split:
    images, masks = generate(num, image_size, difficulty, np.random.default_rng([seed, which]),
                             max_shapes)
    if channels == 3:
      images = np.repeat(images[..., None], 3, axis=-1)
    return make_seg_split(images, masks, tuple(f'{prefix}/{i}' for i in range(num)))

  return Source(train=split(0, num_train, 'train'), val=None, test=split(1, num_test, 'test'),
                class_names=CLASS_NAMES, source='procedural')
