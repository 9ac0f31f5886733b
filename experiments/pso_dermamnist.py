"""PSO over the cell space on DermaMNIST (dermatoscopic images, 7 lesion classes, RGB).

The pso_brain_mri protocol on the MedMNIST v2 task; data, budgets and what was assumed are
in experiments/_medmnist.py. Published: the MedMNIST v2 paper's test AUC / ACC. The file
(dermamnist.npz, 7,007 / 1,003 / 2,005 images) goes in <data_dir>/medmnist/.
"""
import ml_collections

from experiments import _medmnist


def get_config(preset: str = 'quick') -> ml_collections.ConfigDict:
  return _medmnist.search_config('pso_dermamnist', 'dermamnist', 'pso', preset)
