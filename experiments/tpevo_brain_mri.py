"""TPEvo-CNN (Ghosh 2023): differential evolution, then a genetic algorithm, on brain MRI.

TPEvo-CNN searches CNN architectures in two evolutionary phases: differential evolution
chooses the number of layers, then a genetic algorithm (crossover, mutation, elitist
selection) tunes the hyperparameters of that layered architecture. Optimizer 'tpevo'
(nas/optimizers.DepthThenGenes) follows that split over pso_brain_mri's space: DE over the
cells per stage with every other gene at its middle value for the first half of the budget
(whole populations), then the GA over every other gene with the depth fixed at the best
DE found. Assumed where the paper is silent: the middle values during phase one, and the
population, budget, rungs, training and final stage of pso_brain_mri at every preset, so
that the two protocols' optimizers compare on equal terms. Each phase evolves only where
its half of the budget exceeds one population (full: 100 of 20 each); at quick (6 then 4)
and cpu (10 then 10) phase one tries the shared first population's depths and phase two
that population's other genes at the best depth.
"""
import ml_collections

from experiments import pso_brain_mri


def get_config(preset: str = 'quick') -> ml_collections.ConfigDict:
  c = pso_brain_mri.get_config(preset)
  c.experiment = 'tpevo_brain_mri'
  c.search.optimizer = 'tpevo'
  return c
