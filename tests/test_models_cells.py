"""Cells, attention and downsampling ops: shapes, gradients, train/eval, bfloat16."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.cells import ATTENTION, CELLS, DOWNSAMPLE, soft_threshold
from models.layers import ACTIVATIONS, NORMS, group_count

WIDTH = 8
SIZE = 8


def _key(seed):
  # Compiling threefry initialisers takes seconds on CPU; rbg keys take a fraction.
  return jax.random.key(seed, impl='rbg')


def _x(channels=WIDTH, size=SIZE, batch=2, seed=0):
  return jax.random.normal(_key(seed), (batch, size, size, channels))


# id -> (module factory taking dtype and norm, whether it takes `train`, expected shape).
def _cell(name, **kwargs):
  return lambda dtype, norm: CELLS[name](WIDTH, norm=norm, dtype=dtype, **kwargs)


CASES = {f'cell-{name}': (_cell(name), True, (2, SIZE, SIZE, WIDTH)) for name in CELLS}
CASES.update({
    'cell-conv-k5-d2': (_cell('conv', kernel_size=5, dilation=2), True, (2, SIZE, SIZE, WIDTH)),
    'cell-sep-gelu': (_cell('sep', activation='gelu'), True, (2, SIZE, SIZE, WIDTH)),
    'cell-mbconv-swish-d2': (_cell('mbconv', dilation=2, activation='swish'), True,
                             (2, SIZE, SIZE, WIDTH)),
})
CASES.update({f'attention-{name}': (lambda dtype, norm, c=cls: c(dtype=dtype), False,
                                    (2, SIZE, SIZE, WIDTH))
              for name, cls in ATTENTION.items()})
CASES.update({f'down-{name}': (lambda dtype, norm, c=cls: c(WIDTH, norm=norm, dtype=dtype), True,
                               (2,) + (SIZE if name == 'none' else SIZE // 2,) * 2 + (WIDTH,))
              for name, cls in DOWNSAMPLE.items()})

# Modules with BatchNorm, i.e. with running statistics, under norm='batch'.
WITH_BATCH_STATS = {k for k in CASES if k.startswith('cell-') and k not in (
    'cell-maxpool', 'cell-avgpool', 'cell-identity')} | {'down-conv'}


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _apply(module, variables, x, takes_train, train):
  kwargs = {'train': train} if takes_train else {}
  return module.apply(variables, x, mutable=['batch_stats'], **kwargs)


@functools.partial(jax.jit, static_argnums=(0, 2))
def _init(module, x, takes_train):
  kwargs = {'train': False} if takes_train else {}
  return module.init(_key(1), x, **kwargs)


def test_registries_have_the_agreed_names():
  assert set(CELLS) == {'conv', 'sep', 'mbconv', 'esp', 'residual', 'shrinkage',
                        'maxpool', 'avgpool', 'identity'}
  assert set(ATTENTION) == {'none', 'se', 'cbam'}
  assert set(DOWNSAMPLE) == {'none', 'max', 'avg', 'conv'}
  assert set(NORMS) == {'batch', 'group'}
  assert set(ACTIVATIONS) == {'relu', 'gelu', 'swish'}


@pytest.mark.parametrize('case', sorted(CASES))
def test_shape_gradients_and_train_eval(case):
  factory, takes_train, shape = CASES[case]
  module = factory(jnp.float32, 'batch')
  x = _x()
  variables = _init(module, x, takes_train)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  assert ('batch_stats' in variables) == (case in WITH_BATCH_STATS)

  out, _ = _apply(module, variables, x, takes_train, train=True)
  assert out.shape == shape
  assert out.dtype == jnp.float32

  weights = jax.random.normal(_key(2), shape)

  def loss(params, x):
    out, _ = _apply(module, {**variables, 'params': params}, x, takes_train, train=True)
    return jnp.sum(out * weights)

  params = variables.get('params', {})
  grads, grad_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
  assert jax.tree.map(jnp.shape, grads) == jax.tree.map(jnp.shape, params)
  assert grad_x.shape == x.shape
  for g in jax.tree.leaves((grads, grad_x)):
    assert np.all(np.isfinite(g))
    assert np.any(g != 0), 'a parameter or the input does not reach the output'

  # Eval mode: deterministic, per-example (running averages), statistics untouched.
  eval_out, eval_updates = _apply(module, variables, x, takes_train, train=False)
  again, _ = _apply(module, variables, x, takes_train, train=False)
  np.testing.assert_array_equal(eval_out, again)
  other = x.at[1].set(_x(seed=3)[1])
  other_out, _ = _apply(module, variables, other, takes_train, train=False)
  np.testing.assert_allclose(other_out[0], eval_out[0], rtol=1e-5, atol=1e-5)
  if case in WITH_BATCH_STATS:
    for new, old in zip(jax.tree.leaves(eval_updates['batch_stats']),
                        jax.tree.leaves(variables['batch_stats'])):
      np.testing.assert_array_equal(new, old)
    _, train_updates = _apply(module, variables, x, takes_train, train=True)
    for new, old in zip(jax.tree.leaves(train_updates['batch_stats']),
                        jax.tree.leaves(variables['batch_stats'])):
      assert not np.allclose(new, old)
    # Training normalises with batch statistics, so it differs from evaluation.
    assert not np.allclose(out, eval_out, atol=1e-3)
  else:
    assert eval_updates == {}
    np.testing.assert_allclose(out, eval_out, rtol=1e-6)


@pytest.mark.parametrize('case', sorted(CASES))
def test_bfloat16_computes_the_same_function(case):
  factory, takes_train, shape = CASES[case]
  x = _x()
  full = factory(jnp.float32, 'batch')
  half = factory(jnp.bfloat16, 'batch')
  variables = _init(full, x, takes_train)  # The same parameters, already compiled.
  # bf16 input too, so that parameter-free ops are exercised in bf16.
  out_half, _ = _apply(half, variables, x.astype(jnp.bfloat16), takes_train, train=False)
  out_full, _ = _apply(full, variables, x, takes_train, train=False)
  assert out_half.dtype == jnp.bfloat16
  assert out_half.shape == shape
  scale = float(jnp.max(jnp.abs(out_full))) + 1e-3
  np.testing.assert_allclose(out_half.astype(jnp.float32), out_full, atol=0.05 * scale)


@pytest.mark.parametrize('name', sorted(CELLS.keys() - {'maxpool', 'avgpool', 'identity'}))
def test_group_norm_cells_have_no_batch_stats_and_train_equals_eval(name):
  module = CELLS[name](WIDTH, norm='group')
  x = _x()
  variables = _init(module, x, True)
  assert 'batch_stats' not in variables
  train_out, _ = _apply(module, variables, x, True, True)
  eval_out, _ = _apply(module, variables, x, True, False)
  np.testing.assert_allclose(train_out, eval_out, rtol=1e-6)


@pytest.mark.parametrize('name', sorted(CELLS))
def test_cells_project_other_input_widths(name):
  module = CELLS[name](WIDTH, kernel_size=3)
  x = _x(channels=5)
  out = jax.eval_shape(lambda x: module.init_with_output(_key(0), x, train=False)[0],
                       x)
  assert out.shape == (2, SIZE, SIZE, WIDTH)


def test_esp_splits_widths_not_divisible_by_four_and_rejects_too_narrow():
  def out_shape(width):
    module = CELLS['esp'](width)
    x = jax.ShapeDtypeStruct((2, SIZE, SIZE, width), jnp.float32)
    return jax.eval_shape(
        lambda x: module.init_with_output(_key(0), x, train=False)[0], x).shape

  assert out_shape(10) == (2, SIZE, SIZE, 10)
  with pytest.raises(ValueError, match='esp'):
    out_shape(3)


def test_soft_threshold_zeroes_small_entries_and_shrinks_the_rest():
  x = jnp.array([[-3.0, -0.5, 0.0, 0.4, 1.0, 2.5],
                 [-3.0, -0.5, 0.0, 0.4, 1.0, 2.5]])
  tau = jnp.array([[0.5], [1.5]])  # One threshold per row, broadcast like the channel taus.
  expected = jnp.array([[-2.5, 0.0, 0.0, 0.0, 0.5, 2.0],
                        [-1.5, 0.0, 0.0, 0.0, 0.0, 1.0]])
  np.testing.assert_array_equal(soft_threshold(x, tau), expected)


@pytest.mark.parametrize('name', sorted(DOWNSAMPLE))
def test_downsample_output_size_matches_the_op(name):
  for size in range(2, 10):
    module = DOWNSAMPLE[name](WIDTH)
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    out = jax.eval_shape(
        lambda x: module.init_with_output(_key(0), x, train=False)[0], x)
    expected = DOWNSAMPLE[name].output_size(size)
    assert out.shape[1:3] == (expected, expected), (name, size)
    assert expected == (size if name == 'none' else size // 2)


def test_batch_norm_running_statistics_use_momentum_point_nine():
  x = _x(channels=3, size=2, batch=4)
  bn = NORMS['batch'](3, True, jnp.float32)
  variables = bn.init(_key(0), x)
  _, updates = bn.apply(variables, x, mutable=['batch_stats'])
  stats = updates['batch_stats']
  np.testing.assert_allclose(stats['mean'], 0.1 * x.mean(axis=(0, 1, 2)), rtol=1e-5)
  np.testing.assert_allclose(stats['var'], 0.9 + 0.1 * x.var(axis=(0, 1, 2)), rtol=1e-5)


def test_group_norm_normalises_each_group_of_each_example():
  x = _x(channels=12, size=4, batch=2) * 3 + 1
  gn = NORMS['group'](12, True, jnp.float32)
  out = gn.apply(gn.init(_key(0), x), x)
  groups = out.reshape(2, 4, 4, 6, 2)  # 12 channels -> 6 groups of 2.
  np.testing.assert_allclose(groups.mean(axis=(1, 2, 4)), 0, atol=1e-5)
  np.testing.assert_allclose(groups.var(axis=(1, 2, 4)), 1, atol=1e-3)


def test_group_count_is_the_largest_divisor_up_to_eight():
  assert [group_count(c) for c in (1, 4, 6, 7, 8, 9, 10, 11, 12, 16, 24)] == [
      1, 4, 6, 7, 8, 3, 5, 1, 6, 8, 8]
