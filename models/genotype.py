"""The genotype: a complete, hashable description of one candidate network and its training.

A genotype is what crosses every module boundary of a search: the search space decodes
optimizer vectors into genotypes, the builder turns them into Flax modules, the store keys
trials by their hash and the leaderboard prints `describe()`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

# Cells whose output does not depend on kernel size or dilation (fixed internal structure).
CELLS_WITHOUT_KERNEL = frozenset({'identity', 'maxpool', 'avgpool', 'esp'})
# Cells that compute nothing: a stage made of them equals a stage with no cells.
NO_OP_CELLS = frozenset({'identity'})


@dataclasses.dataclass(frozen=True)
class Stage:
  """One resolution stage: downsample, project to `width`, then `num_cells` cells."""
  num_cells: int
  cell: str = 'conv'
  kernel: int = 3
  width: int = 32
  dilation: int = 1
  attention: str = 'none'
  downsample: str = 'none'

  def canonical(self) -> Stage:
    """The same stage with every gene that has no effect set to a fixed value."""
    num_cells = 0 if self.cell in NO_OP_CELLS else self.num_cells
    if num_cells == 0:
      return Stage(0, 'none', 0, self.width, 0, 'none', self.downsample)
    if self.cell in CELLS_WITHOUT_KERNEL:
      return dataclasses.replace(self, kernel=0, dilation=0)
    return self


@dataclasses.dataclass(frozen=True)
class TrainGenes:
  """Training hyperparameters that an experiment may search alongside the architecture."""
  learning_rate: float = 1e-3
  weight_decay: float = 1e-4
  batch_size: int = 64
  augment: float = 0.5
  label_smoothing: float = 0.0


@dataclasses.dataclass(frozen=True)
class Genotype:
  """A classification network: stem, stages, global pooling, dropout, dense head."""
  stages: tuple[Stage, ...]
  stem_width: int = 32
  stem_stride: int = 1
  norm: str = 'batch'
  activation: str = 'relu'
  dropout: float = 0.0
  train: TrainGenes = TrainGenes()

  def canonical(self) -> Genotype:
    return dataclasses.replace(
        self, stages=tuple(s.canonical() for s in self.stages))

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), sort_keys=True)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> Genotype:
    d = dict(d)
    d['stages'] = tuple(Stage(**s) for s in d['stages'])
    d['train'] = TrainGenes(**d.get('train', {}))
    return cls(**d)

  @classmethod
  def from_json(cls, text: str) -> Genotype:
    return cls.from_dict(json.loads(text))

  @property
  def hash(self) -> str:
    """Stable across processes and runs; equal for genotypes that build equal networks."""
    payload = json.dumps(self.canonical().to_dict(), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]

  def describe(self) -> str:
    """One line for leaderboards, e.g. `stem32 | 2xconv3 w32 max+se | ... | bn relu do.2`."""
    parts = [f'stem{self.stem_width}' + (f'/s{self.stem_stride}' if self.stem_stride > 1 else '')]
    for s in self.canonical().stages:
      down = '' if s.downsample == 'none' else f'{s.downsample}/2 '
      if s.num_cells == 0:
        parts.append(f'{down}w{s.width}')
        continue
      kernel = f'{s.kernel}' if s.kernel else ''
      dil = f'd{s.dilation}' if s.dilation > 1 else ''
      att = f'+{s.attention}' if s.attention != 'none' else ''
      parts.append(f'{down}{s.num_cells}x{s.cell}{kernel}{dil} w{s.width}{att}')
    t = self.train
    parts.append(f'{self.norm} {self.activation} do{self.dropout:g}')
    parts.append(f'lr{t.learning_rate:g} wd{t.weight_decay:g} bs{t.batch_size} '
                 f'aug{t.augment:g} ls{t.label_smoothing:g}')
    return ' | '.join(parts)
