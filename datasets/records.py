"""Records that cross module boundaries: splits of decoded images and the data error."""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


class DataError(Exception):
  """Bad user data; str(e) is one line that says what is wrong and how to fix it."""


@dataclasses.dataclass(frozen=True)
class Split:
  """Decoded images of one split, in a stable order."""
  images: np.ndarray  # uint8, (N, H, W, C), C in {1, 3}
  labels: np.ndarray  # int32, (N,)
  ids: tuple[str, ...]  # relative file path, or '<split>/<index>' for arrays

  def __len__(self) -> int:
    return len(self.ids)

  def take(self, indices: np.ndarray) -> Split:
    """The sub-split at `indices`, in that order."""
    indices = np.asarray(indices, dtype=np.int64)
    return Split(self.images[indices], self.labels[indices],
                 tuple(self.ids[i] for i in indices))

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
    return len(self.class_names)

  def items(self) -> tuple[tuple[str, Split], ...]:
    return (('train', self.train), ('val', self.val), ('test', self.test))


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


def make_split(images: np.ndarray, labels: np.ndarray, ids: tuple[str, ...]) -> Split:
  """A Split with canonical dtypes and a channel axis."""
  images = np.asarray(images, dtype=np.uint8)
  if images.ndim == 3:
    images = images[..., None]
  return Split(images, np.asarray(labels, dtype=np.int32).reshape(-1), tuple(ids))
