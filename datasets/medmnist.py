"""MedMNIST v2 `.npz` files (official splits), e.g. `medmnist/pneumoniamnist`."""
from __future__ import annotations

import os
import re

import numpy as np

from datasets import imaging
from datasets import paths
from datasets.records import DataError, Source, make_split

ZENODO_URL = 'https://zenodo.org/records/10519652'
# Label names from medmnist/info.py (MedMNIST v2.1.0); other files get '0', '1', ...
CLASS_NAMES = {
    'pathmnist': ('adipose', 'background', 'debris', 'lymphocytes', 'mucus',
                  'smooth muscle', 'normal colon mucosa', 'cancer-associated stroma',
                  'colorectal adenocarcinoma epithelium'),
    'dermamnist': ('actinic keratoses and intraepithelial carcinoma',
                   'basal cell carcinoma', 'benign keratosis-like lesions',
                   'dermatofibroma', 'melanoma', 'melanocytic nevi', 'vascular lesions'),
    'octmnist': ('choroidal neovascularization', 'diabetic macular edema', 'drusen',
                 'normal'),
    'pneumoniamnist': ('normal', 'pneumonia'),
    'retinamnist': ('0', '1', '2', '3', '4'),
    'breastmnist': ('malignant', 'normal+benign'),
    'bloodmnist': ('basophil', 'eosinophil', 'erythroblast', 'immature granulocytes',
                   'lymphocyte', 'monocyte', 'neutrophil', 'platelet'),
    'tissuemnist': ('collecting duct, connecting tubule', 'distal convoluted tubule',
                    'glomerular endothelial cells', 'interstitial endothelial cells',
                    'leukocytes', 'podocytes', 'proximal tubule segments',
                    'thick ascending limb'),
    **dict.fromkeys(('organamnist', 'organcmnist', 'organsmnist'), (
        'bladder', 'femur-left', 'femur-right', 'heart', 'kidney-left', 'kidney-right',
        'liver', 'lung-left', 'lung-right', 'pancreas', 'spleen')),
}
MULTI_LABEL = frozenset({'chestmnist'})
_SPLITS = ('train', 'val', 'test')


def load_source(name: str, *, data_dir: str | None, image_size: int, channels: int, seed: int,
                cache_dir: str | None) -> Source:
  """Reads `<data_dir>/medmnist/<task>.npz`; resizes only when image_size differs."""
  del seed, cache_dir  # official splits; decoding npz arrays is fast
  task = name.partition('/')[2]
  # MedMNIST+ files carry their size: 'pneumoniamnist_64'.
  base = re.sub(r'_\d+$', '', task)
  path = os.path.join(data_dir or paths.default_data_dir(), 'medmnist', f'{task}.npz')
  if base in MULTI_LABEL:
    raise DataError(f'{name} is a multi-label task, which is unsupported; '
                    'use a multi-class MedMNIST task such as medmnist/pneumoniamnist')
  if not os.path.isfile(path):
    raise DataError(
        f'no file {path}; download the official MedMNIST v2 {task}.npz from '
        f'{ZENODO_URL} (or `pip install medmnist` and copy it from ~/.medmnist) '
        f'into {os.path.dirname(path)}')
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
  except (OSError, ValueError) as e:
    raise DataError(f'cannot read {path} ({e}); download it again from {ZENODO_URL}') from e
  missing = [f'{s}_{kind}' for s in _SPLITS for kind in ('images', 'labels')
             if f'{s}_{kind}' not in arrays]
  if missing:
    raise DataError(f'{path} lacks arrays {missing}; expected an official MedMNIST '
                    f'v2 file from {ZENODO_URL}')

  splits = {}
  for s in _SPLITS:
    images, labels = arrays[f'{s}_images'], arrays[f'{s}_labels']
    if labels.ndim == 2 and labels.shape[1] > 1:
      raise DataError(f'{path} has multi-label targets {labels.shape}, which are '
                      'unsupported; use a multi-class task')
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
      raise DataError(f'{path} has images of shape {images.shape}; only 2D images '
                      '(N, H, W) or (N, H, W, 1|3) are supported')
    splits[s] = make_split(imaging.resize_array(np.asarray(images, np.uint8), image_size, channels),
                           labels.reshape(-1), tuple(f'{s}/{i}' for i in range(len(labels))))
  num_classes = int(max(split.labels.max(initial=-1) for split in splits.values())) + 1
  class_names = CLASS_NAMES.get(base) or tuple(str(i) for i in range(num_classes))
  if num_classes > len(class_names):
    raise DataError(f'{path} has label {num_classes - 1}, but {base} has '
                    f'{len(class_names)} classes; download the official file again')
  return Source(train=splits['train'], val=splits['val'], test=splits['test'],
                class_names=class_names, source=path)
