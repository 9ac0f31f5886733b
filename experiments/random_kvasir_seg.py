"""Random search at the budget of pso_kvasir_seg: its baseline.

The data, space, budget, population, rungs, training and final stage are pso_kvasir_seg's
at every preset; only the optimizer differs (Nevergrad's RandomSearch).
"""
import ml_collections

from experiments import _kvasir_seg


def get_config(preset: str = 'quick') -> ml_collections.ConfigDict:
  return _kvasir_seg.search_config('random_kvasir_seg', 'random', preset)
