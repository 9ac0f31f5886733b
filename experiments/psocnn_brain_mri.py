"""psoCNN (Fernandes Junior & Yen 2019) on brain MRI: PSO over variable-length plain CNNs.

psoCNN moves 20 particles for 10 iterations through plain CNNs of varying depth (conv,
pooling and dense layers) and trains each candidate for 1 epoch; the full preset does the
same: 20 x 10 candidates, 1 epoch each, no successive halving. Smaller presets keep the
1-epoch evaluations with fewer particles and iterations. The depth varies as 0 to 3 conv
layers per stage, each stage after a max or average pool; kernels and widths are searched
per stage. Unpublished here (assumed): psoCNN's layer-wise velocity update becomes Nevergrad's
PSO in the space's vector encoding, every conv has a batch norm, the head is one dense layer,
and the data, training and final stage are those of pso_brain_mri.
"""
import ml_collections

from experiments import common
from experiments import pso_brain_mri

# Preset -> (particles, iterations).
_SWARM = {'smoke': (4, 1), 'quick': (6, 3), 'cpu': (10, 6), 'full': (20, 10)}


def get_config(preset: str = 'quick') -> ml_collections.ConfigDict:
  c = pso_brain_mri.get_config(preset)
  c.experiment = 'psocnn_brain_mri'
  c.search.optimizer = 'pso'
  # psoCNN's ranges (kernels 3 to 7, up to 256 filters) at full; on CPU, what fits the
  # FLOP budget of pso_brain_mri.
  genes = {
      'smoke': dict(num_cells=(0, 1), kernels=(3, 5), widths=(8, 16), stem_widths=(8,)),
      'quick': dict(num_cells=(0, 1, 2), kernels=(3, 5), widths=(16, 32), stem_widths=(16,)),
      'cpu': dict(num_cells=(0, 1, 2, 3), kernels=(3, 5), widths=(16, 32, 64),
                  stem_widths=(16, 32)),
      'full': dict(num_cells=(0, 1, 2, 3), kernels=(3, 5, 7), widths=(32, 64, 128, 256),
                   stem_widths=(32, 64)),
  }[preset]
  common.plain_cnn(c.space, downsample=('max', 'avg'), **genes)
  particles, iterations = _SWARM[preset]
  c.search.population = particles
  c.search.budget = particles * iterations
  c.search.fidelity.rungs = ()
  c.train.epochs = 1
  return c
