"""Searchable building blocks: cells, attention, down- and upsampling, skip merges, each
behind a registry.

A cell maps (B, H, W, C) to (B, H, W, features). In a built network C already equals
`features`; a cell given other channels still works (1x1 projections where needed).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.layers import (ACTIVATIONS, ConvNormAct, Dtype, NORMS, conv, conv_transpose,
                           max_pool_2x2, max_pool_3x3)


def soft_threshold(x: jax.Array, tau: jax.Array) -> jax.Array:
  """sign(x) * max(|x| - tau, 0): zeroes |x| < tau and shrinks the rest by tau."""
  return jnp.sign(x) * jnp.maximum(jnp.abs(x) - tau, 0)


class Cell(nn.Module):
  """Fields shared by every cell, so that the builder constructs them all alike."""
  features: int
  kernel_size: int = 3
  dilation: int = 1
  norm: str = 'batch'
  activation: str = 'relu'
  dtype: Dtype = jnp.float32

  def cna(self, features: int, kernel_size: int = 1, *, linear: bool = False,
          **kwargs) -> ConvNormAct:
    """A ConvNormAct with this cell's norm, activation (unless `linear`) and dtype."""
    return ConvNormAct(features, kernel_size, norm=self.norm,
                       activation=None if linear else self.activation,
                       dtype=self.dtype, **kwargs)

  def act(self, x: jax.Array) -> jax.Array:
    return ACTIVATIONS[self.activation](x)

  def shortcut(self, x: jax.Array, train: bool) -> jax.Array:
    """Identity, or a linear 1x1 conv-norm when the channels differ."""
    if x.shape[-1] == self.features:
      return x
    return self.cna(self.features, linear=True)(x, train)

  def match_channels(self, x: jax.Array, train: bool) -> jax.Array:
    """Identity, or a 1x1 conv-norm-act when the channels differ."""
    if x.shape[-1] == self.features:
      return x
    return self.cna(self.features)(x, train)


class ConvCell(Cell):
  """conv - norm - act."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    return self.cna(self.features, self.kernel_size, dilation=self.dilation)(x, train)


class SepCell(Cell):
  """Depthwise-separable (MobileNet): depthwise kxk - norm - act - 1x1 - norm - act."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    channels = x.shape[-1]
    x = self.cna(channels, self.kernel_size, dilation=self.dilation, groups=channels)(x, train)
    return self.cna(self.features)(x, train)


class MBConvCell(Cell):
  """Inverted residual (MobileNetV2): expand 1x1, depthwise kxk, linear 1x1 projection."""
  expansion: int = 4

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    hidden = x.shape[-1] * self.expansion
    y = self.cna(hidden)(x, train)
    y = self.cna(hidden, self.kernel_size, dilation=self.dilation, groups=hidden)(y, train)
    y = self.cna(self.features, linear=True)(y, train)
    # As in MobileNetV2, a block that changes the width has no residual.
    return x + y if x.shape[-1] == self.features else y


class ESPCell(Cell):
  """ESPNet module: reduce, split into dilated 3x3 branches, hierarchical fusion.

  Follows ESPNet's residual block: the first branch (rate 1) takes the remainder
  channels and is concatenated as is; branches 2..K are summed hierarchically (HFF);
  the shortcut is added before the final norm-act. Ignores kernel_size and dilation.
  """
  rates: tuple[int, ...] = (1, 2, 4, 8)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    branches = len(self.rates)
    width = self.features // branches
    if width == 0:
      raise ValueError(f'esp cell needs features >= {branches}, got {self.features}')
    first = self.features - (branches - 1) * width
    reduced = conv(width, 1, dtype=self.dtype)(x)
    outs = [conv(first if i == 0 else width, 3, dilation=rate, dtype=self.dtype)(reduced)
            for i, rate in enumerate(self.rates)]
    fused = [outs[0], outs[1]]
    for out in outs[2:]:
      fused.append(fused[-1] + out)
    y = jnp.concatenate(fused, axis=-1)
    # The norm follows, so a plain 1x1 conv suffices when the shortcut must project.
    y = y + (x if x.shape[-1] == self.features else conv(self.features, 1, dtype=self.dtype)(x))
    return self.act(NORMS[self.norm](self.features, train, self.dtype)(y))


class ResidualCell(Cell):
  """ResNet basic block: kxk conv-norm-act, kxk conv-norm, add shortcut, act."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = self.cna(self.features, self.kernel_size, dilation=self.dilation)(x, train)
    y = self.cna(self.features, self.kernel_size, dilation=self.dilation,
                 linear=True)(y, train)
    return self.act(y + self.shortcut(x, train))


class ShrinkageCell(Cell):
  """Residual shrinkage unit with channel-wise thresholds (DRSN-CW, Zhao et al. 2020).

  Post-activation form like ResidualCell: conv-norm-act, conv-norm, soft thresholding
  with tau = alpha * mean|y| per channel, add shortcut, act. The original is
  pre-activation (norm-act-conv twice, no final act); thresholding the linear conv
  output keeps its sign, which a ReLU before the threshold would destroy.
  """

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = self.cna(self.features, self.kernel_size, dilation=self.dilation)(x, train)
    y = self.cna(self.features, self.kernel_size, dilation=self.dilation,
                 linear=True)(y, train)
    magnitude = jnp.mean(jnp.abs(y), axis=(1, 2), keepdims=True)
    # FC-BN-ReLU-FC on (B, 1, 1, C), written as 1x1 convs.
    a = self.cna(self.features)(magnitude, train)
    alpha = nn.sigmoid(conv(self.features, 1, use_bias=True, dtype=self.dtype)(a))
    y = soft_threshold(y, alpha * magnitude)
    return self.act(y + self.shortcut(x, train))


class MaxPoolCell(Cell):
  """3x3 stride-1 max pooling."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = max_pool_3x3(x)
    return self.match_channels(x, train)


class AvgPoolCell(Cell):
  """3x3 stride-1 average pooling over the valid (unpadded) pixels."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = nn.avg_pool(x, (3, 3), strides=(1, 1), padding='SAME', count_include_pad=False)
    # Flax divides by float32 window counts here, which would promote bfloat16.
    return self.match_channels(y.astype(x.dtype), train)


class IdentityCell(Cell):
  """Passes the input through (projected if the channels differ)."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    return self.match_channels(x, train)


CELLS: dict[str, type[Cell]] = {
    'conv': ConvCell,
    'sep': SepCell,
    'mbconv': MBConvCell,
    'esp': ESPCell,
    'residual': ResidualCell,
    'shrinkage': ShrinkageCell,
    'maxpool': MaxPoolCell,
    'avgpool': AvgPoolCell,
    'identity': IdentityCell,
}


def _hidden_units(channels: int, reduction: int, minimum: int) -> int:
  return max(minimum, channels // reduction)


class NoAttention(nn.Module):
  """Identity."""
  dtype: Dtype = jnp.float32

  def __call__(self, x: jax.Array) -> jax.Array:
    return x


class SqueezeExcite(nn.Module):
  """Squeeze-and-excitation: channel gates from the global average."""
  reduction: int = 4
  min_hidden: int = 4
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    hidden = _hidden_units(channels, self.reduction, self.min_hidden)
    s = jnp.mean(x, axis=(1, 2), keepdims=True)
    s = nn.relu(conv(hidden, 1, use_bias=True, dtype=self.dtype)(s))
    return x * nn.sigmoid(conv(channels, 1, use_bias=True, dtype=self.dtype)(s))


class CBAM(nn.Module):
  """CBAM: channel gates from a shared MLP on average and max pools, then a 7x7 spatial gate.

  The spatial conv has a bias instead of CBAM's BatchNorm, so attention needs no train flag.
  """
  reduction: int = 4
  min_hidden: int = 4
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    hidden = _hidden_units(channels, self.reduction, self.min_hidden)
    fc1 = conv(hidden, 1, use_bias=True, dtype=self.dtype)
    fc2 = conv(channels, 1, use_bias=True, dtype=self.dtype)

    def mlp(s):
      return fc2(nn.relu(fc1(s)))

    avg = jnp.mean(x, axis=(1, 2), keepdims=True)
    top = jnp.max(x, axis=(1, 2), keepdims=True)
    x = x * nn.sigmoid(mlp(avg) + mlp(top))
    s = jnp.concatenate([jnp.mean(x, axis=-1, keepdims=True),
                         jnp.max(x, axis=-1, keepdims=True)], axis=-1)
    return x * nn.sigmoid(conv(1, 7, use_bias=True, dtype=self.dtype)(s))


ATTENTION: dict[str, type[nn.Module]] = {
    'none': NoAttention,
    'se': SqueezeExcite,
    'cbam': CBAM,
}


class Downsample(nn.Module):
  """Fields shared by every downsampling op; `output_size` is the analytic spatial size."""
  features: int
  norm: str = 'batch'
  activation: str = 'relu'
  dtype: Dtype = jnp.float32

  @staticmethod
  def output_size(size: int) -> int:
    return size // 2


class NoDownsample(Downsample):
  """Identity."""

  @staticmethod
  def output_size(size: int) -> int:
    return size

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    return x


class MaxDownsample(Downsample):
  """2x2 max pooling, stride 2, VALID."""

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    return max_pool_2x2(x)


class AvgDownsample(Downsample):
  """2x2 average pooling, stride 2, VALID."""

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    return nn.avg_pool(x, (2, 2), strides=(2, 2), padding='VALID')


class ConvDownsample(Downsample):
  """3x3 stride-2 conv-norm-act to `features`.

  Padding one pixel at the bottom/right only gives floor(n/2) like the pools; it equals
  'SAME' for even n, and for odd n the padded pixel falls outside every window.
  """

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    return ConvNormAct(self.features, 3, strides=2, padding=((0, 1), (0, 1)),
                       norm=self.norm, activation=self.activation,
                       dtype=self.dtype)(x, train)


DOWNSAMPLE: dict[str, type[Downsample]] = {
    'none': NoDownsample,
    'max': MaxDownsample,
    'avg': AvgDownsample,
    'conv': ConvDownsample,
}


class Upsample(nn.Module):
  """Fields shared by every upsampling op: (B, h, w, C) -> (B, *size, features)."""
  features: int
  norm: str = 'batch'
  activation: str = 'relu'
  dtype: Dtype = jnp.float32

  def cna(self, x: jax.Array, train: bool) -> jax.Array:
    """Norm and activation after the upsampling conv."""
    x = NORMS[self.norm](self.features, train, self.dtype)(x)
    return ACTIVATIONS[self.activation](x)


class TransposeUpsample(Upsample):
  """U-Net's up-convolution: 2x2 stride-2 transposed conv - norm - act.

  An odd target size (an encoder level whose pooling dropped a row or column) is reached
  by repeating the last row or column.
  """

  @nn.compact
  def __call__(self, x: jax.Array, size: tuple[int, int], train: bool) -> jax.Array:
    x = self.cna(conv_transpose(self.features, strides=2, dtype=self.dtype)(x), train)
    pad_h, pad_w = size[0] - x.shape[1], size[1] - x.shape[2]
    return jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode='edge')


class ResizeUpsample(Upsample):
  """Bilinear resize to the target size, then 3x3 conv - norm - act."""

  @nn.compact
  def __call__(self, x: jax.Array, size: tuple[int, int], train: bool) -> jax.Array:
    x = jax.image.resize(x, (x.shape[0], *size, x.shape[3]), 'bilinear')
    return self.cna(conv(self.features, 3, dtype=self.dtype)(x), train)


UPSAMPLE: dict[str, type[Upsample]] = {
    'transpose': TransposeUpsample,
    'resize': ResizeUpsample,
}


class Merge(nn.Module):
  """Fields shared by every skip merge: (upsampled x, encoder output at its size) -> x."""
  norm: str = 'batch'
  dtype: Dtype = jnp.float32


class NoSkip(Merge):
  """Drops the encoder output: a plain encoder-decoder."""

  def __call__(self, x: jax.Array, skip: jax.Array, train: bool) -> jax.Array:
    return x


class ConcatSkip(Merge):
  """U-Net: channels side by side; the decoder's first cell mixes them."""

  def __call__(self, x: jax.Array, skip: jax.Array, train: bool) -> jax.Array:
    return jnp.concatenate([x, skip.astype(x.dtype)], axis=-1)


class AddSkip(Merge):
  """Sum, as in LinkNet; a linear 1x1 conv-norm projects the skip when the widths differ."""

  @nn.compact
  def __call__(self, x: jax.Array, skip: jax.Array, train: bool) -> jax.Array:
    if skip.shape[-1] != x.shape[-1]:
      skip = ConvNormAct(x.shape[-1], 1, norm=self.norm, activation=None,
                         dtype=self.dtype)(skip, train)
    return x + skip.astype(x.dtype)


SKIPS: dict[str, type[Merge]] = {
    'none': NoSkip,
    'concat': ConcatSkip,
    'add': AddSkip,
}
