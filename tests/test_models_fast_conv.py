"""The CPU formulations of models.cpu_ops, models.onednn and models.layers agree with XLA's
and Flax's, forward and backward (gradients within 1e-4 relative), and the CPU compiler
options change no result."""
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import compiler
from models import cpu_ops
from models import layers
from models import onednn


def _reference(x, kernel, dilation=1, strides=1, padding='SAME', groups=1):
  return jax.lax.conv_general_dilated(
      x, kernel, (strides, strides), padding, rhs_dilation=(dilation, dilation),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=groups)


def _assert_close(got, want):
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * float(jnp.abs(w).max()))


def _assert_same_function(fast, reference, *args):
  """Equal outputs (any tree of arrays), and equal gradients of a random linear function of
  all the outputs."""
  want = reference(*args)
  _assert_close(fast(*args), want)
  keys = jax.random.split(jax.random.key(7), len(jax.tree.leaves(want)))
  cotangents = [jax.random.normal(k, w.shape) for k, w in zip(keys, jax.tree.leaves(want))]

  def loss(f):
    return lambda *a: sum(jnp.sum(o * c) for o, c in zip(jax.tree.leaves(f(*a)), cotangents))

  argnums = tuple(range(len(args)))
  _assert_close(jax.grad(loss(fast), argnums)(*args), jax.grad(loss(reference), argnums)(*args))


def _inputs(batch, size, channels, kernel_shape):
  kx, kk = jax.random.split(jax.random.key(0))
  return (jax.random.normal(kx, (batch, size, size, channels)),
          jax.random.normal(kk, kernel_shape) * 0.3)


@pytest.mark.parametrize('kernel_size, dilation, size', [
    (3, 1, 9), (5, 1, 8), (3, 2, 8), (5, 2, 7), (7, 3, 12),
    (4, 1, 7), (2, 3, 9)])  # even kernels pad unevenly
def test_depthwise_shifted_matches_lax_conv(kernel_size, dilation, size):
  x, kernel = _inputs(2, size, 6, (kernel_size, kernel_size, 1, 6))
  _assert_same_function(lambda x, k: cpu_ops.depthwise_shifted(x, k, dilation),
                        lambda x, k: _reference(x, k, dilation, groups=6), x, kernel)


@pytest.mark.parametrize('strides', [2, 3])
def test_conv_transpose_is_nn_conv_transpose(strides):
  x = jax.random.normal(jax.random.key(1), (2, 5, 6, 3))
  reference = nn.ConvTranspose(4, (strides, strides), strides=(strides, strides),
                               padding='VALID', use_bias=False)
  fast = layers.conv_transpose(4, strides=strides)
  variables = fast.init(jax.random.key(2), x)
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(
      jnp.shape, reference.init(jax.random.key(2), x))
  _assert_same_function(lambda x, v: fast.apply(v, x), lambda x, v: reference.apply(v, x),
                        x, variables)


def test_pointwise_matches_lax_conv():
  x, kernel = _inputs(3, 5, 4, (1, 1, 4, 7))
  _assert_same_function(cpu_ops.pointwise, _reference, x, kernel)


def test_pointwise_conv_with_explicit_padding_pads():
  # The matmul path would ignore the padding and return a 5x5 output instead of 6x6.
  x = jax.random.normal(jax.random.key(1), (2, 5, 5, 3))
  padding = ((0, 1), (0, 1))
  module = layers.conv(4, 1, padding=padding)
  variables = module.init(jax.random.key(2), x)
  _assert_same_function(
      lambda x, v: module.apply(v, x),
      lambda x, v: _reference(x, v['params']['kernel'], padding=padding), x, variables)


_NO_ONEDNN = pytest.mark.skipif(
    not onednn.available(), reason='oneDNN custom calls not built: install requirements.txt '
    '(onednn-devel-cpu-gomp) and g++')


@_NO_ONEDNN
@pytest.mark.parametrize('channels, size, features, kernel_size, strides, dilation, groups, '
                         'padding', [
    (3, 17, 8, 3, 1, 1, 1, 'SAME'),  # an RGB stem, odd size
    (8, 16, 16, 3, 2, 1, 1, 'SAME'),  # stride 2: asymmetric padding
    (8, 15, 8, 3, 1, 2, 8, 'SAME'),  # dilated depthwise
    (8, 16, 16, 5, 2, 1, 8, 'SAME'),  # grouped, two outputs per group, stride 2
    (6, 12, 4, 3, 1, 1, 2, ((2, 0), (1, 3))),  # explicit padding
    (4, 9, 5, 3, 1, 3, 1, 'VALID'),
])
def test_onednn_conv_matches_lax_conv(channels, size, features, kernel_size, strides,
                                      dilation, groups, padding):
  x, kernel = _inputs(3, size, channels, (kernel_size, kernel_size, channels // groups,
                                          features))
  _assert_same_function(
      jax.jit(lambda x, k: onednn.conv(x, k, (strides,) * 2, padding, (dilation,) * 2, groups)),
      lambda x, k: _reference(x, k, dilation, strides, padding, groups), x, kernel)


@_NO_ONEDNN
def test_conv_module_uses_onednn_on_cpu_unless_switched_off(monkeypatch):
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 4))
  module = layers.conv(8, 3, strides=2)
  variables = module.init(jax.random.key(2), x)

  def backward_hlo():
    return jax.jit(jax.grad(lambda v: jnp.sum(module.apply(v, x) ** 2))).lower(
        variables).as_text()
  assert 'mednas_onednn_kernel_grad' in backward_hlo()
  monkeypatch.setenv('MEDNAS_CPU_CONV', 'xla')
  assert 'mednas_onednn' not in backward_hlo()


@pytest.mark.parametrize('kernel_size, groups', [(1, 1), (3, 4)])
def test_conv_module_takes_the_cpu_paths_with_nn_conv_parameters(kernel_size, groups):
  # On CPU 1x1 convolutions are matmuls, depthwise ones oneDNN's or shifted slices.
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 4))
  module = layers.conv(4, kernel_size, groups=groups, dilation=2)
  variables = module.init(jax.random.key(2), x)
  assert variables['params']['kernel'].shape == (kernel_size, kernel_size, 4 // groups, 4)
  backward = jax.jit(jax.value_and_grad(lambda v, x: jnp.sum(module.apply(v, x) ** 2),
                                        (0, 1))).lower(variables, x).as_text()
  assert ('convolution' not in backward) == (jax.default_backend() == 'cpu')
  _assert_same_function(lambda x, v: module.apply(v, x),
                        lambda x, v: _reference(x, v['params']['kernel'], 2, groups=groups),
                        x, variables)


@pytest.mark.parametrize('purpose', compiler.PURPOSES)
def test_compiler_options_are_accepted_and_change_no_result(purpose):
  # An option name the pinned jaxlib does not know fails compilation here, not in a search.
  x, kernel = _inputs(2, 8, 3, (3, 3, 3, 4))
  step = jax.grad(lambda x, k: jnp.sum(jnp.tanh(_reference(x, k)) ** 2), (0, 1))
  tuned = jax.jit(step, compiler_options=compiler.compiler_options(purpose))
  for got, want in zip(tuned(x, kernel), jax.jit(step)(x, kernel)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_jit_on_first_call_leaves_the_backend_unstarted_until_called():
  # jax.distributed.initialize and the platform flags must come before the backend starts,
  # so importing the modules that hold jitted functions may not start it.
  script = """
from jax._src import xla_bridge
import models.saved, nas.explain, nas.train
from models import compiler
double = compiler.jit_on_first_call(lambda x: 2 * x, 'init')
assert not xla_bridge.backends_are_initialized(), 'started at import'
assert float(double(1.5)) == 3.0
assert xla_bridge.backends_are_initialized()
"""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run([sys.executable, '-c', script], cwd=root, capture_output=True,
                          text=True, check=False)
  assert result.returncode == 0, result.stderr[-2000:]


def test_compiler_options_reject_an_unknown_purpose():
  with pytest.raises(ValueError, match='unknown purpose'):
    compiler.compiler_options('train')


@pytest.mark.parametrize('size', [8, 9])
def test_max_pool_2x2_is_nn_max_pool(size):
  x = jax.random.normal(jax.random.key(3), (2, size, size + 1, 3))
  _assert_same_function(layers.max_pool_2x2,
                        lambda x: nn.max_pool(x, (2, 2), strides=(2, 2), padding='VALID'), x)


def test_max_pool_3x3_is_nn_max_pool():
  x = jax.random.normal(jax.random.key(3), (2, 7, 6, 3)) - 5.0  # negative: padding must lose
  _assert_same_function(layers.max_pool_3x3,
                        lambda x: nn.max_pool(x, (3, 3), strides=(1, 1), padding='SAME'), x)


def test_channel_sums_add_every_chunk_of_the_batch(monkeypatch):
  # One image per chunk: 6 scan steps must add up to the whole batch's sums.
  monkeypatch.setattr(cpu_ops, '_CHUNK_BYTES', 1)
  assert cpu_ops._chunk(6, 100) == 1
  x, y = _inputs(6, 5, 3, (6, 5, 5, 3))
  got = cpu_ops.channel_sums(lambda x, y: (x, x * y), x, y)
  np.testing.assert_allclose(got[0], jnp.sum(x, (0, 1, 2)), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got[1], jnp.sum(x * y, (0, 1, 2)), rtol=1e-5, atol=1e-5)


def test_chunk_is_the_largest_divisor_that_fits():
  assert cpu_ops._chunk(64, cpu_ops._CHUNK_BYTES // 3) == 2
  assert cpu_ops._chunk(64, 1) == 64
  assert cpu_ops._chunk(7, cpu_ops._CHUNK_BYTES // 3) == 1


def _flax_batch_norm(x, scale, bias):
  module = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
  variables = {'params': {'scale': scale, 'bias': bias},
               'batch_stats': {'mean': jnp.zeros_like(scale), 'var': jnp.ones_like(scale)}}
  y, updates = module.apply(variables, x, mutable=['batch_stats'])
  # Undo the running-average update to recover the batch statistics.
  return y, updates['batch_stats']['mean'] / 0.1, (updates['batch_stats']['var'] - 0.9) / 0.1


def test_batch_norm_train_matches_flax_forward_and_backward(monkeypatch):
  monkeypatch.setattr(cpu_ops, '_CHUNK_BYTES', 200)  # several chunks on CPU
  x = jax.random.normal(jax.random.key(4), (4, 6, 5, 3)) * 3.0 + 2.0
  scale = jax.random.normal(jax.random.key(5), (3,))
  bias = jax.random.normal(jax.random.key(6), (3,))
  _assert_same_function(lambda x, s, b: cpu_ops.batch_norm_train(x, s, b, 1e-5),
                        _flax_batch_norm, x, scale, bias)


@pytest.mark.parametrize('train', [True, False])
def test_batch_norm_module_is_nn_batch_norm(train):
  x = jax.random.normal(jax.random.key(4), (4, 6, 5, 3)) * 3.0 + 2.0
  ours, reference = layers.batch_norm(3, train, jnp.float32), nn.BatchNorm(
      use_running_average=not train, momentum=0.9, epsilon=1e-5)
  variables = reference.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)) == jax.tree.map(
      jnp.shape, variables)
  variables = jax.tree.map(lambda v: v + 0.5, variables)  # running statistics matter too
  got, got_updates = ours.apply(variables, x, mutable=['batch_stats'])
  want, want_updates = reference.apply(variables, x, mutable=['batch_stats'])
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  for a, b in zip(jax.tree.leaves(got_updates), jax.tree.leaves(want_updates)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
