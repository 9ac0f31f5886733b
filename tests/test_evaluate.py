"""`python -m nas.evaluate` with several models: their soft-voting ensemble."""
import os
import subprocess
import sys

import numpy as np
import pytest

import models
from nas import ensemble

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Fixed:
  """A stand-in for a saved model that predicts fixed probabilities."""

  def __init__(self, probabilities):
    self.probabilities = np.asarray(probabilities, np.float32)

  def predict(self, images, batch_size):
    assert len(images) == len(self.probabilities)
    return self.probabilities


def test_ensemble_is_the_mean_of_member_probabilities():
  a = _Fixed([[0.9, 0.1], [0.45, 0.55]])
  b = _Fixed([[0.2, 0.8], [0.6, 0.4]])
  each, mean = ensemble.probabilities([a, b], np.zeros((2, 4, 4, 1), np.uint8), 8)
  np.testing.assert_allclose(each[1], b.probabilities)
  # The second image: a says class 1, b class 0, the ensemble class 0 (0.525 against 0.475).
  np.testing.assert_allclose(mean, [[0.55, 0.45], [0.525, 0.475]], rtol=1e-6)


def test_model_paths_expand_globs_in_order_and_refuse_an_empty_match(tmp_path):
  for name in ('h-seed1', 'h-seed0', 'other'):
    (tmp_path / name).mkdir()
  named = str(tmp_path / 'best')
  assert ensemble.model_paths([named, str(tmp_path / 'h-seed*')]) == [
      named, str(tmp_path / 'h-seed0'), str(tmp_path / 'h-seed1')]
  with pytest.raises(ValueError, match='matches nothing'):
    ensemble.model_paths([str(tmp_path / 'final' / '*')])


def test_models_of_different_classes_refuse_to_ensemble_in_one_line(tmp_path, save_tiny_model):
  first = save_tiny_model(str(tmp_path / 'a'), ('normal', 'pneumonia'))
  second = save_tiny_model(str(tmp_path / 'b'), ('benign', 'malignant'))
  result = subprocess.run(
      [sys.executable, '-m', 'nas.evaluate', f'--model={first}', f'--model={second}'],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1, result.stderr[-3000:]
  assert errors[0].startswith('error: these models cannot form one ensemble')
  assert 'class_names' in errors[0]
  assert ensemble.mismatch([models.load(first), models.load(first)], [first, first]) is None
