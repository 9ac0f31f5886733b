"""Host-side batch iterators over in-memory splits.

Plain numpy: a split fits in memory as uint8, so a batch is one fancy-index
gather. On 2 CPU cores this gave about 1.3-2.3M images/s at 64x64, some 50 times
a grain MapDataset (shuffle, batch) over the same arrays. Augmentation runs on
the device, inside the jitted step (datasets.augment).
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from datasets.records import Split


def train_batches(split: Split, batch_size: int, seed: int, epoch: int
                  ) -> Iterator[dict[str, np.ndarray]]:
  """One epoch in a seeded random order, dropping the last partial batch.

  The same (seed, epoch) gives the same order on every run and host.
  Yields {'image': uint8 (B, H, W, C), 'label': int32 (B,)}.
  """
  if not 0 < batch_size <= len(split):
    raise ValueError(f'batch_size must be in [1, {len(split)}] (the split size), '
                     f'got {batch_size}')
  order = np.random.default_rng([seed, epoch]).permutation(len(split))
  for start in range(0, len(order) - batch_size + 1, batch_size):
    idx = order[start:start + batch_size]
    yield {'image': split.images[idx], 'label': split.labels[idx]}


def eval_batches(split: Split, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  """The split in order; the last batch is padded to full size so shapes are static.

  Yields {'image', 'label', 'mask'}; mask is False on padding rows, whose image
  and label are zeros.
  """
  if batch_size < 1:
    raise ValueError(f'batch_size must be positive, got {batch_size}')
  for start in range(0, len(split), batch_size):
    images = split.images[start:start + batch_size]
    labels = split.labels[start:start + batch_size]
    pad = batch_size - len(labels)
    mask = np.arange(batch_size) < len(labels)
    if pad:
      images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
      labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
    yield {'image': images, 'label': labels, 'mask': mask}
