"""Loading: names, options, image folders, MedMNIST files, synthetic data, caching."""
import logging
import os

import numpy as np
from PIL import Image
import pytest

import datasets
from datasets import imaging
from datasets import synthetic


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
  monkeypatch.setenv('MEDNAS_CACHE_DIR', str(tmp_path / 'cache'))


def _shapes(num, size=24, seed=0):
  images, labels = synthetic.generate(num, 4, size, 0.1, np.random.default_rng(seed))
  return images, labels


def _save(path, image, mode=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image = image if isinstance(image, Image.Image) else Image.fromarray(image)
  (image.convert(mode) if mode else image).save(path)


def _flat_tree(root, per_class=6):
  """Classes a, b, c of PNG images, sorted names b < c deliberately written first."""
  images, _ = _shapes(3 * per_class)
  for k, name in enumerate(('c', 'b', 'a')):
    for i in range(per_class):
      _save(root / name / f'{i}.png', images[k * per_class + i])
  return root


class _DecodeCounter:

  def __init__(self, monkeypatch):
    self.calls = 0
    real = imaging.decode

    def counting(*args):
      self.calls += 1
      return real(*args)

    monkeypatch.setattr(imaging, 'decode', counting)


# ----------------------------------------------------------------- registry


def test_unknown_name_suggests_nearest():
  with pytest.raises(datasets.DataError, match="did you mean 'brain_tumor_mri'") as e:
    datasets.load('brain_tumour_mri')
  assert 'synthetic' in str(e.value) and '\n' not in str(e.value)


def test_unknown_option_is_named():
  with pytest.raises(datasets.DataError, match=r"unknown option\(s\) \['num_clases'\]"):
    datasets.load('synthetic', num_clases=3)


def test_missing_brain_mri_says_how_to_get_it(tmp_path):
  with pytest.raises(datasets.DataError) as e:
    datasets.load('brain_tumor_mri', data_dir=str(tmp_path))
  message = str(e.value)
  assert 'kaggle.com/datasets/masoudnickparvar/brain-tumor-mri-dataset' in message
  assert str(tmp_path / 'brain_tumor_mri') in message and 'Training' in message
  assert '\n' not in message


def test_default_data_dir_follows_env(monkeypatch, tmp_path):
  monkeypatch.setenv('MEDNAS_DATA_DIR', str(tmp_path))
  assert datasets.default_data_dir() == str(tmp_path)
  monkeypatch.delenv('MEDNAS_DATA_DIR')
  assert datasets.default_data_dir() == os.path.abspath('data')


# ---------------------------------------------------------------- synthetic


def test_synthetic_shapes_dtypes_and_counts():
  s = datasets.load('synthetic', image_size=16, channels=3, num_classes=5, num_train=100,
                    num_test=40)
  assert s.class_names == synthetic.CLASS_NAMES[:5]
  assert s.train.images.shape[1:] == (16, 16, 3) and s.train.images.dtype == np.uint8
  assert s.train.labels.dtype == np.int32
  assert len(s.train) + len(s.val) == 100 and len(s.test) == 40
  assert np.bincount(s.test.labels).tolist() == [8] * 5
  assert s.info['val'] == 'carved' and s.info['source'] == 'procedural'


def test_synthetic_is_seeded():
  a, b = (datasets.load('synthetic', image_size=16, seed=3) for _ in range(2))
  c = datasets.load('synthetic', image_size=16, seed=4)
  np.testing.assert_array_equal(a.train.images, b.train.images)
  assert a.val.ids == b.val.ids
  assert not np.array_equal(a.test.images, c.test.images)


def test_synthetic_difficulty_adds_noise():
  easy, _ = synthetic.generate(64, 4, 24, 0.0, np.random.default_rng(0))
  hard, _ = synthetic.generate(64, 4, 24, 1.0, np.random.default_rng(0))
  # Noise shows as pixel-to-pixel differences along rows.
  rough = lambda x: np.abs(np.diff(x.astype(float), axis=2)).mean()
  assert rough(hard) > 2 * rough(easy)


# ------------------------------------------------------------ val splitting


@pytest.mark.parametrize('fraction', [0.1, 0.25, 0.01])
def test_val_is_stratified_disjoint_and_seeded(fraction):
  kw = dict(image_size=8, num_classes=4, num_train=203, val_fraction=fraction)
  s = datasets.load('synthetic', seed=0, **kw)
  assert not set(s.train.ids) & set(s.val.ids)
  total = s.train.class_counts(4) + s.val.class_counts(4)
  val = s.val.class_counts(4)
  assert (val >= 1).all()
  assert (np.abs(val - fraction * total) <= 1).all()
  assert datasets.load('synthetic', seed=0, **kw).val.ids == s.val.ids
  assert datasets.load('synthetic', seed=1, **kw).val.ids != s.val.ids


# ------------------------------------------------------------- image folder


def test_image_folder_odd_modes_and_junk(tmp_path, caplog):
  root = tmp_path / 'tree'
  images, _ = _shapes(12, size=40)
  for i, mode in enumerate(('L', 'RGB', 'RGBA', 'P', 'CMYK')):
    ext = 'jpg' if mode == 'CMYK' else 'png'
    _save(root / 'x' / f'{mode.lower()}.{ext}', images[i], mode)
  # 16-bit data in [1000, 1255]: clipping to 8 bits would make it all white.
  _save(root / 'x' / 'i16.png', images[5].astype(np.uint16) + 1000)
  for i in range(4):
    _save(root / 'y' / 'nested' / f'{i}.bmp', np.stack([images[6 + i]] * 3, -1))
  (root / 'y' / 'notes.txt').write_text('not an image')
  (root / 'y' / '._0.bmp').write_bytes(b'macOS resource fork')
  good = root / 'x' / 'rgb.png'
  (root / 'x' / 'broken.jpg').write_bytes(
      (root / 'x' / 'cmyk.jpg').read_bytes()[:200])  # truncated

  with caplog.at_level(logging.WARNING):
    s = datasets.load('image_folder', data_dir=str(root), image_size=20, channels=3,
                      test_fraction=0.25)
  assert s.class_names == ('x', 'y')
  assert s.info['corrupt_skipped'] == ['x/broken.jpg']
  assert 'broken.jpg' in caplog.text
  ids = s.train.ids + s.val.ids + s.test.ids
  assert len(ids) == 10 and 'y/nested/0.bmp' in ids
  assert not any(i.endswith(('.txt', '._0.bmp')) for i in ids)
  assert all(x.images.shape[1:] == (20, 20, 3) for _, x in s.items())

  assert Image.open(root / 'x' / 'i16.png').mode == 'I;16'
  grey = imaging.decode(str(root / 'x' / 'i16.png'), 40, 1)
  assert grey.min() == 0 and grey.max() == 255  # stretched, not clipped
  expected = np.asarray(Image.open(good).convert('L').resize((20, 20), Image.BILINEAR))
  np.testing.assert_array_equal(imaging.decode(str(good), 20, 1)[..., 0], expected)


def test_transparent_pixels_become_black(tmp_path):
  rgba = np.full((8, 8, 4), 255, np.uint8)
  rgba[4:, :, 3] = 0
  _save(tmp_path / 'a.png', rgba)
  grey = imaging.decode(str(tmp_path / 'a.png'), 8, 1)[..., 0]
  assert (grey[:4] == 255).all() and (grey[4:] == 0).all()


def test_corrupt_image_error_names_file(tmp_path):
  root = _flat_tree(tmp_path / 'tree')
  (root / 'b' / 'bad.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\0' * 20)
  with pytest.raises(datasets.DataError, match=r'corrupt image .*b/bad\.png.*on_corrupt'):
    datasets.load('image_folder', data_dir=str(root), on_corrupt='error')


def test_empty_class_folder_is_an_error(tmp_path):
  root = _flat_tree(tmp_path / 'tree')
  (root / 'd').mkdir()
  (root / 'd' / 'readme.txt').write_text('no images here')
  with pytest.raises(datasets.DataError, match=r'class folder .*/d has no image files'):
    datasets.load('image_folder', data_dir=str(root))


def test_a_class_of_corrupt_files_says_they_were_skipped(tmp_path):
  root = _flat_tree(tmp_path / 'tree')
  (root / 'd').mkdir()
  for i in range(3):
    (root / 'd' / f'{i}.jpg').write_bytes(b'\xff\xd8\xff\xe0 not really a jpeg')
  with pytest.raises(datasets.DataError, match=r"class 'd' has 0 image\(s\).*3 corrupt image"
                                               r"\(s\) were skipped, e.g. .*/d/0\.jpg"):
    datasets.load('image_folder', data_dir=str(root))


def test_too_few_images_names_the_class(tmp_path):
  root = _flat_tree(tmp_path / 'tree')
  images, _ = _shapes(2)
  _save(root / 'rare' / '0.png', images[0])
  _save(root / 'rare' / '1.png', images[1])
  with pytest.raises(datasets.DataError, match=r"class 'rare' has 1 image\(s\).*val split"):
    datasets.load('image_folder', data_dir=str(root))


def test_flat_tree_test_split_is_fixed_across_seeds(tmp_path):
  root = _flat_tree(tmp_path / 'tree', per_class=10)
  a = datasets.load('image_folder', data_dir=str(root), image_size=16, seed=0)
  b = datasets.load('image_folder', data_dir=str(root), image_size=16, seed=1)
  assert a.class_names == ('a', 'b', 'c')
  assert a.test.ids == b.test.ids and a.val.ids != b.val.ids
  assert a.test.class_counts(3).tolist() == [2, 2, 2]  # test_fraction 0.2 of 10
  assert not set(a.test.ids) & set(a.train.ids + a.val.ids)
  assert all(i.startswith(('a/', 'b/', 'c/')) for i in a.train.ids)


def test_split_tree_names_case_insensitive(tmp_path):
  root = tmp_path / 'tree'
  images, _ = _shapes(12)
  for split, n in (('Training', 3), ('VALID', 1), ('testing', 2)):
    for name in ('zeta', 'alpha'):
      for i in range(n):
        _save(root / split / name / f'{i}.png', images[i])
  s = datasets.load('image_folder', root=str(root), image_size=16)
  assert s.class_names == ('alpha', 'zeta')
  assert s.info['val'] == 'official'
  assert (len(s.train), len(s.val), len(s.test)) == (6, 2, 4)
  assert s.val.ids[0].startswith('VALID/alpha/')


def test_image_folder_needs_a_tree():
  with pytest.raises(datasets.DataError, match='root='):
    datasets.load('image_folder')


def test_mixed_split_and_class_folders_is_an_error(tmp_path):
  root = _flat_tree(tmp_path / 'tree')
  (root / 'train').mkdir()
  with pytest.raises(datasets.DataError, match='mixes split folders'):
    datasets.load('image_folder', data_dir=str(root))


def test_cache_is_reused_then_invalidated(tmp_path, monkeypatch):
  root = _flat_tree(tmp_path / 'tree')
  first = datasets.load('image_folder', data_dir=str(root), image_size=16)
  counter = _DecodeCounter(monkeypatch)
  again = datasets.load('image_folder', data_dir=str(root), image_size=16)
  assert counter.calls == 0
  np.testing.assert_array_equal(first.train.images, again.train.images)

  changed = 'a/0.png'
  _save(root / changed, np.full((24, 24), 255, np.uint8))
  after = datasets.load('image_folder', data_dir=str(root), image_size=16)
  assert counter.calls == 18
  split = next(x for _, x in after.items() if changed in x.ids)
  assert (split.images[split.ids.index(changed)] == 255).all()
  datasets.load('image_folder', data_dir=str(root), image_size=16, channels=3)
  assert counter.calls == 36  # the size and channels are part of the key


def test_killed_cache_write_leaves_no_entry(tmp_path, monkeypatch):
  root = _flat_tree(tmp_path / 'tree')

  def killed(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(np, 'savez', killed)
  with pytest.raises(KeyboardInterrupt):
    datasets.load('image_folder', data_dir=str(root), image_size=16)
  cache = tmp_path / 'cache'
  assert not [p for p in cache.rglob('*') if p.is_file()]


# ------------------------------------------------------------------ medmnist


def test_medmnist_official_splits_unchanged_at_native_size(tmp_path, write_medmnist):
  arrays = write_medmnist(tmp_path / 'medmnist' / 'tinymnist.npz')
  s = datasets.load('medmnist/tinymnist', data_dir=str(tmp_path), image_size=28)
  assert s.class_names == ('0', '1', '2') and s.info['val'] == 'official'
  for split, x in s.items():
    np.testing.assert_array_equal(x.images[..., 0], arrays[f'{split}_images'])
    np.testing.assert_array_equal(x.labels, arrays[f'{split}_labels'][:, 0])
    assert x.ids[1] == f'{split}/1'


def test_medmnist_resize_channels_and_names(tmp_path, write_medmnist):
  write_medmnist(tmp_path / 'medmnist' / 'pneumoniamnist.npz', num_classes=2)
  s = datasets.load('medmnist/pneumoniamnist', data_dir=str(tmp_path), image_size=32,
                    channels=3)
  assert s.class_names == ('normal', 'pneumonia')
  assert s.train.images.shape == (30, 32, 32, 3)
  write_medmnist(tmp_path / 'medmnist' / 'colour.npz', shape=(28, 28, 3))
  grey = datasets.load('medmnist/colour', data_dir=str(tmp_path), image_size=28)
  assert grey.test.images.shape == (10, 28, 28, 1)


def test_medmnist_multilabel_and_missing_are_errors(tmp_path, write_medmnist):
  write_medmnist(tmp_path / 'medmnist' / 'multi.npz', label_cols=14, num_classes=2)
  with pytest.raises(datasets.DataError, match='multi-label'):
    datasets.load('medmnist/multi', data_dir=str(tmp_path))
  with pytest.raises(datasets.DataError, match='multi-label'):
    datasets.load('medmnist/chestmnist', data_dir=str(tmp_path))
  with pytest.raises(datasets.DataError, match=r'no file .*dermamnist\.npz.*zenodo'):
    datasets.load('medmnist/dermamnist', data_dir=str(tmp_path))
