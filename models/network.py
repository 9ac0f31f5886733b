"""Builds Flax networks from genotypes: a classifier, or an encoder-decoder segmenter."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.cells import ATTENTION, CELLS, DOWNSAMPLE, SKIPS, UPSAMPLE
from models.genotype import AnyGenotype, DecoderStage, Genotype, SegGenotype, Stage
from models.layers import Conv, ConvNormAct, Dtype


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


def logit_channels(num_classes: int) -> int:
  """A segmenter's logits per pixel for `num_classes` mask values (background included).

  Binary masks get one channel, the foreground's sigmoid logit; more values, one channel
  each (softmax).
  """
  if num_classes < 2:
    raise ValueError(f'segmentation needs at least 2 mask values, got {num_classes}')
  return 1 if num_classes == 2 else num_classes


class DecoderBlock(nn.Module):
  """Upsample to the skip's size and the stage width, merge the skip, then the stage's cells."""
  stage: DecoderStage
  norm: str = 'batch'
  activation: str = 'relu'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, skip: jax.Array, train: bool) -> jax.Array:
    s = self.stage
    common = dict(norm=self.norm, activation=self.activation, dtype=self.dtype)
    x = UPSAMPLE[s.upsample](s.cells.width, **common, name='up')(x, skip.shape[1:3], train)
    x = SKIPS[s.skip](norm=self.norm, dtype=self.dtype, name='skip')(x, skip, train)
    return StageBlock(s.cells, **common, name='cells')(x, train)


class SegNetwork(nn.Module):
  """stem - encoder stages - decoder stages - 1x1 conv; float32 logits at the input size.

  Returns (B, H, W, logit_channels(num_classes)).
  """
  genotype: SegGenotype
  num_classes: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    g = self.genotype
    error = g.structure_error()
    if error:
      raise ValueError(error)
    common = dict(norm=g.norm, activation=g.activation, dtype=self.dtype)
    x = ConvNormAct(g.stem_width, 3, **common, name='stem')(x, train)
    levels = []
    for i, stage in enumerate(g.encoder):
      x = StageBlock(stage, **common, name=f'encoder{i}')(x, train)
      levels.append(x)
    levels.pop()  # The deepest level is x itself.
    for i, stage in enumerate(g.decoder):
      x = DecoderBlock(stage, **common, name=f'decoder{i}')(x, levels.pop(), train)
    return Conv(logit_channels(self.num_classes), 1, use_bias=True, dtype=jnp.float32,
                name='head')(x)


# Genotype kind -> the module that it describes, built as module(genotype, num_classes, dtype).
NETWORKS: dict[type, type[nn.Module]] = {
    Genotype: Network,
    SegGenotype: SegNetwork,
}


def preprocess(images: jax.Array) -> jax.Array:
  """The network's input convention: uint8 images -> float32 in [0, 1].

  The stem's normalisation takes care of scale, so no dataset statistics are needed.
  """
  return images.astype(jnp.float32) / 255.0


def build(genotype: AnyGenotype, num_classes: int, dtype: Dtype = jnp.float32) -> nn.Module:
  """The network of `genotype.canonical()`: genotypes with equal hashes build equal networks.

  A Genotype builds a classifier with (B, num_classes) logits; a SegGenotype a segmenter for
  `num_classes` mask values with (B, H, W, logit_channels(num_classes)) logits.
  Use as `model.apply(variables, x, train=..., rngs={'dropout': key},
  mutable=['batch_stats'])` (mutable only when training); x is float32 (B, H, W, C).
  """
  return NETWORKS[type(genotype)](genotype.canonical(), num_classes, dtype)
