"""MedNAS datasets: `load(name, ...) -> Splits` of uint8 images for search and evaluation.

Names: 'brain_tumor_mri' (TFDS builder over the Kaggle folder), 'image_folder'
(any <root>/[<split>/]<class>/* tree), 'medmnist/<name>' (official .npz files)
and 'synthetic' (procedural shapes). The input pipeline and augmentation live in
`datasets.pipeline` and `datasets.augment`, the leakage audit in `datasets.audit`.
"""
from datasets.loader import NAMES
from datasets.loader import default_data_dir
from datasets.loader import load
from datasets.records import DataError
from datasets.records import Split
from datasets.records import Splits
from datasets.spec import Spec

__all__ = ['NAMES', 'DataError', 'Spec', 'Split', 'Splits', 'default_data_dir', 'load']
