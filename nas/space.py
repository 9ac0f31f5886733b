"""The search space: config choices -> a Nevergrad parametrization -> genotypes.

Every gene with more than one allowed value is one coordinate z of an unbounded vector; a gene
with n values reads value floor(Phi(z) * n), Phi the standard normal CDF. Nevergrad optimizers
start from standard normal samples, which Phi maps to uniform choices, so random search and
the first swarm or population cover every value equally. One flat array is what PSO, DE and
CMA move in natively and what discrete optimizers mutate coordinate-wise, and it costs
Nevergrad microseconds per candidate, where a tree of `Choice` parameters costs about 100 ms.
Numeric values are listed in increasing order, so neighbouring coordinates are neighbouring
values; names have no order, which continuous optimizers tolerate.

`SearchSpace` proposes classifiers; `SegmentationSpace` proposes encoder-decoder segmenters
with the same vector machinery, its decoder stages drawing their cells from the same genes.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import ml_collections
import nevergrad as ng
import numpy as np
from scipy import special

from models import cells
from models import counting
from models import layers
from models.genotype import AnyGenotype, DecoderStage, Genotype, SegGenotype, Stage, TrainGenes

# Draws per point of a shared first generation before giving up on a mostly untrainable space.
_FIRST_GENERATION_DRAWS = 500

# Gene name -> the config field listing its allowed values.
_GLOBAL_GENES = {
    'stem_width': 'stem_widths',
    'stem_stride': 'stem_strides',
    'norm': 'norms',
    'activation': 'activations',
    'dropout': 'dropouts',
}
_TRAIN_GENES = {
    'learning_rate': 'learning_rates',
    'weight_decay': 'weight_decays',
    'batch_size': 'batch_sizes',
    'augment': 'augments',
    'label_smoothing': 'label_smoothings',
}
_CELL_GENES = {
    'num_cells': 'num_cells',
    'cell': 'cells',
    'kernel': 'kernels',
    'width': 'widths',
    'dilation': 'dilations',
    'attention': 'attention',
}
_STAGE_GENES = {**_CELL_GENES, 'downsample': 'downsample'}
_SEG_GLOBAL_GENES = {
    'stem_width': 'stem_widths',
    'norm': 'norms',
    'activation': 'activations',
}
_DECODER_GENES = {
    'upsample': 'upsamples',
    'skip': 'skips',
}
# Genes that name a module -> the registry that builds it.
_NAMED_GENES = {
    'cell': cells.CELLS,
    'attention': cells.ATTENTION,
    'downsample': cells.DOWNSAMPLE,
    'upsample': cells.UPSAMPLE,
    'skip': cells.SKIPS,
    'norm': layers.NORMS,
    'activation': layers.ACTIVATIONS,
}
_FIELDS = {**_GLOBAL_GENES, **_STAGE_GENES, **_DECODER_GENES}


def stage_widths(space: ml_collections.ConfigDict, stage: int) -> Sequence[int]:
  """The widths encoder stage `stage` may take: its `stage_widths` entry, else `widths`."""
  per_stage = space.get('stage_widths') or ()
  if not per_stage:
    return space.widths
  if len(per_stage) != space.num_stages:
    raise ValueError(f'space.stage_widths has {len(per_stage)} entries for {space.num_stages} '
                     'stages: give one tuple of widths per stage, or () to use space.widths')
  return per_stage[stage]


def _check_names(gene: str, values: Sequence[Any]) -> None:
  known = _NAMED_GENES.get(gene)
  if known is None:  # a number: widths, kernels, rates
    return
  unknown = [v for v in values if v not in known]
  if unknown:
    raise ValueError(f'space.{_FIELDS[gene]} has unknown {", ".join(map(repr, unknown))}; '
                     f'choose from {", ".join(known)}')


class SearchSpace:
  """The classifiers an experiment may propose, and the cheap checks that reject bad ones."""

  def __init__(self, space: ml_collections.ConfigDict, image_size: int, channels: int,
               num_classes: int):
    self.config = space
    self.image_size = image_size
    self.channels = channels
    self.num_classes = num_classes
    self.choices: dict[str, tuple[Any, ...]] = {}
    for gene, values in self._allowed(space).items():
      values = tuple(values)
      if not values:
        raise ValueError(f'search space gene {gene!r} has no allowed values')
      _check_names(gene.rpartition('.')[2], values)
      self.choices[gene] = values

  def _allowed(self, space: ml_collections.ConfigDict) -> dict[str, Sequence[Any]]:
    """Every gene's allowed values, in the order of the vector's coordinates."""
    genes = {gene: space[field] for gene, field in {**_GLOBAL_GENES, **_TRAIN_GENES}.items()}
    for i in range(space.num_stages):
      genes.update({f's{i}.{gene}': space[field] for gene, field in _STAGE_GENES.items()})
      genes[f's{i}.width'] = stage_widths(space, i)
    return genes

  @property
  def searched(self) -> list[str]:
    """The genes with more than one allowed value."""
    return [g for g, v in self.choices.items() if len(v) > 1]

  @property
  def depth_coordinates(self) -> list[int]:
    """Where the searched genes that set a stage's number of cells sit in the vector."""
    return [i for i, gene in enumerate(self.searched) if gene.endswith('.num_cells')]

  @property
  def dimension(self) -> int:
    """Coordinates of the search vector: one per searched gene, one if none is searched."""
    return max(1, len(self.searched))

  def parametrization(self, seed: int) -> ng.p.Array:
    """The vector space, with `trainable` as a cheap constraint.

    Nevergrad's optimizers then redraw a point whose network may not be trained before they
    hand it out (DE is told such a point is infinitely bad, PSO moves the particle again), so
    a search's budget is spent on networks it trains, whatever share of the space is over
    the FLOP budget.
    """
    param = ng.p.Array(shape=(self.dimension,))
    param.random_state.seed(seed)
    param.register_cheap_constraint(self.trainable)
    return param

  def trainable(self, vector: np.ndarray) -> bool:
    """Whether the network at this point may be trained: the optimizers' cheap constraint."""
    return not self.violation(self.decode(vector))

  def first_generation(self, seed: int, size: int) -> list[np.ndarray]:
    """`size` trainable points drawn from `seed` alone, whichever optimizer will ask them.

    Optimizers given these as their first generation start from the same networks at one
    seed, so an optimizer study compares what each does next, not how lucky its first draw
    was. Standard normal draws, as the optimizers' own; a space with almost no trainable
    point may give fewer, and the optimizer then draws the rest itself.
    """
    rng = np.random.default_rng(seed)
    points = []
    for _ in range(_FIRST_GENERATION_DRAWS * size):
      if len(points) == size:
        break
      point = rng.standard_normal(self.dimension)
      if self.trainable(point):
        points.append(point)
    return points

  def genes(self, vector: np.ndarray) -> dict[str, Any]:
    """The value of every gene at a point of the search vector space."""
    genes = {g: v[0] for g, v in self.choices.items()}
    for gene, x in zip(self.searched, special.ndtr(np.asarray(vector, dtype=np.float64))):
      values = self.choices[gene]
      genes[gene] = values[min(int(x * len(values)), len(values) - 1)]
    return genes

  def encode(self, genes: dict[str, Any]) -> np.ndarray:
    """The point in the middle of each gene's interval that decodes to `genes`."""
    return np.array([self.coordinate(g, genes[g]) for g in self.searched] or [0.0])

  def coordinate(self, gene: str, value: Any) -> float:
    """The middle of the interval of a searched gene's coordinate that decodes to `value`."""
    values = self.choices[gene]
    return float(special.ndtri((values.index(value) + 0.5) / len(values)))

  def decode(self, vector: np.ndarray) -> Genotype:
    """The genotype at a point; genes not searched take their single value."""
    genes = self.genes(vector)
    stages = tuple(
        Stage(**{name: genes[f's{i}.{name}'] for name in _STAGE_GENES})
        for i in range(self.config.num_stages))
    return Genotype(
        stages=stages,
        train=TrainGenes(**{name: genes[name] for name in _TRAIN_GENES}),
        **{name: genes[name] for name in _GLOBAL_GENES})

  def grid(self) -> Iterator[np.ndarray]:
    """A point for every combination of the searched genes' values, in a fixed order."""
    searched = self.searched
    for combo in itertools.product(*(self.choices[g] for g in searched)):
      yield self.encode(dict(zip(searched, combo)))

  def grid_size(self) -> int:
    size = 1
    for gene in self.searched:
      size *= len(self.choices[gene])
    return size

  def violation(self, genotype: AnyGenotype) -> str:
    """Why the genotype may not be trained, or '' if it may. Cheap: nothing compiles."""
    sizes = counting.feature_sizes(genotype, self.image_size)
    if min(sizes) < self.config.min_feature_size:
      return (f'feature map shrinks to {min(sizes)}x{min(sizes)} '
              f'(minimum {self.config.min_feature_size}) at {self.image_size}px')
    if self.config.max_params or self.config.max_flops:
      counts = counting.count(genotype, self.image_size, self.channels, self.num_classes)
      if self.config.max_params and counts.params > self.config.max_params:
        return f'{counts.params:,} parameters > budget {self.config.max_params:,}'
      if self.config.max_flops and counts.flops > self.config.max_flops:
        return f'{counts.flops:,} FLOPs > budget {self.config.max_flops:,}'
    return ''


class SegmentationSpace(SearchSpace):
  """Encoder-decoder segmenters (models.genotype.SegGenotype).

  `num_stages` encoder stages take the classifier's stage genes; the first works at the
  input resolution, so its downsample is fixed to 'none' and every later one must
  downsample. The num_stages - 1 decoder stages take the same cell genes (cells, kernels,
  widths, ...) plus `upsamples` ('transpose', 'resize') and `skips` ('concat', 'add',
  'none'). Global genes: stem_widths, norms, activations; the training genes as always.
  """

  def _allowed(self, space: ml_collections.ConfigDict) -> dict[str, Sequence[Any]]:
    if 'none' in space.downsample:
      raise ValueError("a segmentation space's encoder stages after the first must "
                       "downsample: remove 'none' from space.downsample")
    genes = {gene: space[field]
             for gene, field in {**_SEG_GLOBAL_GENES, **_TRAIN_GENES}.items()}
    for i in range(space.num_stages):
      genes.update({f'e{i}.{gene}': space[field] for gene, field in _STAGE_GENES.items()})
      genes[f'e{i}.width'] = stage_widths(space, i)
    genes['e0.downsample'] = ('none',)
    for i in range(space.num_stages - 1):
      genes.update({f'd{i}.{gene}': space[field]
                    for gene, field in {**_CELL_GENES, **_DECODER_GENES}.items()})
      # Decoder stage i works at encoder stage num_stages - 2 - i's resolution.
      genes[f'd{i}.width'] = stage_widths(space, space.num_stages - 2 - i)
    return genes

  def decode(self, vector: np.ndarray) -> SegGenotype:
    """The segmenter at a point; genes not searched take their single value."""
    genes = self.genes(vector)
    encoder = tuple(
        Stage(**{name: genes[f'e{i}.{name}'] for name in _STAGE_GENES})
        for i in range(self.config.num_stages))
    decoder = tuple(
        DecoderStage(Stage(**{name: genes[f'd{i}.{name}'] for name in _CELL_GENES}),
                     **{name: genes[f'd{i}.{name}'] for name in _DECODER_GENES})
        for i in range(self.config.num_stages - 1))
    return SegGenotype(
        encoder=encoder, decoder=decoder,
        train=TrainGenes(**{name: genes[name] for name in _TRAIN_GENES}),
        **{name: genes[name] for name in _SEG_GLOBAL_GENES})

  def violation(self, genotype: SegGenotype) -> str:
    return genotype.structure_error() or super().violation(genotype)


# Task (datasets.Split.task) -> the space of networks that solve it.
SPACES: dict[str, type[SearchSpace]] = {
    'classification': SearchSpace,
    'segmentation': SegmentationSpace,
}
