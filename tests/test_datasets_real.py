"""The shipped data sets, when present under MEDNAS_DATA_DIR or ./data (repo root)."""
import os
import shutil
import time

import numpy as np
from PIL import Image
import pytest

import datasets
from datasets import audit
from datasets import dedup
from datasets import imaging
from datasets import loader

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.environ.get('MEDNAS_DATA_DIR') or os.path.join(REPO, 'data')
BRAIN = os.path.join(DATA_DIR, 'brain_tumor_mri')
# From ../shared/data/brain_tumor_mri/SOURCES.md.
BRAIN_COUNTS = {
    'train': {'glioma': 1321, 'meningioma': 1339, 'notumor': 1591, 'pituitary': 1457},
    'test': {'glioma': 300, 'meningioma': 306, 'notumor': 405, 'pituitary': 300},
}
needs_brain = pytest.mark.skipif(
    not os.path.isdir(BRAIN),
    reason=f'brain_tumor_mri not at {BRAIN}; set MEDNAS_DATA_DIR or link ../shared/data to ./data')


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
  monkeypatch.setenv('MEDNAS_CACHE_DIR', str(tmp_path / 'cache'))


@pytest.fixture(scope='module')
def brain_cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp('brain_cache'))


@pytest.fixture(scope='module')
def brain(brain_cache):
  start = time.perf_counter()
  splits = datasets.load('brain_tumor_mri', data_dir=DATA_DIR, image_size=64,
                         cache_dir=brain_cache)
  print(f'first load of brain_tumor_mri 64x64: {time.perf_counter() - start:.1f} s')
  return splits


@needs_brain
def test_brain_counts_match_sources(brain):
  names = brain.class_names
  counts = lambda split: dict(zip(names, split.class_counts(len(names)).tolist()))
  train_and_val = {k: counts(brain.train)[k] + counts(brain.val)[k] for k in names}
  assert train_and_val == BRAIN_COUNTS['train']
  assert counts(brain.test) == BRAIN_COUNTS['test']
  assert brain.train.images.shape[1:] == (64, 64, 1)
  assert all(i.startswith('Testing/') for i in brain.test.ids)


@needs_brain
def test_brain_val_disjoint_and_stratified(brain):
  assert not set(brain.train.ids) & set(brain.val.ids)
  assert len(set(brain.train.ids + brain.val.ids)) == 5708
  val = brain.val.class_counts(4)
  total = val + brain.train.class_counts(4)
  assert (np.abs(val - 0.1 * total) <= 1).all()


@needs_brain
def test_brain_second_load_is_cached_and_fast(brain, brain_cache, monkeypatch):
  monkeypatch.setattr(imaging, 'decode', lambda *a: pytest.fail('decoded again'))
  start = time.perf_counter()
  again = datasets.load('brain_tumor_mri', data_dir=DATA_DIR, image_size=64,
                        cache_dir=brain_cache)
  assert time.perf_counter() - start < 10
  assert again.val.ids == brain.val.ids
  np.testing.assert_array_equal(again.test.images, brain.test.images)


@needs_brain
def test_brain_cache_invalidated_by_a_changed_file(brain, brain_cache, tmp_path,
                                                   monkeypatch):
  # A tree of links to the real files has the same fingerprint, so it reuses the
  # cache; replacing one link by an edited copy must rebuild it.
  root = tmp_path / 'data' / 'brain_tumor_mri'
  for dirpath, _, filenames in os.walk(BRAIN):
    rel = os.path.relpath(dirpath, BRAIN)
    os.makedirs(root / rel, exist_ok=True)
    for name in filenames:
      os.symlink(os.path.join(dirpath, name), root / rel / name)
  calls = []
  real = imaging.decode
  monkeypatch.setattr(imaging, 'decode', lambda *a: calls.append(a) or real(*a))
  linked = datasets.load('brain_tumor_mri', data_dir=str(root.parent), cache_dir=brain_cache)
  assert not calls and linked.test.ids == brain.test.ids

  changed = brain.test.ids[0]
  os.unlink(root / changed)
  Image.new('L', (224, 224), 255).save(root / changed, format='JPEG')
  after = datasets.load('brain_tumor_mri', data_dir=str(root.parent), cache_dir=brain_cache)
  assert len(calls) == 5708 + 1311
  assert (after.test.images[0] >= 250).all() and not (brain.test.images[0] >= 250).all()


@needs_brain
def test_audit_finds_duplicates_planted_in_real_images(brain, brain_cache, tmp_path):
  # Per class, three training images far from each other (and from the others
  # picked): two go to train/, one to test/. Then plant in test/ exact copies of
  # two train/ images and a brightened copy of a third.
  hashes = loader.hashes_for('brain_tumor_mri', data_dir=DATA_DIR, cache_dir=brain_cache)
  picked, picked_hashes = {}, []
  for label, cls in enumerate(brain.class_names):
    picked[cls] = []
    for image_id in np.asarray(brain.train.ids)[brain.train.labels == label][::50]:
      h = np.array([hashes[image_id]], np.uint64)
      if len(picked[cls]) < 3 and dedup.nearest(h, np.array(picked_hashes, np.uint64))[0][0] > 12:
        picked[cls].append(image_id)
        picked_hashes.append(hashes[image_id])
    assert len(picked[cls]) == 3
  root = tmp_path / 'planted'
  for cls, ids in picked.items():
    for split, name, image_id in (('train', 'a', ids[0]), ('train', 'b', ids[1]),
                                  ('test', 'c', ids[2])):
      os.makedirs(root / split / cls, exist_ok=True)
      shutil.copy(os.path.join(BRAIN, image_id), root / split / cls / f'{name}.jpg')
  glioma, meningioma, notumor = (picked[c][0] for c in brain.class_names[:3])
  shutil.copy(os.path.join(BRAIN, glioma), root / 'test' / 'glioma' / 'copy.jpg')
  shutil.copy(os.path.join(BRAIN, meningioma), root / 'test' / 'meningioma' / 'copy.jpg')
  altered = Image.open(os.path.join(BRAIN, notumor)).convert('L').point(lambda v: min(v + 5, 255))
  altered.save(root / 'test' / 'notumor' / 'altered.png')

  kwargs = dict(data_dir=str(root), val_fraction=0.3, seed=0, cache_dir=str(tmp_path / 'c'))
  splits = datasets.load('image_folder', image_size=64, **kwargs)
  report = audit.audit(splits, loader.hashes_for('image_folder', **kwargs), threshold=4)
  leaked = {e['test'] for e in report['examples']['train+val/test']}
  assert leaked == {'test/glioma/copy.jpg', 'test/meningioma/copy.jpg',
                    'test/notumor/altered.png'}
  assert report['cross_split_exact_duplicates']['train+val/test'] == 2
  assert report['counts']['test'] == {'glioma': 2, 'meningioma': 2, 'notumor': 2,
                                      'pituitary': 1}


MEDMNIST = {  # From ../shared/data/medmnist/SOURCES.md.
    'pneumoniamnist': {'train': [1214, 3494], 'val': [135, 389], 'test': [234, 390]},
    'breastmnist': {'train': [147, 399], 'val': [21, 57], 'test': [42, 114]},
}


@pytest.mark.parametrize('task', sorted(MEDMNIST))
def test_real_medmnist_counts(task):
  path = os.path.join(DATA_DIR, 'medmnist', f'{task}.npz')
  if not os.path.isfile(path):
    pytest.skip(f'{path} absent; set MEDNAS_DATA_DIR or link ../shared/data to ./data')
  s = datasets.load(f'medmnist/{task}', data_dir=DATA_DIR, image_size=28)
  for split_name, split in s.items():
    assert split.class_counts(2).tolist() == MEDMNIST[task][split_name]
  assert s.train.images.shape[1:] == (28, 28, 1)
