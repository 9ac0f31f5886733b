"""Segmentation data: synthetic_seg, mask_folder pairs, kvasir_seg, masks in batches and
augmentation."""
import filecmp
import os
import subprocess
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image
import pytest

import datasets
from datasets import audit
from datasets import augment
from datasets import imaging
from datasets import loader
from datasets import pipeline
from datasets import synthetic_seg
from datasets.records import make_seg_split

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.environ.get('MEDNAS_DATA_DIR') or os.path.join(REPO, 'data')
KVASIR = os.path.join(DATA_DIR, 'kvasir_seg')
needs_kvasir = pytest.mark.skipif(
    not os.path.isdir(KVASIR),
    reason=f'kvasir_seg not at {KVASIR}; set MEDNAS_DATA_DIR or link ../shared/data to ./data')


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
  monkeypatch.setenv('MEDNAS_CACHE_DIR', str(tmp_path / 'cache'))


def _save(path, array, **kwargs):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  (array if isinstance(array, Image.Image) else Image.fromarray(array)).save(path, **kwargs)


def _pairs(root, names, size=40, seed=0, image_ext='jpg', mask_ext='png', suffix=''):
  """Writes images/<name>.<image_ext> and masks/<name><suffix>.<mask_ext> under root.

  The pairs come from synthetic_seg; returns the masks (0/1) by name, to check
  that each loaded image got its own mask.
  """
  images, masks = synthetic_seg.generate(len(names), size, 0.0, np.random.default_rng(seed))
  for name, image, mask in zip(names, images, masks):
    _save(os.path.join(root, 'images', f'{name}.{image_ext}'), image)
    _save(os.path.join(root, 'masks', f'{name}{suffix}.{mask_ext}'), mask * 255)
  return dict(zip(names, masks))


# ------------------------------------------------------------- synthetic_seg


def test_synthetic_seg_shapes_dtypes_and_task():
  s = datasets.load('synthetic_seg', image_size=24, channels=3, num_train=100, num_test=30)
  assert s.task == 'segmentation' and s.info['task'] == 'segmentation'
  assert s.class_names == ('background', 'shape') and s.num_classes == 2
  assert (len(s.train), len(s.val), len(s.test)) == (90, 10, 30)
  for _, split in s.items():
    assert split.images.shape[1:] == (24, 24, 3) and split.images.dtype == np.uint8
    assert split.masks.shape == (len(split), 24, 24, 1) and split.masks.dtype == np.uint8
    assert set(np.unique(split.masks)) == {0, 1}
    np.testing.assert_array_equal(split.labels, split.masks.any(axis=(1, 2, 3)))
  # Shapes are brighter than the background they sit on.
  image, mask = s.train.images[..., 0].astype(float), s.train.masks[..., 0] == 1
  assert image[mask].mean() > image[~mask].mean() + 40
  assert 0.05 < mask.mean() < 0.4


def test_synthetic_seg_is_seeded():
  a, b = (datasets.load('synthetic_seg', image_size=16, num_train=40, seed=3) for _ in range(2))
  c = datasets.load('synthetic_seg', image_size=16, num_train=40, seed=4)
  np.testing.assert_array_equal(a.train.images, b.train.images)
  np.testing.assert_array_equal(a.train.masks, b.train.masks)
  assert a.val.ids == b.val.ids and a.val.ids != c.val.ids
  assert not np.array_equal(a.test.masks, c.test.masks)


def test_classification_splits_have_no_masks():
  s = datasets.load('synthetic', image_size=8, num_train=40)
  assert s.task == 'classification' and s.info['task'] == 'classification'
  assert all(split.masks is None for _, split in s.items())
  assert 'seg_mask' not in next(pipeline.train_batches(s.train, 4, 0, 0))


def test_take_carries_masks():
  images, masks = synthetic_seg.generate(6, 8, 0.0, np.random.default_rng(0))
  split = make_seg_split(images, masks, tuple(str(i) for i in range(6)))
  part = split.take(np.array([4, 1]))
  np.testing.assert_array_equal(part.masks[..., 0], masks[[4, 1]])
  assert part.ids == ('4', '1') and part.task == 'segmentation'


class _TinyUNet(nn.Module):

  @nn.compact
  def __call__(self, x):
    fine = nn.relu(nn.Conv(16, (3, 3))(x))
    coarse = nn.max_pool(fine, (2, 2), (2, 2))
    coarse = nn.relu(nn.Conv(32, (3, 3))(nn.relu(nn.Conv(32, (3, 3))(coarse))))
    coarse = jax.image.resize(coarse, fine.shape[:3] + (32,), 'nearest')
    x = nn.relu(nn.Conv(16, (3, 3))(jnp.concatenate([fine, coarse], -1)))
    return nn.Conv(1, (1, 1))(x)


def test_synthetic_seg_is_learnable_by_a_small_cnn():
  s = datasets.load('synthetic_seg', image_size=32, num_train=512, seed=0)
  model, tx = _TinyUNet(), optax.adam(3e-3)
  params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))
  opt_state = tx.init(params)

  @jax.jit
  def train_step(params, opt_state, images, masks):
    def loss_fn(p):
      logits = model.apply(p, images.astype(jnp.float32) / 255.0)
      target = masks.astype(jnp.float32)
      prob = jax.nn.sigmoid(logits)
      # Cross-entropy alone can sit on 'all background' (about 88% of pixels) for
      # a few hundred steps; the soft Dice term pulls it off at once.
      soft_dice = (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
      return optax.sigmoid_binary_cross_entropy(logits, target).mean() + 1 - soft_dice
    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state

  for epoch in range(3):
    for batch in pipeline.train_batches(s.train, 16, seed=0, epoch=epoch):
      params, opt_state = train_step(params, opt_state, batch['image'], batch['seg_mask'])
  predicted = np.asarray(model.apply(params, s.test.images / np.float32(255.0)) > 0)
  truth = s.test.masks == 1
  dice = 2 * (predicted & truth).sum() / (predicted.sum() + truth.sum())
  assert dice > 0.85, dice  # about 0.92 measured


# --------------------------------------------------------------- mask_folder


def test_mask_folder_pairs_by_name_across_extensions(tmp_path):
  root = tmp_path / 'tree'
  train = _pairs(root / 'Training', [f'case{i}' for i in range(8)], seed=0)
  test = _pairs(root / 'test', ['x', 'y', 'z'], seed=1, image_ext='png', mask_ext='bmp')
  (root / 'splits').mkdir()  # other folders beside the splits are ignored
  s = datasets.load('mask_folder', root=str(root), image_size=40, val_fraction=0.25)
  assert s.task == 'segmentation' and s.class_names == ('background', 'foreground')
  assert (len(s.train), len(s.val), len(s.test)) == (6, 2, 3)
  assert s.test.ids == ('test/images/x.png', 'test/images/y.png', 'test/images/z.png')
  for split in (s.train, s.val, s.test):
    for image_id, mask in zip(split.ids, split.masks[..., 0]):
      name = os.path.splitext(os.path.basename(image_id))[0]
      np.testing.assert_array_equal(mask, {**train, **test}[name])


def test_mask_folder_flat_tree_and_mask_suffix(tmp_path):
  _pairs(tmp_path / 'flat', [f'{i:02d}' for i in range(10)], suffix='_mask')
  s = datasets.load('mask_folder', root=str(tmp_path / 'flat'), image_size=16,
                    mask_suffix='_mask', seed=0)
  again = datasets.load('mask_folder', root=str(tmp_path / 'flat'), image_size=16,
                        mask_suffix='_mask', seed=1)
  assert (len(s.train), len(s.val), len(s.test)) == (7, 1, 2)
  assert s.test.ids == again.test.ids  # the carved test split ignores the seed
  assert not set(s.test.ids) & set(s.train.ids + s.val.ids)


def test_mask_folder_missing_and_extra_files_are_one_clear_error(tmp_path):
  root = tmp_path / 'tree'
  _pairs(root, [f'img{i}' for i in range(6)])
  for i in (1, 4):
    os.unlink(root / 'masks' / f'img{i}.png')
  _save(str(root / 'masks' / 'orphan.png'), np.zeros((8, 8), np.uint8))
  with pytest.raises(datasets.DataError) as e:
    datasets.load('mask_folder', root=str(root))
  message = str(e.value)
  assert '\n' not in message
  assert '2 image(s) with no partner' in message and 'img1.jpg, img4.jpg' in message
  assert '1 mask(s) with no partner' in message and 'orphan.png' in message
  assert 'masks/<name>.<ext>' in message and 'mask_suffix' in message


@pytest.mark.parametrize('make, match', [
    (lambda root: (root / 'images').mkdir(parents=True), 'no masks/ folder'),
    (lambda root: (root / 'scans' / 'images').mkdir(parents=True), "'scans' is not a split"),
    (lambda root: root.mkdir(), 'no images/ folder for training'),
])
def test_mask_folder_layout_errors(tmp_path, make, match):
  make(tmp_path / 'tree')
  with pytest.raises(datasets.DataError, match=match):
    datasets.load('mask_folder', root=str(tmp_path / 'tree'))


def test_masks_stay_binary_through_jpeg_and_resize(tmp_path):
  truth = np.zeros((61, 47), np.uint8)
  truth[10:40, 5:30] = 255
  _save(str(tmp_path / 'm.jpg'), truth, quality=60)  # ringing around the edges
  assert len(np.unique(np.asarray(Image.open(tmp_path / 'm.jpg')))) > 2
  for size in (16, 33, 64):
    mask = imaging.decode_mask(str(tmp_path / 'm.jpg'), size, 127)
    assert mask.shape == (size, size, 1) and set(np.unique(mask)) == {0, 1}
    assert abs(mask.mean() - (truth > 0).mean()) < 0.05
  # Colour masks count their brightest channel: red on black is foreground.
  red = np.zeros((20, 20, 3), np.uint8)
  red[:10, :, 0] = 255
  _save(str(tmp_path / 'red.png'), red)
  assert imaging.decode_mask(str(tmp_path / 'red.png'), 10, 127)[:5].all()


def test_index_masks_need_threshold_zero(tmp_path):
  root = tmp_path / 'tree'
  masks = _pairs(root, ['a', 'b', 'c', 'd'])
  for name, mask in masks.items():  # rewrite as class indices 0/1
    _save(str(root / 'masks' / f'{name}.png'), mask)
  with pytest.raises(datasets.DataError, match='mask_threshold=0'):
    datasets.load('mask_folder', root=str(root), image_size=40)
  s = datasets.load('mask_folder', root=str(root), image_size=40, mask_threshold=0,
                    test_fraction=0.25, val_fraction=0.34)
  for image_id, mask in zip(s.train.ids, s.train.masks[..., 0]):
    np.testing.assert_array_equal(mask, masks[os.path.basename(image_id)[0]])


def test_mask_folder_cache_round_trip_and_invalidation(tmp_path, monkeypatch):
  root = tmp_path / 'tree'
  _pairs(root, [f'{i}' for i in range(8)])
  first = datasets.load('mask_folder', root=str(root), image_size=16)
  calls = []
  real = imaging.decode_mask
  monkeypatch.setattr(imaging, 'decode_mask', lambda *a: calls.append(a) or real(*a))
  again = datasets.load('mask_folder', root=str(root), image_size=16)
  assert not calls
  for (_, a), (_, b) in zip(first.items(), again.items()):
    assert a.ids == b.ids
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)

  _save(str(root / 'masks' / '3.png'), np.full((40, 40), 255, np.uint8))
  after = datasets.load('mask_folder', root=str(root), image_size=16)
  assert len(calls) == 8
  split = next(x for _, x in after.items() if 'images/3.jpg' in x.ids)
  assert split.masks[split.ids.index('images/3.jpg')].all()
  datasets.load('mask_folder', root=str(root), image_size=16, mask_threshold=200)
  assert len(calls) == 16  # the threshold is part of the key


def test_mismatched_pair_sizes_are_corrupt(tmp_path):
  root = tmp_path / 'tree'
  _pairs(root, [f'{i}' for i in range(6)])
  _save(str(root / 'masks' / '2.png'), np.full((30, 40), 255, np.uint8))
  with pytest.raises(datasets.DataError, match=r'corrupt image .*images/2\.jpg.*40x40 but'):
    datasets.load('mask_folder', root=str(root), on_corrupt='error')
  s = datasets.load('mask_folder', root=str(root))
  assert s.info['corrupt_skipped'] == ['images/2.jpg']


# --------------------------------------------------------- batches, augment


def _pattern_split(n=10, size=8):
  """Mask i is a bar in column i % size; image i is that mask times 10 (i + 1)."""
  masks = np.zeros((n, size, size), np.uint8)
  masks[np.arange(n), :, np.arange(n) % size] = 1
  images = masks * (10 * (np.arange(n) + 1)).reshape(n, 1, 1)
  return make_seg_split(images, masks, tuple(f'train/{i}' for i in range(n)))


def test_batches_carry_aligned_masks():
  split = _pattern_split(10)
  for batch in pipeline.train_batches(split, 4, seed=0, epoch=0):
    assert batch['seg_mask'].shape == (4, 8, 8, 1) and batch['seg_mask'].dtype == np.uint8
    np.testing.assert_array_equal(batch['seg_mask'], batch['image'] > 0)
  batches = list(pipeline.eval_batches(split, 4))
  assert [sorted(b) for b in batches] == [['image', 'label', 'mask', 'seg_mask']] * 3
  last = batches[-1]
  assert last['mask'].tolist() == [True, True, False, False]
  assert not last['seg_mask'][2:].any() and last['seg_mask'][:2].any()


_AUGMENT = jax.jit(augment.augment_with_masks, static_argnums=4)


def _l_shapes(b=32, size=16):
  """Float images of an asymmetric L, bright on dark, and its uint8 mask."""
  mask = np.zeros((size, size, 1), np.uint8)
  q = size // 8
  mask[q:6 * q, q:3 * q] = mask[5 * q:6 * q, q:5 * q] = 1
  masks = np.broadcast_to(mask, (b, size, size, 1))
  images = jnp.asarray(0.1 + 0.8 * masks, jnp.float32)
  return images, jnp.asarray(masks)


def test_augment_flips_image_and_mask_together():
  flips = augment.AugmentConfig(flip_ud=True, max_rotate_deg=0.0, max_scale=0.0,
                                max_translate=0.0, max_brightness=0.2, max_contrast=0.2)
  images, masks = _l_shapes()
  out_images, out_masks = _AUGMENT(jax.random.key(0), images, masks, 1.0, flips)
  out_images, out_masks = np.asarray(out_images), np.asarray(out_masks)
  assert out_masks.dtype == np.uint8 and set(np.unique(out_masks)) == {0, 1}
  # Brightness and contrast move the image only: the L stays the brighter part.
  orientations = set()
  for image, mask in zip(out_images, out_masks):
    fg, bg = image[mask == 1], image[mask == 0]
    assert fg.min() > bg.max()
    orientations.add(mask.tobytes())
  assert len(orientations) == 4  # all four flips of an asymmetric L occur


def test_augment_warp_keeps_mask_on_image_and_images_match_augment():
  config = augment.AugmentConfig(flip_ud=True, max_rotate_deg=30.0, max_scale=0.2,
                                 max_translate=0.1, max_brightness=0.0, max_contrast=0.0)
  images, masks = _l_shapes(size=32)
  key = jax.random.key(3)
  out_images, out_masks = _AUGMENT(key, images, masks, 1.0, config)
  # The same key draws the same parameters as the classification path.
  classify = jax.jit(augment.augment, static_argnums=3)
  np.testing.assert_allclose(out_images, classify(key, images, 1.0, config), atol=1e-5)
  bright, fg = np.asarray(out_images) > 0.5, np.asarray(out_masks) == 1
  iou = (bright & fg).sum((1, 2, 3)) / (bright | fg).sum((1, 2, 3))
  assert iou.min() > 0.8, iou  # nearest against bilinear differs only along edges
  unchanged = _AUGMENT(key, images, masks, 0.0, config)[1]
  np.testing.assert_array_equal(unchanged, masks)


# ---------------------------------------------------------------- kvasir_seg


def test_missing_kvasir_says_how_to_get_it(tmp_path):
  with pytest.raises(datasets.DataError) as e:
    datasets.load('kvasir_seg', data_dir=str(tmp_path))
  message = str(e.value)
  assert 'datasets.simula.no/kvasir-seg' in message and 'train/masks' in message
  assert 'python -m datasets.prepare_kvasir_seg' in message
  assert '\n' not in message


def _prepare_kvasir(source, train_list, test_list, data_dir):
  return subprocess.run(
      [sys.executable, '-m', 'datasets.prepare_kvasir_seg', f'--source={source}',
       f'--train_list={train_list}', f'--test_list={test_list}', f'--data_dir={data_dir}'],
      cwd=REPO, capture_output=True, text=True, timeout=300)


@needs_kvasir
def test_prepare_kvasir_lays_out_the_zip_as_the_official_split(tmp_path):
  # The zip's layout, rebuilt from the shipped copy: every pair under images/ and masks/.
  source = tmp_path / 'Kvasir-SEG'
  for split in ('train', 'test'):
    for kind in ('images', 'masks'):
      (source / kind).mkdir(parents=True, exist_ok=True)
      for name in os.listdir(os.path.join(KVASIR, split, kind)):
        os.symlink(os.path.join(KVASIR, split, kind, name), source / kind / name)
  lists = os.path.join(KVASIR, 'splits')
  run = _prepare_kvasir(source, os.path.join(lists, 'train.txt'),
                        os.path.join(lists, 'val.txt'), tmp_path / 'data')
  assert run.returncode == 0, run.stderr[-3000:]
  made = tmp_path / 'data' / 'kvasir_seg'
  for split in ('train', 'test'):
    for kind in ('images', 'masks'):
      names = sorted(os.listdir(os.path.join(KVASIR, split, kind)))
      assert sorted(os.listdir(made / split / kind)) == names
      for name in names[:20]:
        assert filecmp.cmp(made / split / kind / name, os.path.join(KVASIR, split, kind, name),
                           shallow=False)
  assert filecmp.cmp(made / 'splits' / 'val.txt', os.path.join(lists, 'val.txt'), shallow=False)
  again = _prepare_kvasir(source, os.path.join(lists, 'train.txt'),
                          os.path.join(lists, 'val.txt'), tmp_path / 'data')
  assert again.returncode == 2 and again.stderr.strip().endswith(
      'already exists; remove it or pass another --data_dir')


def test_prepare_kvasir_refuses_a_listed_pair_it_cannot_find(tmp_path):
  source = tmp_path / 'Kvasir-SEG'
  for kind in ('images', 'masks'):
    _save(str(source / kind / 'a.jpg'), np.zeros((8, 8, 3), np.uint8))
  (tmp_path / 'train.txt').write_text('a\n')
  (tmp_path / 'val.txt').write_text('b\n')
  run = _prepare_kvasir(source, tmp_path / 'train.txt', tmp_path / 'val.txt', tmp_path / 'data')
  assert run.returncode == 2 and 'Traceback' not in run.stderr
  assert run.stderr.strip().startswith(f'error: {source / "images" / "b.jpg"} is missing')
  assert not (tmp_path / 'data').exists()  # nothing half-prepared


@pytest.fixture(scope='module')
def kvasir_cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp('kvasir_cache'))


@pytest.fixture(scope='module')
def kvasir(kvasir_cache):
  start = time.perf_counter()
  splits = datasets.load('kvasir_seg', data_dir=DATA_DIR, image_size=64, channels=3,
                         cache_dir=kvasir_cache)
  print(f'first load of kvasir_seg 64x64: {time.perf_counter() - start:.1f} s')
  return splits


@needs_kvasir
def test_kvasir_official_split_and_binary_masks(kvasir):
  n_val = 88  # 10% of the official 880 training pairs
  assert (len(kvasir.train), len(kvasir.val), len(kvasir.test)) == (880 - n_val, n_val, 120)
  assert kvasir.task == 'segmentation' and kvasir.class_names == ('background', 'polyp')
  assert not set(kvasir.train.ids) & set(kvasir.val.ids)
  assert all(i.startswith('train/images/') for i in kvasir.train.ids + kvasir.val.ids)
  assert all(i.startswith('test/images/') for i in kvasir.test.ids)
  for _, split in kvasir.items():
    assert split.images.shape[1:] == (64, 64, 3) and split.masks.shape[1:] == (64, 64, 1)
    assert set(np.unique(split.masks)) == {0, 1}
    assert split.labels.all()  # every Kvasir-SEG mask holds a polyp
    # Polyps cover 15% of a frame on average (SOURCES.md), from under 1% to 81%.
    assert 0.05 < split.masks.mean() < 0.4


@needs_kvasir
def test_kvasir_cached_load_and_seeded_val(kvasir, kvasir_cache, monkeypatch):
  monkeypatch.setattr(imaging, 'decode', lambda *a: pytest.fail('decoded again'))
  start = time.perf_counter()
  again = datasets.load('kvasir_seg', data_dir=DATA_DIR, image_size=64, channels=3,
                        cache_dir=kvasir_cache)
  assert time.perf_counter() - start < 5
  assert again.val.ids == kvasir.val.ids
  np.testing.assert_array_equal(again.test.masks, kvasir.test.masks)
  other = datasets.load('kvasir_seg', data_dir=DATA_DIR, image_size=64, channels=3,
                        cache_dir=kvasir_cache, seed=1)
  assert other.val.ids != kvasir.val.ids and other.test.ids == kvasir.test.ids


@needs_kvasir
def test_kvasir_leakage_audit_runs(kvasir, kvasir_cache):
  kwargs = dict(data_dir=DATA_DIR, cache_dir=kvasir_cache)
  hashes = loader.hashes_for('kvasir_seg', **kwargs)
  assert len(hashes) == 1000
  report = audit.audit(kvasir, hashes, threshold=4)
  assert report['counts']['test'] == {'background': 0, 'polyp': 120}
  assert report['cross_split_exact_duplicates']['train+val/test'] == 0
  deduped = datasets.load('kvasir_seg', image_size=64, channels=3, dedup=True, **kwargs)
  # dedup compares test with train alone (val is held out of train).
  assert len(deduped.test) == 120 - report['cross_split_near_duplicates']['train/test']
  assert deduped.test.masks.shape[0] == len(deduped.test)
