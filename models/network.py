"""Builds a Flax classifier from a Genotype."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.cells import ATTENTION, CELLS, DOWNSAMPLE
from models.genotype import Genotype, Stage
from models.layers import ConvNormAct, Dtype


FEATURES = 'features'


class StageBlock(nn.Module):
  """Downsample, cells (the first one reaches the stage width), then attention once."""
  stage: Stage
  norm: str = 'batch'
  activation: str = 'relu'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    s = self.stage
    common = dict(norm=self.norm, activation=self.activation, dtype=self.dtype)
    x = DOWNSAMPLE[s.downsample](s.width, **common, name='down')(x, train)
    # The first cell changes the width itself (as in VGG and ResNet); only a stage without
    # cells needs a projection to reach its width.
    if not s.num_cells and x.shape[-1] != s.width:
      x = ConvNormAct(s.width, 1, **common, name='project')(x, train)
    for i in range(s.num_cells):
      x = CELLS[s.cell](s.width, s.kernel, s.dilation, **common, name=f'cell{i}')(x, train)
    if s.num_cells:
      x = ATTENTION[s.attention](dtype=self.dtype, name='attention')(x)
    return x


class Network(nn.Module):
  """stem - stages - global average pool - dropout - dense; logits are float32."""
  genotype: Genotype
  num_classes: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    g = self.genotype
    common = dict(norm=g.norm, activation=g.activation, dtype=self.dtype)
    x = ConvNormAct(g.stem_width, 3, strides=g.stem_stride, **common, name='stem')(x, train)
    for i, stage in enumerate(g.stages):
      x = StageBlock(stage, **common, name=f'stage{i}')(x, train)
    # The last feature map, for Grad-CAM (nas.explain): its value through `intermediates`,
    # the logits' gradient through `perturbations`. Both are no-ops unless asked for.
    x = self.perturb(FEATURES, x)
    self.sow('intermediates', FEATURES, x)
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    x = nn.Dropout(g.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=jnp.float32, name='head')(x)


def preprocess(images: jax.Array) -> jax.Array:
  """The network's input convention: uint8 images -> float32 in [0, 1].

  The stem's normalisation takes care of scale, so no dataset statistics are needed.
  """
  return images.astype(jnp.float32) / 255.0


def build(genotype: Genotype, num_classes: int, dtype: Dtype = jnp.float32) -> Network:
  """The network of `genotype.canonical()`: genotypes with equal hashes build equal networks.

  Use as `model.apply(variables, x, train=..., rngs={'dropout': key},
  mutable=['batch_stats'])` (mutable only when training); x is float32 (B, H, W, C).
  """
  return Network(genotype.canonical(), num_classes, dtype)
