"""PSO over encoder-decoder segmenters on Kvasir-SEG polyps (published: ColonSegNet 0.8206 Dice).

Not a paper's protocol: the brain MRI PSO search carried to segmentation. Data, space,
budgets and what was assumed are in experiments/_kvasir_seg.py; random_kvasir_seg is its
baseline and zoo_kvasir_seg the reference U-Net trained the same way.
"""
import ml_collections

from experiments import _kvasir_seg


def get_config(preset: str = 'quick') -> ml_collections.ConfigDict:
  return _kvasir_seg.search_config('pso_kvasir_seg', 'pso', preset)
