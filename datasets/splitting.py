"""Seeded hold-out splits: stratified by class, or plain random for segmentation."""
from __future__ import annotations

import numpy as np

from datasets.records import DataError


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int,
                       class_names: tuple[str, ...], what: str = 'val'
                       ) -> tuple[np.ndarray, np.ndarray]:
  """Indices (keep, holdout), each sorted, holding out `fraction` of every class.

  Every class gives round(fraction * n) images, at least 1, and keeps at least 1.
  Each class is shuffled by its own generator, seeded by (seed, class), so the
  split of one class does not change when another class changes.
  """
  if not 0.0 < fraction < 1.0:
    raise DataError(f'{what}_fraction must be in (0, 1), got {fraction}')
  keep, hold = [], []
  for label, name in enumerate(class_names):
    members = np.flatnonzero(labels == label)
    if len(members) < 2:
      raise DataError(
          f'class {name!r} has {len(members)} image(s), too few for a stratified '
          f'{what} split (needs at least 2); add images to it or remove the class')
    n_hold = min(max(1, int(np.floor(fraction * len(members) + 0.5))), len(members) - 1)
    members = np.random.default_rng([seed, label]).permutation(members)
    hold.append(members[:n_hold])
    keep.append(members[n_hold:])
  return np.sort(np.concatenate(keep)), np.sort(np.concatenate(hold))


def random_holdout(num: int, fraction: float, seed: int, what: str = 'val'
                   ) -> tuple[np.ndarray, np.ndarray]:
  """Indices (keep, holdout), each sorted, holding out round(fraction * num) items.

  For segmentation, whose images have no class to stratify by. At least 1 item
  is held out and at least 1 kept.
  """
  if not 0.0 < fraction < 1.0:
    raise DataError(f'{what}_fraction must be in (0, 1), got {fraction}')
  if num < 2:
    raise DataError(f'{num} image(s) are too few for a {what} split (needs at least 2); '
                    'add images')
  n_hold = min(max(1, int(np.floor(fraction * num + 0.5))), num - 1)
  order = np.random.default_rng(seed).permutation(num)
  return np.sort(order[n_hold:]), np.sort(order[:n_hold])
