"""PSO over the cell space on the brain tumour MRI set (the PSO-CNN protocol, 99.19% published).

Amoury et al. (2025) search a CNN with particle swarm optimisation on the Nickparvar Kaggle
set (4 classes, official Testing split of 1,311). Unpublished details are assumed: the swarm
size and iterations per preset below, grey 64x64 input on CPU and 224x224 RGB on GPU.
"""
import ml_collections

from experiments import common


def get_config(preset: str = 'quick') -> ml_collections.ConfigDict:
  c = common.search_config('pso_brain_mri', preset)
  c.data.name = 'brain_tumor_mri'
  c.search.optimizer = 'pso'
  c.data.image_size = {'smoke': 32, 'quick': 64, 'cpu': 64, 'full': 224}[preset]
  c.data.channels = 3 if preset == 'full' else 1
  # The set has near-duplicate images across Training and Testing (datasets.audit).
  c.final.dedup_test = True

  if preset == 'smoke':
    common.smoke_search(c)
  elif preset == 'quick':
    c.space.widths = (16, 32, 64)
    c.space.stem_widths = (16, 32)
    c.space.kernels = (3,)
    c.space.learning_rates = (3e-3,)
    c.space.augments = (0.25,)
    c.space.max_flops = 40_000_000  # per image, forward: about 20 s an epoch on 2 cores
    c.search.population = 6
    c.search.budget = 10  # all 10 train (untrainable ones are redrawn): about 15 min
    c.search.fidelity.rungs = (1, 2)
    c.search.fidelity.eta = 3
    c.final.update(top_k=1, seeds=2, epochs=6)
  elif preset == 'cpu':
    c.space.num_stages = 4
    c.space.num_cells = (0, 1, 2)
    c.space.widths = (16, 32, 64, 128)
    c.space.kernels = (3, 5)
    c.space.learning_rates = (1e-3, 3e-3)
    c.space.augments = (0.25, 0.5)
    c.space.max_flops = 100_000_000  # per image, forward: at most ~30 s an epoch on 2 cores
    c.search.population = 10
    c.search.budget = 20
    c.search.fidelity.rungs = (2, 6)
    c.search.fidelity.eta = 4
    c.final.update(top_k=1, seeds=3, epochs=30)
  else:  # full: paper scale, for a GPU
    c.space.num_stages = 5
    c.space.num_cells = (0, 1, 2, 3, 4)
    c.space.widths = (32, 64, 128, 256)
    c.space.stem_strides = (1, 2)
    c.space.learning_rates = (3e-4, 1e-3, 3e-3)
    c.space.batch_sizes = (32, 64)
    c.search.population = 20
    c.search.budget = 200
    c.search.fidelity.rungs = (5, 15)
    c.search.fidelity.eta = 4
    c.final.update(top_k=3, seeds=3, epochs=50)
  return c
