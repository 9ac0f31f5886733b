"""Random search on DermaMNIST at the budget of pso_dermamnist: its baseline.

Same data, space, budget, rungs, training and final stage as pso_dermamnist (see
experiments/_medmnist.py); only the optimizer differs.
"""
import ml_collections

from experiments import _medmnist


def get_config(preset: str = 'quick') -> ml_collections.ConfigDict:
  return _medmnist.search_config('random_dermamnist', 'dermamnist', 'random', preset)
