"""The diabetic-retinopathy GA CNN (Das 2021, Messidor AUC 0.9933) searched on brain MRI.

Its genetic algorithm evolves a plain CNN's number of convolution layers and their kernel
sizes. Here the genes are the conv layers of each stage (0 to 3) and each stage's kernel;
every stage starts with a 2x2 max pool. Unpublished details are assumed: one fixed width for
every layer (the space has one width list for all stages), the GA's population and
generations, and the data, budget, rungs, training and final stage of pso_brain_mri.
"""
import ml_collections

from experiments import common
from experiments import pso_brain_mri


def get_config(preset: str = 'quick') -> ml_collections.ConfigDict:
  c = pso_brain_mri.get_config(preset)
  c.experiment = 'ga_brain_mri'
  c.search.optimizer = 'ga'
  width = {'smoke': 8, 'quick': 16, 'cpu': 32, 'full': 64}[preset]
  common.plain_cnn(
      c.space, num_cells=(0, 1) if preset == 'smoke' else (0, 1, 2, 3),
      kernels=(3, 5) if preset == 'smoke' else (3, 5, 7), widths=(width,),
      stem_widths=(width,))
  return c
