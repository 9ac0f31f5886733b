"""TPEvo-CNN (Ghosh 2023): differential evolution, then a genetic algorithm, on brain MRI.

TPEvo-CNN searches CNN architectures in two evolutionary phases, differential evolution
followed by a genetic algorithm. Unpublished details are assumed: each phase gets half of the
budget (optimizer 'de_ga', a Nevergrad chaining of DE and the GA of nas/optimizers.py), and
the search space, population, budget, rungs, training and final stage are those of
pso_brain_mri at every preset, so that the two protocols' optimizers compare on equal terms.
"""
import ml_collections

from experiments import pso_brain_mri


def get_config(preset: str = 'quick') -> ml_collections.ConfigDict:
  c = pso_brain_mri.get_config(preset)
  c.experiment = 'tpevo_brain_mri'
  c.search.optimizer = 'de_ga'
  return c
