r"""Lays out a downloaded Kvasir-SEG as the kvasir_seg loader reads it, by the official lists.

  python -m datasets.prepare_kvasir_seg --source=Kvasir-SEG --train_list=train.txt \
      --test_list=val.txt [--data_dir=./data]

--source is the unpacked Kvasir-SEG.zip (its images/ and masks/); the lists are the authors'
kvasir-seg-train-val/train.txt and val.txt (one id per line; val.txt is the literature's
test set). Writes DATA_DIR/kvasir_seg/{train,test}/{images,masks}/<id>.jpg and copies the
lists to DATA_DIR/kvasir_seg/splits/. The tree is assembled aside and renamed into place, so
an interrupted run leaves no half-prepared dataset.
"""
from __future__ import annotations

import os
import shutil
import sys

from absl import app
from absl import flags

from datasets import kvasir_seg
from datasets import paths
from datasets.records import DataError

_SOURCE = flags.DEFINE_string('source', None, 'The unpacked Kvasir-SEG.zip: holds images/ '
                              'and masks/.')
_TRAIN_LIST = flags.DEFINE_string('train_list', None, 'The authors\' train.txt.')
_TEST_LIST = flags.DEFINE_string('test_list', None, 'The authors\' val.txt (the test set).')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Datasets folder to write kvasir_seg/ '
                                'into; default MEDNAS_DATA_DIR or ./data.')

_LISTS = {'train': 'train.txt', 'test': 'val.txt'}  # our split -> the authors' list name


def read_ids(path: str) -> list[str]:
  """The ids of a split list, one per line; blank lines and extensions ignored."""
  try:
    with open(path) as f:
      return [os.path.splitext(line.strip())[0] for line in f if line.strip()]
  except OSError as e:
    raise DataError(f'cannot read the split list {path}: {e.strerror}; download it from '
                    f'{kvasir_seg.SPLIT_LISTS}') from e


def prepare(source: str, lists: dict[str, str], data_dir: str) -> str:
  """Copies every listed pair of `source` into data_dir/kvasir_seg; returns that folder."""
  ids = {split: read_ids(path) for split, path in lists.items()}
  both = set(ids['train']) & set(ids['test'])
  if both:
    raise DataError(f'{len(both)} ids are in both split lists (e.g. {sorted(both)[0]}); pass '
                    'the authors\' train.txt and val.txt')
  files = {}
  for split, names in ids.items():
    for name in names:
      for kind in ('images', 'masks'):
        path = os.path.join(source, kind, f'{name}.jpg')
        if not os.path.isfile(path):
          raise DataError(f'{path} is missing: {lists[split]} lists {name}; pass the unpacked '
                          f'Kvasir-SEG.zip from {kvasir_seg.URL} as --source')
        files[os.path.join(split, kind, f'{name}.jpg')] = path
  target = os.path.join(data_dir, 'kvasir_seg')
  if os.path.exists(target):
    raise DataError(f'{target} already exists; remove it or pass another --data_dir')
  partial = target + '.partial'
  shutil.rmtree(partial, ignore_errors=True)
  for relative, path in files.items():
    os.makedirs(os.path.dirname(os.path.join(partial, relative)), exist_ok=True)
    shutil.copyfile(path, os.path.join(partial, relative))
  os.makedirs(os.path.join(partial, 'splits'))
  for split, path in lists.items():
    shutil.copyfile(path, os.path.join(partial, 'splits', _LISTS[split]))
  os.replace(partial, target)
  return target


def main(argv: list[str]) -> None:
  del argv
  try:
    if not (_SOURCE.value and _TRAIN_LIST.value and _TEST_LIST.value):
      raise DataError('pass --source (the unpacked Kvasir-SEG.zip), --train_list (train.txt) '
                      'and --test_list (val.txt)')
    target = prepare(_SOURCE.value, {'train': _TRAIN_LIST.value, 'test': _TEST_LIST.value},
                     _DATA_DIR.value or paths.default_data_dir())
  except (DataError, OSError) as e:
    print(f'error: {e}'.replace('\n', ' '), file=sys.stderr)
    sys.exit(2)
  print(target)


if __name__ == '__main__':
  app.run(main)
