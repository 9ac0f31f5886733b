"""The genotype-to-network builder: shapes, feature sizes, dtypes, dropout, hashing."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import models
from models.counting import feature_sizes
from models.genotype import Genotype, Stage
from models.network import StageBlock

NUM_CLASSES = 3


def _key(seed):
  # Compiling threefry initialisers takes seconds on CPU; rbg keys take a fraction.
  return jax.random.key(seed, impl='rbg')


GENOTYPES = {
    'plain': Genotype(
        stages=(Stage(1, 'conv', 3, 8),
                Stage(1, 'sep', 3, 16, downsample='max'),
                Stage(0, width=12, downsample='conv')),
        stem_width=8),
    'group-norm-stride2': Genotype(
        stages=(Stage(2, 'residual', 3, 8, attention='se', downsample='avg'),
                Stage(1, 'esp', 0, 16, attention='cbam', downsample='conv'),
                Stage(1, 'maxpool', width=12, downsample='max')),
        stem_width=8, stem_stride=2, norm='group', activation='gelu', dropout=0.5),
    'stride3': Genotype(
        stages=(Stage(2, 'identity', width=8, downsample='conv'),
                Stage(1, 'mbconv', 5, 8, 2),
                Stage(1, 'shrinkage', 3, 16, downsample='conv'),
                Stage(1, 'avgpool', width=8, downsample='avg')),
        stem_width=8, stem_stride=3, activation='swish'),
}


def _is_feature(module, method_name):
  return method_name == '__call__' and (isinstance(module, StageBlock) or module.name == 'stem')


def _feature_shapes(genotype, size):
  model = models.build(genotype, NUM_CLASSES)

  def features(x):
    variables = model.init(_key(0), x, train=False)
    _, state = model.apply(variables, x, train=False, capture_intermediates=_is_feature,
                           mutable=['intermediates'])
    return state['intermediates']

  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  inter = jax.eval_shape(features, x)
  names = ['stem'] + [f'stage{i}' for i in range(len(genotype.stages))]
  return [inter[name]['__call__'][0].shape for name in names]


@pytest.mark.parametrize('name', sorted(GENOTYPES))
def test_feature_sizes_match_the_built_network(name):
  genotype = GENOTYPES[name]
  checked = 0
  for size in (8, 9, 16, 17, 31, 32, 47, 64):
    expected = feature_sizes(genotype, size)
    if min(expected) < 1:
      continue
    shapes = _feature_shapes(genotype, size)
    assert [s[1] for s in shapes] == expected, size
    assert [s[2] for s in shapes] == expected, size
    widths = [genotype.stem_width] + [s.width for s in genotype.stages]
    assert [s[3] for s in shapes] == widths
    checked += 1
  assert checked >= 4


def test_feature_sizes_by_hand():
  genotype = GENOTYPES['stride3']
  # ceil(17/3) = 6, conv /2 -> 3, none -> 3, conv /2 -> 1, avg /2 -> 0 (invalid).
  assert feature_sizes(genotype, 17) == [6, 3, 3, 1, 0]
  assert feature_sizes(GENOTYPES['plain'], 9) == [9, 9, 4, 2]


def _train_step(model, labels):
  def step(params, batch_stats, x):
    def loss_fn(params):
      logits, updates = model.apply(
          {'params': params, 'batch_stats': batch_stats}, x, train=True,
          rngs={'dropout': _key(2)}, mutable=['batch_stats'])
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, (logits, updates)
    return jax.value_and_grad(loss_fn, has_aux=True)(params)
  return step


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize('name', sorted(GENOTYPES))
def test_train_step_shapes_and_dtypes(name, dtype):
  # Abstract evaluation only: compiling every variant would dominate the test time.
  genotype = GENOTYPES[name]
  model = models.build(genotype, NUM_CLASSES, dtype=dtype)
  x = jax.ShapeDtypeStruct((4, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(_key(1), x, train=False), x)
  stored = {k: v for k, v in variables.items() if k in ('params', 'batch_stats')}
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(stored))
  step = _train_step(model, jnp.array([0, 1, 2, 0]))
  (loss, (logits, updates)), grads = jax.eval_shape(
      step, variables['params'], variables.get('batch_stats', {}), x)
  assert loss.shape == () and loss.dtype == jnp.float32
  assert logits.shape == (4, NUM_CLASSES) and logits.dtype == jnp.float32
  assert jax.tree.map(lambda a: (a.shape, a.dtype), grads) == jax.tree.map(
      lambda a: (a.shape, a.dtype), variables['params'])
  assert bool(updates['batch_stats']) == (genotype.norm == 'batch')


def test_bfloat16_train_step_runs_and_is_finite():
  genotype = GENOTYPES['plain']
  model = models.build(genotype, NUM_CLASSES, dtype=jnp.bfloat16)
  x = jax.random.normal(_key(0), (4, 16, 16, 3))
  variables = jax.jit(lambda x: model.init(_key(1), x, train=False))(x)
  step = jax.jit(_train_step(model, jnp.array([0, 1, 2, 0])))
  (loss, (logits, updates)), grads = step(variables['params'], variables['batch_stats'], x)
  assert logits.dtype == jnp.float32
  assert np.isfinite(loss)
  for g in jax.tree.leaves(grads):
    assert np.all(np.isfinite(g)) and g.dtype == jnp.float32
  for new, old in zip(jax.tree.leaves(updates['batch_stats']),
                      jax.tree.leaves(variables['batch_stats'])):
    assert not np.allclose(new, old)


def test_bfloat16_network_computes_in_bfloat16_and_returns_float32_logits():
  # Each cell's bf16 output is compared with float32 in test_models_cells.
  model = models.build(GENOTYPES['plain'], NUM_CLASSES, dtype=jnp.bfloat16)

  def forward(x):
    variables = model.init(_key(1), x, train=False)
    return model.apply(variables, x, train=False, capture_intermediates=_is_feature,
                       mutable=['intermediates'])

  logits, state = jax.eval_shape(forward, jax.ShapeDtypeStruct((2, 16, 16, 3), jnp.float32))
  assert logits.dtype == jnp.float32
  for name in ('stem', 'stage0', 'stage1', 'stage2'):
    assert state['intermediates'][name]['__call__'][0].dtype == jnp.bfloat16


def test_dropout_is_random_in_training_and_off_in_evaluation():
  model = models.build(Genotype(stages=(), stem_width=8, dropout=0.5), NUM_CLASSES)
  x = jax.random.normal(_key(0), (2, 8, 8, 3))
  variables = jax.jit(lambda x: model.init(_key(1), x, train=False))(x)
  apply = jax.jit(model.apply, static_argnames=('train', 'mutable'))
  a, _ = apply(variables, x, train=True, rngs={'dropout': _key(2)},
               mutable=('batch_stats',))
  b, _ = apply(variables, x, train=True, rngs={'dropout': _key(3)},
               mutable=('batch_stats',))
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(apply(variables, x, train=False),
                                apply(variables, x, train=False))


def _param_shapes(genotype):
  model = models.build(genotype, NUM_CLASSES)
  x = jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(_key(0), x, train=False), x)
  return jax.tree.map(lambda a: a.shape, variables)


EQUAL_HASH_PAIRS = [
    # esp ignores kernel and dilation.
    (Stage(2, 'esp', 3, 16), Stage(2, 'esp', 7, 16, 4)),
    # Zero cells and identity cells are the same stage; attention needs cells.
    (Stage(0, 'conv', 5, 16, 2, 'se', 'max'), Stage(3, 'identity', 3, 16, 1, 'cbam', 'max')),
    (Stage(1, 'maxpool', 3, 16), Stage(1, 'maxpool', 5, 16, 2)),
]


@pytest.mark.parametrize('first,second', EQUAL_HASH_PAIRS)
def test_equal_hashes_build_identical_networks(first, second):
  head = Stage(1, 'conv', 3, 8)
  a = Genotype(stages=(head, first), stem_width=8)
  b = Genotype(stages=(head, second), stem_width=8)
  assert a != b and a.hash == b.hash
  assert models.build(a, NUM_CLASSES) == models.build(b, NUM_CLASSES)
  assert _param_shapes(a) == _param_shapes(b)


def test_different_hashes_build_different_networks():
  a = Genotype(stages=(Stage(1, 'conv', 3, 8),), stem_width=8)
  b = Genotype(stages=(Stage(1, 'conv', 5, 8),), stem_width=8)
  assert a.hash != b.hash
  assert _param_shapes(a) != _param_shapes(b)
