"""The TFDS builder on a fake Kaggle tree, duplicate detection, dedup and the audit CLI."""
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

import datasets
from datasets import audit
from datasets import brain_tumor_mri
from datasets import dedup
from datasets import imaging
from datasets import loader
from datasets import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
  monkeypatch.setenv('MEDNAS_CACHE_DIR', str(tmp_path / 'cache'))


def _images(num, seed=0, size=64):
  images, _ = synthetic.generate(num, 8, size, 0.2, np.random.default_rng(seed))
  return images


def _save(path, image):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(image).save(path)


@pytest.fixture
def fake_kaggle(tmp_path):
  """A Kaggle-layout tree with 3 Training and 2 Testing JPEGs per class."""
  root = tmp_path / 'data' / 'brain_tumor_mri'
  images = _images(20)
  for k, name in enumerate(brain_tumor_mri.CLASS_NAMES):
    for i in range(5):
      split = 'Training' if i < 3 else 'Testing'
      _save(str(root / split / name / f'{i}.jpg'), images[k * 5 + i])
  return root


def test_tfds_builder_without_tensorflow(fake_kaggle, tmp_path):
  assert 'tensorflow' not in sys.modules
  builder = tfds.builder('brain_tumor_mri', config='32px_c1', data_dir=str(tmp_path / 'tfds'))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(fake_kaggle)))
  source = builder.as_data_source()
  assert {k: len(v) for k, v in source.items()} == {'train': 12, 'test': 8}
  record = source['test'][0]
  assert record['image'].shape == (32, 32, 1) and record['image'].dtype == np.uint8
  assert record['id'].decode().startswith('Testing/')
  assert list(builder.data_path.glob('*.array_record*'))
  assert 'tensorflow' not in sys.modules


def test_brain_mri_cache_reused_then_invalidated(fake_kaggle, tmp_path, monkeypatch):
  data_dir = str(fake_kaggle.parent)
  first = datasets.load('brain_tumor_mri', data_dir=data_dir, image_size=32, val_fraction=0.3)
  assert (len(first.train), len(first.val), len(first.test)) == (8, 4, 8)
  assert first.class_names == brain_tumor_mri.CLASS_NAMES

  calls = []
  real = imaging.decode
  monkeypatch.setattr(imaging, 'decode', lambda *a: calls.append(a) or real(*a))
  again = datasets.load('brain_tumor_mri', data_dir=data_dir, image_size=32, val_fraction=0.3)
  assert not calls
  np.testing.assert_array_equal(first.test.images, again.test.images)

  changed = 'Testing/glioma/3.jpg'
  _save(str(fake_kaggle / changed), np.full((64, 64), 255, np.uint8))
  after = datasets.load('brain_tumor_mri', data_dir=data_dir, image_size=32, val_fraction=0.3)
  assert len(calls) == 20
  assert (after.test.images[after.test.ids.index(changed)] >= 250).all()


def test_concurrent_first_loads_build_once(fake_kaggle, tmp_path):
  code = ('import datasets; s = datasets.load("brain_tumor_mri", data_dir=%r, image_size=32, '
          'cache_dir=%r); print(len(s.train) + len(s.val))'
          % (str(fake_kaggle.parent), str(tmp_path / 'shared_cache')))
  procs = [subprocess.Popen([sys.executable, '-c', code], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for _ in range(3)]
  results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
  for out, err, returncode in results:
    assert returncode == 0, err[-2000:]
    assert out.split()[-1] == '12'  # after TFDS's own progress lines
  assert len(list((tmp_path / 'shared_cache').rglob('*.array_record*'))) == 2


def test_brain_mri_wrong_layout_is_an_error(fake_kaggle):
  for split in ('Training', 'Testing'):
    os.rename(fake_kaggle / split / 'notumor', fake_kaggle / split / 'healthy')
  with pytest.raises(datasets.DataError, match='not the Kaggle layout.*image_folder'):
    datasets.load('brain_tumor_mri', data_dir=str(fake_kaggle.parent))


def test_corrupt_brain_image_obeys_policy(fake_kaggle):
  (fake_kaggle / 'Testing' / 'pituitary' / '4.jpg').write_bytes(b'\xff\xd8\xff garbage')
  data_dir = str(fake_kaggle.parent)
  s = datasets.load('brain_tumor_mri', data_dir=data_dir, image_size=32, val_fraction=0.3)
  assert s.info['corrupt_skipped'] == ['Testing/pituitary/4.jpg'] and len(s.test) == 7
  with pytest.raises(datasets.DataError, match=r'corrupt image .*Testing/pituitary/4\.jpg'):
    datasets.load('brain_tumor_mri', data_dir=data_dir, image_size=32, on_corrupt='error')


def test_nearest_matches_brute_force():
  rng = np.random.default_rng(0)
  query = rng.integers(0, 2**63, 700, dtype=np.uint64)
  reference = rng.integers(0, 2**63, 90, dtype=np.uint64)
  reference[5] = query[600] ^ np.uint64(0b1011)  # 3 bits from query 600
  dist, index = dedup.nearest(query, reference)
  bits = lambda x: np.unpackbits(x.view(np.uint8).reshape(len(x), 8), axis=1)
  brute = (bits(query)[:, None] != bits(reference)[None]).sum(-1)
  np.testing.assert_array_equal(dist, brute.min(1))
  assert dist[600] == 3 and index[600] == 5
  self_dist, self_index = dedup.nearest(query, query, same=True)
  assert (self_index != np.arange(len(query))).all() and (self_dist > 0).all()


def _planted_tree(root):
  """Distinct images in train/ and test/, plus in test/ one exact copy of a train
  image and one slightly altered copy (brighter, re-encoded); one exact duplicate
  inside train/."""
  images = _images(40, seed=1)
  for i in range(24):
    _save(str(root / 'train' / f'c{i % 2}' / f'{i}.png'), images[i])
  for i in range(24, 34):
    _save(str(root / 'test' / f'c{i % 2}' / f'{i}.png'), images[i])
  _save(str(root / 'train' / 'c0' / 'copy_of_0.png'), images[0])
  _save(str(root / 'test' / 'c0' / 'copy_of_2.png'), images[2])
  brighter = np.clip(images[4].astype(int) + 6, 0, 255).astype(np.uint8)
  os.makedirs(root / 'test' / 'c0', exist_ok=True)
  Image.fromarray(brighter).save(root / 'test' / 'c0' / 'near_4.jpg', quality=90)
  return root


def test_dedup_drops_planted_leaks(tmp_path):
  root = str(_planted_tree(tmp_path / 'tree'))
  kwargs = dict(data_dir=root, image_size=32, val_fraction=0.2)
  plain = datasets.load('image_folder', **kwargs)
  s = datasets.load('image_folder', dedup=True, **kwargs)
  dropped = s.info['dedup_dropped']
  assert dropped['test'] == 2
  assert set(plain.test.ids) - set(s.test.ids) == {'test/c0/copy_of_2.png',
                                                   'test/c0/near_4.jpg'}
  # The exact pair is dropped inside train, or from val when the carve split it.
  assert dropped['train'] + dropped['val'] == 1
  kept = s.train.ids + s.val.ids
  assert ('train/c0/0.png' in kept) + ('train/c0/copy_of_0.png' in kept) == 1
  assert len(kept) == len(plain.train) + len(plain.val) - 1


def test_audit_report_counts_planted_duplicates(tmp_path):
  root = str(_planted_tree(tmp_path / 'tree'))
  kwargs = dict(data_dir=root, val_fraction=0.2, seed=0, cache_dir=None)
  splits = datasets.load('image_folder', image_size=32, **kwargs)
  report = audit.audit(splits, loader.hashes_for('image_folder', **kwargs), threshold=4)
  assert report['counts']['test'] == {'c0': 7, 'c1': 5}
  assert report['cross_split_near_duplicates']['train+val/test'] == 2
  assert report['cross_split_exact_duplicates']['train+val/test'] == 1
  leaked = {e['test'] for e in report['examples']['train+val/test']}
  assert leaked == {'test/c0/copy_of_2.png', 'test/c0/near_4.jpg'}
  within = report['exact_duplicates']['train']['redundant_images'] + \
      report['cross_split_exact_duplicates']['train/val']
  assert within == 1  # copy_of_0 duplicates 0.png, in train or across train/val


def _run_audit(*args):
  return subprocess.run([sys.executable, '-m', 'datasets.audit', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=120)


def test_audit_cli_json(tmp_path):
  root = str(_planted_tree(tmp_path / 'tree'))
  result = _run_audit('--dataset=image_folder', f'--data_dir={root}', '--json',
                      f'--cache_dir={tmp_path / "cache"}', '--image_size=32')
  assert result.returncode == 0, result.stderr
  report = json.loads(result.stdout)
  assert report['cross_split_near_duplicates']['train+val/test'] == 2
  assert set(report['counts']) == {'train', 'val', 'test'}


@pytest.mark.parametrize('args, message', [
    (['--dataset=brain_tumor_mri', '--data_dir=/nonexistent'], 'kaggle.com'),
    (['--dataset=imagefolder'], "did you mean 'image_folder'"),
    ([], 'pass --dataset'),
])
def test_audit_cli_bad_input_is_one_line(args, message):
  result = _run_audit(*args)
  assert result.returncode == 2
  assert result.stderr.startswith('error: ') and message in result.stderr
  assert 'Traceback' not in result.stderr and result.stderr.count('\n') == 1
