"""A dataset recipe: small, picklable, and loads the same splits in any process or host.

Worker processes and cluster jobs receive a `Spec` instead of arrays; each loads the splits
once, from the decoded cache on disk, and keeps them for every candidate it trains.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

from datasets import loader
from datasets import paths
from datasets.records import Split, Splits


@dataclasses.dataclass(frozen=True)
class Spec:
  """The arguments of `datasets.load`, with the data directory made absolute."""
  name: str
  data_dir: str
  image_size: int
  channels: int
  val_fraction: float = 0.1
  seed: int = 0
  dedup: bool = False
  on_corrupt: str = 'skip'
  options: tuple[tuple[str, Any], ...] = ()

  @classmethod
  def from_config(cls, data, data_dir: str | None, seed: int) -> Spec:
    """The spec of an experiment's `config.data`."""
    return cls(name=data.name, data_dir=os.path.abspath(data_dir or paths.default_data_dir()),
               image_size=data.image_size, channels=data.channels,
               val_fraction=data.val_fraction, seed=seed, dedup=data.dedup,
               on_corrupt=data.on_corrupt, options=tuple(sorted(data.options.to_dict().items())))

  def load(self) -> Splits:
    """The splits, loaded once per process."""
    return _load(self)

  def train_val(self) -> tuple[Split, Split]:
    """What a search may see: the training and validation splits, never the test split."""
    splits = self.load()
    return splits.train, splits.val


@functools.lru_cache(maxsize=2)
def _load(spec: Spec) -> Splits:
  return loader.load(spec.name, data_dir=spec.data_dir, image_size=spec.image_size,
                     channels=spec.channels, val_fraction=spec.val_fraction, seed=spec.seed,
                     dedup=spec.dedup, on_corrupt=spec.on_corrupt, **dict(spec.options))
