"""Convolutions, norms and activations: the only place that creates them.

Every cell builds its layers through `conv`, `NORMS` and `ACTIVATIONS`, so that a
different convolution (e.g. a faster CPU kernel) or norm is swapped in here once.
Computation runs in `dtype`; parameters are always float32.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import cpu_ops
from models import onednn

Dtype = Any
Padding = str | Sequence[tuple[int, int]]

# He initialisation: every conv is followed by a norm and a ReLU-like activation.
_CONV_INIT = nn.initializers.he_normal()


class Conv(nn.Module):
  """A 2D convolution with nn.Conv's parameters, and faster formulations on CPU.

  On CPU, 1x1 convolutions are models.cpu_ops's matmul (no transposed copies in the kernel
  gradient) and every other float32 convolution is oneDNN's (models.onednn: pass for pass up
  to 3x faster than XLA's for 16-64 channels, 2-7x for depthwise ones, no faster at 128
  channels; benchmarks/RESULTS.md). Where oneDNN cannot be built, stride-1 depthwise
  convolutions take cpu_ops's shifted slices (4-10x faster than XLA's grouped convolution).
  Everything else, and every convolution on an accelerator, is `lax.conv_general_dilated`.
  """
  features: int
  kernel_size: int
  strides: int = 1
  dilation: int = 1
  groups: int = 1
  padding: Padding = 'SAME'
  use_bias: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param('kernel', _CONV_INIT,
                        (k, k, x.shape[-1] // self.groups, self.features), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    depthwise = self.groups == x.shape[-1] == self.features
    strides, dilation = (self.strides,) * 2, (self.dilation,) * 2
    cpu = jax.default_backend() == 'cpu'
    if (cpu and k == 1 and self.strides == 1 and self.groups == 1
        and self.padding in ('SAME', 'VALID')):  # explicit padding would grow the output
      y = cpu_ops.pointwise(x, kernel)
    elif cpu and onednn.usable(x.dtype):
      y = onednn.conv(x, kernel, strides, self.padding, dilation, self.groups)
    elif cpu and depthwise and self.strides == 1 and self.padding == 'SAME':
      y = cpu_ops.depthwise_shifted(x, kernel, self.dilation)
    else:
      y = jax.lax.conv_general_dilated(
          x, kernel, strides, self.padding, rhs_dilation=dilation,
          dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=self.groups)
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
    return y.astype(self.dtype)


def conv(features: int,
         kernel_size: int,
         *,
         strides: int = 1,
         dilation: int = 1,
         groups: int = 1,
         padding: Padding = 'SAME',
         use_bias: bool = False,
         dtype: Dtype = jnp.float32) -> nn.Module:
  """A 2D convolution; bias off by default because a norm follows."""
  return Conv(features, kernel_size, strides=strides, dilation=dilation, groups=groups,
              padding=padding, use_bias=use_bias, dtype=dtype)


class ConvTranspose(nn.Module):
  """A learned upsampling by `strides` with a `strides` x `strides` kernel ('VALID').

  With kernel size equal to the stride each input pixel paints its own block of the output,
  so the transposed convolution is one matmul and a depth-to-space reshape: exactly
  nn.ConvTranspose (same parameter name and layout), several times faster to train on CPU.
  """
  features: int
  strides: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    s = self.strides
    kernel = self.param('kernel', _CONV_INIT, (s, s, x.shape[-1], self.features), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    # nn.ConvTranspose (lax.conv_transpose without transpose_kernel) flips the kernel.
    y = jnp.einsum('bhwc,ijcf->bhiwjf', x, jnp.flip(kernel, (0, 1)))
    b, h, _, w, _, f = y.shape
    return y.reshape(b, h * s, w * s, f)


def conv_transpose(features: int, *, strides: int, dtype: Dtype = jnp.float32) -> nn.Module:
  """A learned upsampling by `strides`: exactly `strides` * n pixels from n."""
  return ConvTranspose(features, strides, dtype=dtype)


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max pooling, stride 2, VALID (an odd last row or column is dropped).

  A reshape and a max: its gradient is elementwise and fuses, where XLA's CPU lowering of
  reduce-window's gradient (iotas and a scatter) made nn.max_pool 6x slower to train.
  """
  b, h, w, c = x.shape
  x = x[:, :h // 2 * 2, :w // 2 * 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def max_pool_3x3(x: jax.Array) -> jax.Array:
  """3x3 max pooling, stride 1, 'SAME' (padding never wins): the max of 9 shifted copies,
  for the reason of max_pool_2x2."""
  h, w = x.shape[1], x.shape[2]
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
  taps = [padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)]
  return functools.reduce(jnp.maximum, taps)


def group_count(channels: int, max_groups: int = 8) -> int:
  """The largest number of groups <= max_groups that divides `channels`."""
  return max(g for g in range(1, max_groups + 1) if channels % g == 0)


class BatchNorm(nn.Module):
  """nn.BatchNorm (momentum 0.9, fast variance; same parameters and batch_stats), whose
  training statistics and their gradients are models.cpu_ops.batch_norm_train."""
  use_running_average: bool
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (channels,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (channels,), jnp.float32)
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, (channels,), jnp.float32)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, (channels,), jnp.float32)
    x = x.astype(self.dtype)
    if self.use_running_average:
      inv = jax.lax.rsqrt(ra_var.value + self.epsilon)
      return ((x - ra_mean.value) * (inv * scale) + bias).astype(self.dtype)
    y, mean, var = cpu_ops.batch_norm_train(x, scale, bias, self.epsilon)
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y


def batch_norm(channels: int, train: bool, dtype: Dtype) -> nn.Module:
  del channels  # BatchNorm infers it.
  return BatchNorm(use_running_average=not train, dtype=dtype)


def group_norm(channels: int, train: bool, dtype: Dtype) -> nn.Module:
  del train  # Statistics are per example: the same in training and evaluation.
  return nn.GroupNorm(
      num_groups=group_count(channels), epsilon=1e-5, dtype=dtype,
      param_dtype=jnp.float32)


# name -> factory(channels, train, dtype) returning a norm module.
NORMS: dict[str, Callable[[int, bool, Dtype], nn.Module]] = {
    'batch': batch_norm,
    'group': group_norm,
}

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    'relu': nn.relu,
    'gelu': nn.gelu,
    'swish': nn.swish,
}


class ConvNormAct(nn.Module):
  """conv - norm - activation; `activation=None` leaves the output linear."""
  features: int
  kernel_size: int = 1
  strides: int = 1
  dilation: int = 1
  groups: int = 1
  padding: Padding = 'SAME'
  norm: str = 'batch'
  activation: str | None = 'relu'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = conv(self.features, self.kernel_size, strides=self.strides,
             dilation=self.dilation, groups=self.groups, padding=self.padding,
             dtype=self.dtype)(x)
    x = NORMS[self.norm](self.features, train, self.dtype)(x)
    if self.activation is None:
      return x
    return ACTIVATIONS[self.activation](x)
