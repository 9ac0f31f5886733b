"""PSO over the cell space on BreastMNIST (breast ultrasound, malignant or not; 156 test images).

The pso_brain_mri protocol on the MedMNIST v2 task; data, budgets and what was assumed are
in experiments/_medmnist.py. Published: the MedMNIST v2 paper's test AUC / ACC.
"""
import ml_collections

from experiments import _medmnist


def get_config(preset: str = 'quick') -> ml_collections.ConfigDict:
  return _medmnist.search_config('pso_breastmnist', 'breastmnist', 'pso', preset)
