"""TPEvo-CNN (Ghosh 2023): differential evolution, then a genetic algorithm, on brain MRI.

TPEvo-CNN searches CNN architectures in two evolutionary phases: differential evolution
chooses the number of layers, then a genetic algorithm (crossover, mutation, elitist
selection) tunes the hyperparameters of that layered architecture. Here both phases search
every gene of pso_brain_mri's space (not yet the paper's split of depth, then the rest), each
phase gets half of the budget (optimizer 'de_ga', a Nevergrad chaining of DE and the GA of
nas/optimizers.py), and the population, budget, rungs, training and final stage are those of
pso_brain_mri at every preset, so that the two protocols' optimizers compare on equal terms.
Nevergrad's chaining tells the GA every result of the DE phase, but the GA asks its own first
population of random draws before it evolves, and the shared first population
(`search.shared_start`) fills DE's first generation. So DE evolves only where half the budget
exceeds one population, and the GA's first population is random: at the quick and cpu
presets (10 of 6, 20 of 10) every candidate is a random draw, as in random_brain_mri.
"""
import ml_collections

from experiments import pso_brain_mri


def get_config(preset: str = 'quick') -> ml_collections.ConfigDict:
  c = pso_brain_mri.get_config(preset)
  c.experiment = 'tpevo_brain_mri'
  c.search.optimizer = 'de_ga'
  return c
