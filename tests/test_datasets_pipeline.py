"""Batch iterators, on-device augmentation, and that the synthetic task is learnable."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import datasets
from datasets import augment
from datasets import pipeline
from datasets.records import make_split


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
  monkeypatch.setenv('MEDNAS_CACHE_DIR', str(tmp_path / 'cache'))


def _split(n=50, size=4):
  """Image i is filled with the value i; its label is i % 3."""
  images = np.broadcast_to(np.arange(n).reshape(n, 1, 1, 1), (n, size, size, 1))
  return make_split(images, np.arange(n) % 3, tuple(f'train/{i}' for i in range(n)))


def test_train_batches_seeded_shuffle_drop_remainder():
  split = _split(50)
  epoch0 = list(pipeline.train_batches(split, 16, seed=1, epoch=0))
  assert len(epoch0) == 3
  for batch in epoch0:
    assert batch['image'].shape == (16, 4, 4, 1) and batch['image'].dtype == np.uint8
    assert batch['label'].shape == (16,) and batch['label'].dtype == np.int32
  order = lambda batches: np.concatenate([b['image'][:, 0, 0, 0] for b in batches])
  seen = order(epoch0)
  assert len(set(seen.tolist())) == 48  # each image at most once per epoch
  np.testing.assert_array_equal(seen, order(pipeline.train_batches(split, 16, 1, 0)))
  assert not np.array_equal(seen, order(pipeline.train_batches(split, 16, 1, 1)))
  assert not np.array_equal(seen, order(pipeline.train_batches(split, 16, 2, 0)))
  # Labels travel with their images.
  for batch in epoch0:
    np.testing.assert_array_equal(batch['label'], batch['image'][:, 0, 0, 0] % 3)
  with pytest.raises(ValueError, match='batch_size'):
    next(pipeline.train_batches(split, 51, 0, 0))


def test_eval_batches_in_order_and_padded():
  split = _split(50)
  batches = list(pipeline.eval_batches(split, 16))
  assert [b['image'].shape for b in batches] == [(16, 4, 4, 1)] * 4
  mask = np.concatenate([b['mask'] for b in batches])
  assert mask.dtype == bool and mask.sum() == 50 and not mask[50:].any()
  images = np.concatenate([b['image'] for b in batches])[mask]
  np.testing.assert_array_equal(images, split.images)
  assert (batches[-1]['image'][2:] == 0).all() and (batches[-1]['label'][2:] == 0).all()


_AUGMENT = jax.jit(augment.augment, static_argnums=3)


def _images(b=6, size=24, c=1, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(size=(b, size, size, c)),
                     jnp.float32)


def test_augment_strength_zero_is_identity_under_jit():
  x = _images(c=3)
  config = augment.AugmentConfig(flip_ud=True)
  np.testing.assert_array_equal(_AUGMENT(jax.random.key(0), x, 0.0, config), x)
  y = _AUGMENT(jax.random.key(0), x, 1.0, config)
  assert y.shape == x.shape and y.dtype == jnp.float32
  assert float(jnp.abs(y - x).mean()) > 0.05
  assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_augment_deterministic_per_key_and_per_image():
  x = jnp.broadcast_to(_images(1), (4, 24, 24, 1))
  config = augment.AugmentConfig()
  a, b = (_AUGMENT(jax.random.key(1), x, 0.8, config) for _ in range(2))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, _AUGMENT(jax.random.key(2), x, 0.8, config))
  assert not np.array_equal(a[0], a[1])  # identical inputs, own parameters


def test_augment_flip_only_mirrors():
  flips = augment.AugmentConfig(max_rotate_deg=0.0, max_scale=0.0, max_translate=0.0,
                                max_brightness=0.0, max_contrast=0.0)
  x = _images(64, size=12)
  y = np.asarray(_AUGMENT(jax.random.key(0), x, 1.0, flips))
  mirrored = [np.array_equal(yi, np.asarray(xi)[:, ::-1]) for xi, yi in zip(x, y)]
  same = [np.array_equal(yi, np.asarray(xi)) for xi, yi in zip(x, y)]
  assert all(m or s for m, s in zip(mirrored, same))
  assert 16 < sum(mirrored) < 48  # probability 0.5 at strength 1


def test_augment_traced_strength_and_vmap():
  x = _images(8)
  traces = []

  @jax.jit
  def step(key, images, strength):
    traces.append(1)
    return augment.augment(key, images, strength)

  step(jax.random.key(0), x, 0.2)
  step(jax.random.key(0), x, 0.9)
  assert len(traces) == 1
  keys = jax.random.split(jax.random.key(0), 2)
  per_device = jax.jit(jax.vmap(augment.augment, in_axes=(0, 0, None)))
  out = per_device(keys, x.reshape(2, 4, 24, 24, 1), 0.5)
  assert out.shape == (2, 4, 24, 24, 1)
  assert dataclasses.is_dataclass(augment.AugmentConfig) and hash(augment.AugmentConfig())


class _TinyCNN(nn.Module):

  @nn.compact
  def __call__(self, x):
    for width in (16, 32):
      x = nn.relu(nn.Conv(width, (3, 3))(x))
      x = nn.max_pool(x, (2, 2), (2, 2))
    return nn.Dense(4)(x.reshape(x.shape[0], -1))


def test_synthetic_is_learnable_by_a_small_cnn():
  s = datasets.load('synthetic', image_size=16, num_train=2048, seed=0)
  model, tx = _TinyCNN(), optax.adam(3e-3)
  params = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 1)))
  opt_state = tx.init(params)

  @jax.jit
  def train_step(params, opt_state, images, labels):
    def loss_fn(p):
      logits = model.apply(p, images.astype(jnp.float32) / 255.0)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state

  for epoch in range(12):
    for batch in pipeline.train_batches(s.train, 64, seed=0, epoch=epoch):
      params, opt_state = train_step(params, opt_state, batch['image'], batch['label'])
  logits = model.apply(params, s.test.images.astype(np.float32) / 255.0)
  accuracy = float((logits.argmax(-1) == s.test.labels).mean())
  assert accuracy > 0.6, accuracy  # chance is 0.25; about 0.85 measured
