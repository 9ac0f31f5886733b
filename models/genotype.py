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


class _Record:
  """JSON and the canonical hash, shared by both kinds of genotype (frozen dataclasses)."""

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), sort_keys=True)

  @classmethod
  def from_json(cls, text: str):
    return cls.from_dict(json.loads(text))

  @property
  def hash(self) -> str:
    """Stable across processes and runs; equal for genotypes that build equal networks."""
    payload = json.dumps(self.canonical().to_dict(), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Genotype(_Record):
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

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> Genotype:
    d = dict(d)
    d['stages'] = tuple(Stage(**s) for s in d['stages'])
    d['train'] = TrainGenes(**d.get('train', {}))
    return cls(**d)

  def describe(self) -> str:
    """One line for leaderboards, e.g. `stem32 | 2xconv3 w32 max+se | ... | bn relu do.2`."""
    parts = [f'stem{self.stem_width}' + (f'/s{self.stem_stride}' if self.stem_stride > 1 else '')]
    parts.extend(_describe_stage(s) for s in self.canonical().stages)
    parts.append(f'{self.norm} {self.activation} do{self.dropout:g}')
    parts.append(_describe_train(self.train))
    return ' | '.join(parts)


def _describe_stage(s: Stage) -> str:
  """A canonical stage as e.g. `max/2 2xconv3d2 w32+se`."""
  down = '' if s.downsample == 'none' else f'{s.downsample}/2 '
  if s.num_cells == 0:
    return f'{down}w{s.width}'
  kernel = f'{s.kernel}' if s.kernel else ''
  dil = f'd{s.dilation}' if s.dilation > 1 else ''
  att = f'+{s.attention}' if s.attention != 'none' else ''
  return f'{down}{s.num_cells}x{s.cell}{kernel}{dil} w{s.width}{att}'


def _describe_train(t: TrainGenes) -> str:
  return (f'lr{t.learning_rate:g} wd{t.weight_decay:g} bs{t.batch_size} '
          f'aug{t.augment:g} ls{t.label_smoothing:g}')


@dataclasses.dataclass(frozen=True)
class DecoderStage:
  """Upsample to the next encoder level, merge that level's output (`skip`), then `cells`.

  `cells` is a Stage that never downsamples: its downsample gene has no effect.
  """
  cells: Stage
  upsample: str = 'transpose'
  skip: str = 'concat'

  def canonical(self) -> DecoderStage:
    cells = dataclasses.replace(self.cells, downsample='none').canonical()
    return dataclasses.replace(self, cells=cells)


@dataclasses.dataclass(frozen=True)
class SegGenotype(_Record):
  """An encoder-decoder segmenter (U-Net-like) built from the classifier's stages and cells.

  stem - encoder stages - decoder stages - 1x1 conv to per-pixel logits. Encoder stage 0
  works at the input resolution and each later one halves it; decoder stage j climbs back
  from level L-j to level L-j-1 (L = len(encoder) - 1), merging encoder stage L-j-1's
  output, so the logits come out at the input resolution.
  """
  encoder: tuple[Stage, ...]
  decoder: tuple[DecoderStage, ...]
  stem_width: int = 32
  norm: str = 'batch'
  activation: str = 'relu'
  train: TrainGenes = TrainGenes()

  def canonical(self) -> SegGenotype:
    return dataclasses.replace(
        self, encoder=tuple(s.canonical() for s in self.encoder),
        decoder=tuple(s.canonical() for s in self.decoder))

  def structure_error(self) -> str:
    """Why the encoder and decoder do not fit together, or '' if they do."""
    if not self.encoder:
      return 'a segmenter needs at least one encoder stage'
    if self.encoder[0].downsample != 'none':
      return 'encoder stage 0 works at the input resolution: its downsample must be none'
    flat = [i for i, s in enumerate(self.encoder[1:], 1) if s.downsample == 'none']
    if flat:
      return f'encoder stages after the first must downsample; stage {flat[0]} does not'
    if len(self.decoder) != len(self.encoder) - 1:
      return (f'{len(self.encoder)} encoder stages need {len(self.encoder) - 1} decoder '
              f'stages, got {len(self.decoder)}')
    return ''

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> SegGenotype:
    d = dict(d)
    d['encoder'] = tuple(Stage(**s) for s in d['encoder'])
    d['decoder'] = tuple(DecoderStage(**{**s, 'cells': Stage(**s['cells'])})
                         for s in d['decoder'])
    d['train'] = TrainGenes(**d.get('train', {}))
    return cls(**d)

  def describe(self) -> str:
    """One line, e.g. `stem32 | enc 1xconv3 w32 | max/2 1xsep3 w64 | dec up/transpose
    concat 1xconv3 w32 | batch relu | lr...`."""
    g = self.canonical()
    parts = [f'stem{g.stem_width}']
    parts.extend(f'enc {_describe_stage(s)}' if i == 0 else _describe_stage(s)
                 for i, s in enumerate(g.encoder))
    parts.extend(f'dec up/{s.upsample} {s.skip} {_describe_stage(s.cells)}' for s in g.decoder)
    parts.append(f'{g.norm} {g.activation}')
    parts.append(_describe_train(g.train))
    return ' | '.join(parts)


AnyGenotype = Genotype | SegGenotype


def from_json(text: str) -> AnyGenotype:
  """Either kind of genotype from its JSON: segmenters are the ones with an encoder."""
  d = json.loads(text)
  return (SegGenotype if 'encoder' in d else Genotype).from_dict(d)
