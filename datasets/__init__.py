"""MedNAS datasets: `load(name, ...) -> Splits` of uint8 images for search and evaluation.

Classification: 'brain_tumor_mri' (TFDS builder over the Kaggle folder),
'image_folder' (any <root>/[<split>/]<class>/* tree), 'medmnist/<name>'
(official .npz files) and 'synthetic' (procedural shapes).

Segmentation: 'kvasir_seg' (polyps, official 880/120 split), 'mask_folder' (any
<root>/[<split>/]images/* with masks/* of the same names) and 'synthetic_seg'
(procedural blobs). Their splits carry `masks`, uint8 (N, H, W, 1) of 0/1
aligned with `images`; `Splits.task` and info['task'] are 'segmentation' (else
'classification'), `labels` say whether each mask has foreground, and
`class_names` name the mask values, e.g. ('background', 'polyp').

The input pipeline and augmentation live in `datasets.pipeline` (batches gain
'seg_mask') and `datasets.augment` (`augment_with_masks`), the leakage audit in
`datasets.audit`.
"""
from datasets.loader import NAMES
from datasets.loader import default_data_dir
from datasets.loader import load
from datasets.records import CLASSIFICATION
from datasets.records import DataError
from datasets.records import SEGMENTATION
from datasets.records import Split
from datasets.records import Splits
from datasets.spec import Spec

__all__ = ['CLASSIFICATION', 'NAMES', 'SEGMENTATION', 'DataError', 'Spec', 'Split', 'Splits',
           'default_data_dir', 'load']
