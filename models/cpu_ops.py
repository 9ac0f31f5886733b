"""Operations written for XLA's CPU backend, where its own formulations are slow to train.

XLA's CPU compiler splits every reduction over more than 32 elements of a dimension into an
unfused reduce-window and a reduce, so each per-channel sum over a batch of feature maps
(batch-norm statistics and their gradients, a depthwise kernel's gradient) becomes its own
pass over memory. `channel_sums` instead sums a few images at a time, small enough to stay
in cache, with one variadic reduction (which XLA leaves whole) for several sums at once.
On other backends, and where the batch is sharded over several devices (a scan over its
chunks would gather it), it is a plain sum.

Each function computes exactly what its reference does (lax.conv_general_dilated,
nn.BatchNorm's training statistics) and is tested against it forward and backward
(tests/test_models_fast_conv.py); measured in benchmarks/conv_layers.py and train_step.py.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

# Bytes of one input array per chunk of images: two or three such chunks and the products
# formed from them stay in a 2-core machine's L2/L3 cache (measured: 1-16 images of 64x64x32
# float32, fastest at 2 MiB).
_CHUNK_BYTES = 2 * 2**20


def _chunk(batch: int, bytes_per_image: int) -> int:
  """The largest divisor of `batch` whose images fit in _CHUNK_BYTES (at least 1)."""
  fits = max(1, _CHUNK_BYTES // max(1, bytes_per_image))
  return max(d for d in range(1, min(batch, fits) + 1) if batch % d == 0)


def channel_sums(terms: Callable[..., tuple[jax.Array, ...]], *arrays: jax.Array
                 ) -> tuple[jax.Array, ...]:
  """Per-channel sums over batch and space of every array `terms(*arrays)` returns.

  Args:
    terms: maps the (B, H, W, C) `arrays` (or any chunk of their batch) to a tuple of
      (b, h, w, C) float32 arrays formed elementwise, e.g. (x, x * x).
    *arrays: the inputs, sharing their batch size.

  Returns:
    One (C,) float32 sum per term.
  """
  if jax.default_backend() != 'cpu' or jax.device_count() > 1:
    return tuple(jnp.sum(t, axis=(0, 1, 2)) for t in terms(*arrays))
  batch = arrays[0].shape[0]
  chunk = _chunk(batch, max(a[0].size * a.dtype.itemsize for a in arrays))
  chunks = tuple(a.reshape(batch // chunk, chunk, *a.shape[1:]) for a in arrays)

  def add_chunk(totals, inputs):
    parts = terms(*inputs)
    sums = jax.lax.reduce(parts, (jnp.float32(0),) * len(parts),
                          lambda a, b: tuple(x + y for x, y in zip(a, b)), (0, 1, 2))
    return tuple(t + s for t, s in zip(totals, sums)), None

  shapes = jax.eval_shape(terms, *(c[0] for c in chunks))
  zeros = tuple(jnp.zeros(s.shape[-1:], jnp.float32) for s in shapes)
  totals, _ = jax.lax.scan(add_chunk, zeros, chunks)
  return totals


def pointwise(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """A 1x1 convolution as one matmul over the flattened pixels: its kernel gradient is one
  matmul too, where XLA's convolution gradient transposes both operands first.

  Args:
    x: (B, H, W, C).
    kernel: (1, 1, C, F).
  """
  return (x.reshape(-1, x.shape[-1]) @ kernel[0, 0]).reshape(*x.shape[:-1], kernel.shape[-1])


def _same_pads(k: int, dilation: int) -> tuple[int, int]:
  """(low, high) padding of a stride-1 'SAME' convolution, as XLA pads."""
  total = dilation * (k - 1)
  return total // 2, total - total // 2


def _taps(x: jax.Array, k: int, dilation: int, pads: tuple[int, int]) -> list[jax.Array]:
  """The k*k shifted copies of `x` under a stride-1 kernel's taps, row-major, with `pads`
  (low, high) on both spatial axes."""
  padded = jnp.pad(x, ((0, 0), pads, pads, (0, 0)))
  h, w = x.shape[1], x.shape[2]
  return [padded[:, i * dilation:i * dilation + h, j * dilation:j * dilation + w, :]
          for i in range(k) for j in range(k)]


def _depthwise(x: jax.Array, kernel: jax.Array, dilation: int,
               pads: tuple[int, int]) -> jax.Array:
  k = kernel.shape[0]
  taps = _taps(x, k, dilation, pads)
  return functools.reduce(jnp.add, (t * kernel[i // k, i % k, 0] for i, t in enumerate(taps)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def depthwise_shifted(x: jax.Array, kernel: jax.Array, dilation: int) -> jax.Array:
  """A stride-1 'SAME' depthwise convolution as a sum of shifted, scaled copies of `x`.

  Its input gradient is the same sum over the output gradient with the kernel flipped (one
  fused loop, where differentiating the slices gives k*k pads), and its kernel gradient one
  `channel_sums` over all k*k taps instead of k*k passes.

  Args:
    x: (B, H, W, C).
    kernel: (k, k, 1, C).
    dilation: spacing of the kernel taps.
  """
  return _depthwise(x, kernel, dilation, _same_pads(kernel.shape[0], dilation))


def _depthwise_forward(x, kernel, dilation):
  return depthwise_shifted(x, kernel, dilation), (x, kernel)


def _depthwise_backward(dilation, residuals, g):
  x, kernel = residuals
  k = kernel.shape[0]
  low, high = _same_pads(k, dilation)
  # The transpose of a correlation padded (low, high) correlates with the flipped kernel,
  # padded (high, low).
  input_grad = _depthwise(g, jnp.flip(kernel, (0, 1)), dilation, (high, low))

  def tap_products(x, g):
    return tuple((t * g).astype(jnp.float32) for t in _taps(x, k, dilation, (low, high)))

  sums = channel_sums(tap_products, x, g)
  kernel_grad = jnp.stack(sums).reshape(kernel.shape).astype(kernel.dtype)
  return input_grad.astype(x.dtype), kernel_grad


depthwise_shifted.defvjp(_depthwise_forward, _depthwise_backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Batch normalisation with the batch's statistics, as nn.BatchNorm in training.

  Args:
    x: (B, H, W, C), any float dtype; statistics are float32.
    scale, bias: (C,) float32.
    epsilon: added to the variance.

  Returns:
    (normalised x in x's dtype, batch mean, biased batch variance), the last two (C,).
  """
  return _batch_norm_forward(x, scale, bias, epsilon)[0]


def _statistics(x):
  n = x.size // x.shape[-1]
  total, squares = channel_sums(
      lambda x: (x.astype(jnp.float32), jnp.square(x.astype(jnp.float32))), x)
  mean = total / n
  # E[x^2] - E[x]^2, as nn.BatchNorm's default fast variance.
  return mean, jnp.maximum(squares / n - jnp.square(mean), 0.0)


def _batch_norm_forward(x, scale, bias, epsilon):
  mean, var = _statistics(x)
  inv = jax.lax.rsqrt(var + epsilon)
  y = ((x.astype(jnp.float32) - mean) * (inv * scale) + bias).astype(x.dtype)
  return (y, mean, var), (x, mean, inv, scale)


def _batch_norm_backward(epsilon, residuals, cotangents):
  del epsilon
  x, mean, inv, scale = residuals
  g, g_mean, g_var = cotangents
  n = x.size // x.shape[-1]
  g_bias, g_x = channel_sums(
      lambda x, g: (g.astype(jnp.float32), g.astype(jnp.float32) * x.astype(jnp.float32)),
      x, g)
  g_scale = (g_x - mean * g_bias) * inv
  x_hat = (x.astype(jnp.float32) - mean) * inv
  g_input = (scale * inv / n) * (n * g.astype(jnp.float32) - g_bias - x_hat * g_scale)
  # The statistics' own cotangents (zero when they only update running averages).
  g_input += (g_mean + 2.0 * g_var * (x.astype(jnp.float32) - mean)) / n
  return g_input.astype(x.dtype), g_scale, g_bias


batch_norm_train.defvjp(_batch_norm_forward, _batch_norm_backward)
