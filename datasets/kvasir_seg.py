"""Kvasir-SEG polyp segmentation (Jha et al., MMM 2020), with the authors' 880/120 split.

Reads `<data_dir>/kvasir_seg/{train,test}/{images,masks}/<id>.jpg`: the official
train.txt ids as train/, the official val.txt ids (the test set of the
literature) as test/; `load` carves val from train. Masks are JPEGs whose polyp
pixels are near 255 and background near 0, binarised at 127.
"""
from __future__ import annotations

import os

from absl import logging

from datasets import mask_folder
from datasets import paths
from datasets.records import DataError, Source

URL = 'https://datasets.simula.no/kvasir-seg/'
SPLIT_LISTS = ('https://github.com/DebeshJha/2020-MediaEval-Medico-polyp-segmentation '
               '(kvasir-seg-train-val/train.txt and val.txt)')
CLASS_NAMES = ('background', 'polyp')
MASK_THRESHOLD = 127
OFFICIAL_COUNTS = {'train': 880, 'test': 120}


def load_source(name: str, *, data_dir: str | None, image_size: int, channels: int, seed: int,
                cache_dir: str | None) -> Source:
  """The official splits, decoded and cached like mask_folder's trees."""
  del seed
  root = os.path.join(data_dir or paths.default_data_dir(), 'kvasir_seg')
  layout = (f'download Kvasir-SEG.zip from {URL} and the official lists {SPLIT_LISTS}, then '
            'python -m datasets.prepare_kvasir_seg --source=Kvasir-SEG --train_list=train.txt '
            f'--test_list=val.txt lays them out as {root}/train/masks, {root}/test/images, ...')
  if not os.path.isdir(root):
    raise DataError(f'kvasir_seg not found at {root}; {layout} (or pass --data_dir / set '
                    'MEDNAS_DATA_DIR to the folder that holds kvasir_seg)')
  tree = mask_folder.scan(root)
  if sorted(tree.pairs) != sorted(OFFICIAL_COUNTS):
    raise DataError(f'{root} has splits {sorted(tree.pairs)}, not train and test; {layout}. '
                    'Use dataset mask_folder for other trees')
  counts = {split: len(pairs) for split, pairs in tree.pairs.items()}
  if counts != OFFICIAL_COUNTS:
    logging.warning('kvasir_seg at %s has %s pairs, not the official %s; results will not '
                    'compare with published ones', root, counts, OFFICIAL_COUNTS)
  splits, corrupt = mask_folder.decode_scan(tree, name, image_size, channels, MASK_THRESHOLD,
                                            cache_dir)
  return Source(train=splits['train'], val=None, test=splits['test'],
                class_names=CLASS_NAMES, source=root, corrupt=corrupt)
