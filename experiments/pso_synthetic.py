"""PSO on procedurally generated shapes: the self-contained demo and the end-to-end test.

Needs no data on disk, so it runs anywhere in a minute; use it to check an installation.
"""
import ml_collections

from experiments import common


def get_config(preset: str = 'smoke') -> ml_collections.ConfigDict:
  c = common.search_config('pso_synthetic', preset)
  c.data.name = 'synthetic'
  c.data.image_size = 16 if preset == 'smoke' else 32
  c.data.options = ml_collections.ConfigDict(dict(
      num_classes=4, num_train=1024 if preset == 'smoke' else 4096, num_test=256,
      difficulty=0.3))
  c.space.num_stages = 2
  c.space.num_cells = (0, 1, 2)
  c.space.cells = ('conv', 'sep', 'residual', 'shrinkage')
  c.space.widths = (8, 16)
  c.space.stem_widths = (8, 16)
  c.space.kernels = (3,)
  c.space.dilations = (1,)
  c.space.attention = ('none', 'se')
  c.space.learning_rates = (1e-2,)
  c.space.batch_sizes = (32,)
  c.space.augments = (0.0,)
  c.search.population = 4
  c.search.budget = {'smoke': 8, 'quick': 16, 'cpu': 32, 'full': 64}[preset]
  c.search.fidelity.rungs = (2, 4)
  c.search.fidelity.eta = 2
  c.train.epochs = 4
  c.final.update(top_k=1, seeds=2, epochs=4)
  return c
