"""PSO over encoder-decoder segmenters on generated blobs: the segmentation installation check.

Needs no data on disk (datasets/synthetic_seg.py draws its images and masks), so it runs
anywhere in about a minute at smoke; the end-to-end segmentation test runs it.
"""
import ml_collections

from experiments import common


def get_config(preset: str = 'smoke') -> ml_collections.ConfigDict:
  c = common.segmentation_config('pso_synthetic_seg', preset)
  c.data.image_size = 32
  c.data.options = ml_collections.ConfigDict(dict(
      num_train=256 if preset == 'smoke' else 1024, num_test=64, difficulty=0.3))
  c.space.num_stages = 2
  c.space.num_cells = (1,)
  c.space.cells = ('conv', 'sep', 'residual')
  c.space.widths = (8, 16)
  c.space.stem_widths = (8,)
  c.space.kernels = (3,)
  c.space.dilations = (1,)
  c.space.attention = ('none',)
  c.space.activations = ('relu',)
  c.space.learning_rates = (1e-2,)
  c.space.batch_sizes = (32,)
  c.space.augments = (0.0,)
  c.search.population = 4
  c.search.budget = {'smoke': 4, 'quick': 8, 'cpu': 16, 'full': 32}[preset]
  c.train.epochs = 2
  c.final.update(top_k=1, seeds=1, epochs=2)
  return c
