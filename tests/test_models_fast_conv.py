"""The CPU fast path for depthwise convolutions agrees with lax.conv, forward and backward."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import layers


def _reference(x, kernel, dilation):
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1), 'SAME', rhs_dilation=(dilation, dilation),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=x.shape[-1])


@pytest.mark.parametrize('kernel_size, dilation, size', [(3, 1, 9), (5, 1, 8), (3, 2, 8),
                                                         (5, 2, 7), (7, 3, 12)])
def test_depthwise_shifted_matches_lax_conv(kernel_size, dilation, size):
  kx, kk, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (2, size, size, 6))
  kernel = jax.random.normal(kk, (kernel_size, kernel_size, 1, 6))
  cotangent = jax.random.normal(kg, x.shape)

  def loss(f):
    return lambda x, kernel: jnp.sum(f(x, kernel, dilation) * cotangent)

  fast = layers.depthwise_shifted(x, kernel, dilation)
  np.testing.assert_allclose(fast, _reference(x, kernel, dilation), rtol=1e-4, atol=1e-4)
  for got, want in zip(jax.grad(loss(layers.depthwise_shifted), argnums=(0, 1))(x, kernel),
                       jax.grad(loss(_reference), argnums=(0, 1))(x, kernel)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(jnp.abs(want).max()))


def test_conv_module_takes_the_fast_path_with_nn_conv_parameters():
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 4))
  module = layers.conv(4, 3, groups=4, dilation=2)
  variables = module.init(jax.random.key(2), x)
  assert variables['params']['kernel'].shape == (3, 3, 1, 4)
  lowered = jax.jit(module.apply).lower(variables, x).as_text()
  assert ('convolution' not in lowered) == (jax.default_backend() == 'cpu')
  np.testing.assert_allclose(module.apply(variables, x),
                             _reference(x, variables['params']['kernel'], 2),
                             rtol=1e-4, atol=1e-4)
