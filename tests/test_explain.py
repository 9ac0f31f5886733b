"""Grad-CAM: heat maps at the input's size, finite, and the figure the report embeds."""
import jax
import numpy as np

import datasets
import models
from models import saved
from models.genotype import Genotype, Stage
from nas import explain


def _model():
  genotype = Genotype((Stage(1, 'conv', 3, 8, 1, 'se', 'max'),
                       Stage(1, 'residual', 3, 8, 1, 'none', 'max')), stem_width=8)
  module = models.build(genotype, 3)
  variables = module.init(jax.random.key(0), np.zeros((1, 24, 24, 1), np.float32), train=False)
  return saved.SavedModel(genotype, {k: variables[k] for k in ('params', 'batch_stats')},
                          ('a', 'b', 'c$'), 24, 1, {})


def test_grad_cam_has_the_input_size_and_is_finite():
  images = np.random.default_rng(0).integers(0, 256, (5, 24, 24, 1), dtype=np.uint8)
  heat = explain.grad_cam(_model(), images, np.array([0, 1, 2, 0, 1]))
  assert heat.shape == (5, 24, 24)
  assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1


def test_pick_examples_takes_correct_and_wrong_per_class():
  labels = np.array([0, 0, 0, 1, 1, 2])
  predictions = np.array([0, 1, 0, 1, 0, 0])
  assert explain.pick_examples(labels, predictions, 3, per_kind=1) == [0, 1, 3, 4, 5]


def test_figure_is_written(tmp_path):
  rng = np.random.default_rng(1)
  split = datasets.Split(rng.integers(0, 256, (12, 24, 24, 1), dtype=np.uint8),
                         np.arange(12, dtype=np.int32) % 3, tuple(map(str, range(12))))
  path = explain.grad_cam_figure(_model(), split, str(tmp_path / 'explain' / 'grad_cam.png'))
  assert open(path, 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
