"""`python -m nas.predict` on a folder the test writes, with a corrupt file among the images."""
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

import models
from datasets import imaging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ('glioma', 'notumor', '<b>pituitary</b>')


def test_predict_a_folder_with_a_corrupt_file(tmp_path, save_tiny_model):
  model_dir = save_tiny_model(str(tmp_path / 'best'), CLASSES)
  folder = tmp_path / 'scans'
  (folder / 'nested').mkdir(parents=True)
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (40, 30), dtype=np.uint8)).save(folder / 'a.png')
  Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(folder / 'b.jpg')
  Image.fromarray(rng.integers(0, 255, (64, 64, 4), dtype=np.uint8), 'RGBA').save(
      folder / 'nested' / 'c.png')
  (folder / 'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 not really a jpeg')
  (folder / 'notes.txt').write_text('ignored')

  result = subprocess.run(
      [sys.executable, '-m', 'nas.predict', f'--model={model_dir}', str(folder), '--json'],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = {os.path.relpath(r['path'], folder): r for r in json.loads(result.stdout)}
  assert set(rows) == {'a.png', 'b.jpg', 'broken.jpg', os.path.join('nested', 'c.png')}
  assert 'error' in rows['broken.jpg']
  assert [line for line in result.stderr.splitlines() if line.startswith('error: ')] == [
      f'error: {folder / "broken.jpg"}: {rows["broken.jpg"]["error"]}']

  model = models.load(model_dir)
  for name in ('a.png', 'b.jpg', os.path.join('nested', 'c.png')):
    expected = model.predict(imaging.decode(str(folder / name), 16, 1)[None])[0]
    got = rows[name]['probabilities']
    np.testing.assert_allclose([got[c] for c in CLASSES], expected, rtol=1e-5, atol=1e-6)
    assert rows[name]['class'] == CLASSES[int(expected.argmax())]


def test_predict_without_a_model_is_one_line(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'nas.predict', f'--model={tmp_path / "nothing"}', str(tmp_path)],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  assert result.stderr.strip().startswith('error: cannot load a model')
