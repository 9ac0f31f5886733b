"""Records that cross module boundaries: splits of decoded images and the data error.

A split is a classification split, or a segmentation split when it carries
`masks`: one binary mask per image (1 = foreground), aligned pixel for pixel.
Segmentation splits keep `labels` as 'has foreground' (0 or 1) per image, so that
class counts and the leakage audit work unchanged, and their datasets name the
mask values in `class_names`, e.g. ('background', 'polyp').
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import numpy as np

CLASSIFICATION = 'classification'
SEGMENTATION = 'segmentation'


class DataError(Exception):
  """Bad user data; str(e) is one line that says what is wrong and how to fix it."""


@dataclasses.dataclass(frozen=True)
class Split:
  """Decoded images of one split, in a stable order."""
  images: np.ndarray  # uint8, (N, H, W, C), C in {1, 3}
  labels: np.ndarray  # int32, (N,)
  ids: tuple[str, ...]  # relative file path, or '<split>/<index>' for arrays
  masks: np.ndarray | None = None  # segmentation only: uint8, (N, H, W, 1), values 0 or 1

  def __len__(self) -> int:
    return len(self.ids)

  @property
  def task(self) -> str:
    """CLASSIFICATION, or SEGMENTATION when the split carries masks."""
    return CLASSIFICATION if self.masks is None else SEGMENTATION

  def take(self, indices: np.ndarray) -> Split:
    """The sub-split at `indices`, in that order."""
    indices = np.asarray(indices, dtype=np.int64)
    return Split(self.images[indices], self.labels[indices],
                 tuple(self.ids[i] for i in indices),
                 None if self.masks is None else self.masks[indices])

  def class_counts(self, num_classes: int) -> np.ndarray:
    return np.bincount(self.labels, minlength=num_classes)


@dataclasses.dataclass(frozen=True)
class Splits:
  """A dataset ready for search: train and val for fitness, test for the final report."""
  name: str
  train: Split
  val: Split
  test: Split
  class_names: tuple[str, ...]
  info: dict[str, Any]

  @property
  def num_classes(self) -> int:
    """Image classes, or for segmentation the mask values (2: background, foreground)."""
    return len(self.class_names)

  @property
  def task(self) -> str:
    """CLASSIFICATION or SEGMENTATION; also stored as info['task']."""
    return self.train.task

  def items(self) -> tuple[tuple[str, Split], ...]:
    return (('train', self.train), ('val', self.val), ('test', self.test))

  def fingerprint(self) -> dict[str, Any]:
    """The splits' sizes, and a hash of their pixels, labels and masks as decoded."""
    digest = hashlib.sha256()
    for name, split in self.items():
      digest.update(name.encode())
      for array in (split.images, split.labels, split.masks):
        if array is not None:
          digest.update(np.ascontiguousarray(array).data)
    return {'sizes': {name: len(split) for name, split in self.items()},
            'sha256': digest.hexdigest()}


@dataclasses.dataclass(frozen=True)
class Source:
  """What a dataset module delivers before the shared split logic runs.

  `val` is None when the dataset has no official validation split; `load` then
  carves one from `train`. `corrupt` lists ids of images that failed to decode
  (the `on_corrupt` policy is applied by `load`, so caches never depend on it).
  """
  train: Split
  val: Split | None
  test: Split
  class_names: tuple[str, ...]
  source: str
  corrupt: tuple[tuple[str, str], ...] = ()  # (id, reason)


def make_split(images: np.ndarray, labels: np.ndarray, ids: tuple[str, ...],
               masks: np.ndarray | None = None) -> Split:
  """A Split with canonical dtypes and a channel axis (on the masks too)."""
  images = np.asarray(images, dtype=np.uint8)
  if images.ndim == 3:
    images = images[..., None]
  if masks is not None:
    masks = np.asarray(masks, dtype=np.uint8).reshape(images.shape[:3] + (1,))
  return Split(images, np.asarray(labels, dtype=np.int32).reshape(-1), tuple(ids), masks)


def make_seg_split(images: np.ndarray, masks: np.ndarray, ids: tuple[str, ...]) -> Split:
  """A segmentation Split whose labels say whether each mask has foreground."""
  masks = np.asarray(masks, dtype=np.uint8)
  labels = masks.reshape(len(masks), -1).any(axis=1)
  return make_split(images, labels, ids, masks)
