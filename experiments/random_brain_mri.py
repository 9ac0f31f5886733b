"""Random search at the budget of pso_brain_mri: the baseline the published optimizers omit.

Not a paper's protocol but its control: the data, search space, budget, population,
successive-halving rungs, training and final stage are those of pso_brain_mri at every preset;
only the optimizer differs (Nevergrad's RandomSearch), so the two compare on equal terms.
"""
import ml_collections

from experiments import pso_brain_mri


def get_config(preset: str = 'quick') -> ml_collections.ConfigDict:
  c = pso_brain_mri.get_config(preset)
  c.experiment = 'random_brain_mri'
  c.search.optimizer = 'random'
  return c
