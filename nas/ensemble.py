"""Soft-voting ensembles of saved networks: which folders, whether they fit together, the mean.

Kept apart from the `nas.evaluate` command line, whose absl flags would be defined twice in a
process that imports another command's module.
"""
from __future__ import annotations

import glob
from collections.abc import Sequence

import numpy as np

import datasets

# What members of one ensemble must share: they are scored on one split, class by class.
_SHARED = ('dataset', 'data_options', 'class_names', 'image_size', 'channels')


def model_paths(patterns: Sequence[str]) -> list[str]:
  """The folders named, each glob pattern replaced by its matches in sorted order."""
  paths = []
  for pattern in patterns:
    matches = sorted(glob.glob(pattern)) if any(c in pattern for c in '*?[') else [pattern]
    if not matches:
      raise ValueError(f'--model={pattern} matches nothing')
    paths += matches
  return paths


def data_spec(model, data_dir: str | None, seed: int = 0, dedup: bool = False) -> datasets.Spec:
  """The dataset a saved network was trained on, as it saw it; `seed` places the val split."""
  return datasets.Spec(name=model.info['dataset'],
                       data_dir=data_dir or datasets.default_data_dir(),
                       image_size=model.image_size, channels=model.channels, seed=seed,
                       dedup=dedup,
                       options=tuple(sorted(model.info.get('data_options', {}).items())))


def probabilities(members: Sequence, images: np.ndarray,
                  batch_size: int) -> tuple[list[np.ndarray], np.ndarray]:
  """Each member's probabilities, and their mean (the ensemble's)."""
  each = [member.predict(images, batch_size) for member in members]
  return each, np.mean(each, axis=0)


def mismatch(members: Sequence, paths: Sequence[str]) -> str | None:
  """Why the members cannot form one ensemble, or None where they can."""
  for name in _SHARED:
    values = [_setting(member, name) for member in members]
    for path, value in zip(paths[1:], values[1:]):
      if value != values[0]:
        return f'{path} has {name} {value!r}, {paths[0]} has {values[0]!r}'
  return None


def _setting(model, name: str):
  return model.info.get(name) if name in ('dataset', 'data_options') else getattr(model, name)
