"""The grid-searched CNN (Irmak 2021, 92.66% on other, 5-class brain MRI data), here.

Irmak tunes a plain CNN's hyperparameters by grid search. Here a fixed plain CNN (two 3x3
conv layers per stage, each stage after a 2x2 max pool) is trained at every point of a
declared grid: three levels each of learning rate, dropout and batch size at the full
preset (27 points), fewer batch sizes (and at smoke, fewer levels) below it. Unpublished
details are assumed: which hyperparameters and levels, the network's widths, and the data,
rungs, training and final stage of pso_brain_mri.
"""
import math

import ml_collections

from experiments import common
from experiments import pso_brain_mri

# Preset -> the grid's levels: learning rates, dropouts, batch sizes.
_GRID = {
    'smoke': ((1e-3, 3e-3), (0.0, 0.2), (64,)),
    'quick': ((1e-3, 3e-3, 1e-2), (0.0, 0.2, 0.4), (64,)),
    'cpu': ((1e-3, 3e-3, 1e-2), (0.0, 0.2, 0.4), (32, 64)),
    'full': ((3e-4, 1e-3, 3e-3), (0.0, 0.2, 0.4), (32, 64, 128)),
}


def get_config(preset: str = 'quick') -> ml_collections.ConfigDict:
  c = pso_brain_mri.get_config(preset)
  c.experiment = 'grid_brain_mri'
  c.search.optimizer = 'grid'
  width = {'smoke': 8, 'quick': 16, 'cpu': 32, 'full': 64}[preset]
  learning_rates, dropouts, batch_sizes = _GRID[preset]
  # Every gene off the grid takes one value; at 224px a strided stem keeps the cost down.
  common.plain_cnn(c.space, num_cells=(2,), kernels=(3,), widths=(width,),
                   stem_widths=(width,), stem_strides=(2 if preset == 'full' else 1,),
                   augments=(0.25,), weight_decays=(1e-4,), label_smoothings=(0.0,),
                   dropouts=dropouts, learning_rates=learning_rates, batch_sizes=batch_sizes)
  c.search.budget = math.prod(len(levels) for levels in _GRID[preset])
  return c
