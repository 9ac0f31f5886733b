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
  return nn.Conv(
      features,
      (kernel_size, kernel_size),
      strides=(strides, strides),
      padding=padding,
      kernel_dilation=(dilation, dilation),
      feature_group_count=groups,
      use_bias=use_bias,
      kernel_init=_CONV_INIT,
      dtype=dtype,
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
