"""Convolutions, norms and activations: the only place that creates them.

Every cell builds its layers through `conv`, `NORMS` and `ACTIVATIONS`, so that a
different convolution (e.g. a faster CPU kernel) or norm is swapped in here once.
Computation runs in `dtype`; parameters are always float32.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
Padding = str | Sequence[tuple[int, int]]

# He initialisation: every conv is followed by a norm and a ReLU-like activation.
_CONV_INIT = nn.initializers.he_normal()


class Conv(nn.Module):
  """A 2D convolution with nn.Conv's parameters, and a fast depthwise path on CPU.

  XLA's CPU backend runs depthwise (grouped) convolutions and their gradients 5-20x slower
  than the same arithmetic written as k*k shifted slices multiplied and summed, which it
  fuses into a few loops; accelerators keep `lax.conv_general_dilated`.
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
    if (depthwise and self.strides == 1 and self.padding == 'SAME'
        and jax.default_backend() == 'cpu'):
      y = depthwise_shifted(x, kernel, self.dilation)
    else:
      y = jax.lax.conv_general_dilated(
          x, kernel, (self.strides, self.strides), self.padding,
          rhs_dilation=(self.dilation, self.dilation),
          dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=self.groups)
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
    return y.astype(self.dtype)


def depthwise_shifted(x: jax.Array, kernel: jax.Array, dilation: int) -> jax.Array:
  """A stride-1 'SAME' depthwise convolution as a sum of shifted, scaled copies of `x`.

  Args:
    x: (B, H, W, C).
    kernel: (k, k, 1, C).
    dilation: spacing of the kernel taps.
  """
  k = kernel.shape[0]
  total = dilation * (k - 1)
  low = total // 2
  padded = jnp.pad(x, ((0, 0), (low, total - low), (low, total - low), (0, 0)))
  h, w = x.shape[1], x.shape[2]
  out = None
  for i in range(k):
    for j in range(k):
      tap = padded[:, i * dilation:i * dilation + h, j * dilation:j * dilation + w, :]
      term = tap * kernel[i, j, 0]
      out = term if out is None else out + term
  return out


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


def conv_transpose(features: int, kernel_size: int, *, strides: int,
                   dtype: Dtype = jnp.float32) -> nn.Module:
  """A learned upsampling by `strides`; 'VALID' so that k = s gives exactly s * n pixels."""
  return nn.ConvTranspose(features, (kernel_size, kernel_size), strides=(strides, strides),
                          padding='VALID', use_bias=False, kernel_init=_CONV_INIT, dtype=dtype,
                          param_dtype=jnp.float32)


def group_count(channels: int, max_groups: int = 8) -> int:
  """The largest number of groups <= max_groups that divides `channels`."""
  return max(g for g in range(1, max_groups + 1) if channels % g == 0)


def batch_norm(channels: int, train: bool, dtype: Dtype) -> nn.Module:
  del channels  # BatchNorm infers it.
  return nn.BatchNorm(
      use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
      param_dtype=jnp.float32)


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
