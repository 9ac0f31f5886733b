"""Cheap size, parameter and FLOP counts of a genotype's network, without training."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from models import onednn
from models.cells import DOWNSAMPLE
from models.genotype import AnyGenotype, Genotype, SegGenotype
from models.network import build


@dataclasses.dataclass(frozen=True)
class Counts:
  params: int
  flops: int  # XLA's count for one eval-mode forward pass of one image.


# Genotype kind -> (stem stride, the stages that set the feature sizes).
_DOWNSAMPLING = {
    Genotype: lambda g: (g.stem_stride, g.stages),
    SegGenotype: lambda g: (1, g.encoder),  # The decoder climbs back to the stem's size.
}


def feature_sizes(genotype: AnyGenotype, image_size: int) -> list[int]:
  """Spatial size after the stem and after each (encoder) stage; a size < 1 means invalid.

  Pure Python, so a search can reject genotypes before anything is traced.
  """
  stem_stride, stages = _DOWNSAMPLING[type(genotype)](genotype)
  size = -(-image_size // stem_stride)  # 'SAME' padding: ceil(n / stride).
  sizes = [size]
  for stage in stages:
    size = DOWNSAMPLE[stage.downsample].output_size(size)
    sizes.append(size)
  return sizes


def param_count(variables: Any) -> int:
  """Number of parameters in `variables['params']`, or in a bare params tree."""
  params = variables.get('params', variables) if hasattr(variables, 'get') else variables
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


_COUNTS: dict[tuple[str, int, int, int], Counts] = {}


def count(genotype: AnyGenotype, image_size: int, channels: int, num_classes: int) -> Counts:
  """Parameters and forward FLOPs at batch 1, from tracing only (nothing runs); memoised."""
  key = (genotype.hash, image_size, channels, num_classes)
  if key not in _COUNTS:
    if min(feature_sizes(genotype, image_size)) < 1:
      raise ValueError(f'{genotype.describe()} shrinks {image_size} px below 1 px')
    model = build(genotype, num_classes)
    x = jax.ShapeDtypeStruct((1, image_size, image_size, channels), jnp.float32)
    variables = jax.eval_shape(
        lambda x: model.init(jax.random.key(0), x, train=False), x)
    forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
    with onednn.off():
      flops = forward.lower(variables, x).cost_analysis()['flops']
    _COUNTS[key] = Counts(param_count(variables), int(flops))
  return _COUNTS[key]
