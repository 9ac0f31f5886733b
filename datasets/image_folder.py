"""Any `<root>/<class>/*` or `<root>/<split>/<class>/*` tree of images, decoded and cached."""
from __future__ import annotations

import os

import numpy as np

from datasets import cache
from datasets import folder
from datasets import imaging
from datasets import splitting
from datasets.records import DataError, Source, Split, make_split

# Bump when decoding changes, so that caches decoded the old way are not reused.
DECODER_VERSION = '1'
# The carved test split must not move when `seed` changes: search seeds would
# otherwise see test images in training.
TEST_SEED = 0


def decode_scan(scan: folder.FolderScan, image_size: int, channels: int,
                cache_dir: str | None) -> tuple[dict[str, Split], tuple[tuple[str, str], ...]]:
  """All splits of `scan`, decoded, from the cache when the files are unchanged.

  Returns the splits and the (id, reason) of every file that failed to decode.
  """
  key = cache.digest([DECODER_VERSION, scan.fingerprint, str(image_size), str(channels)])
  stem = os.path.basename(scan.root.rstrip(os.sep)) or 'root'
  path = os.path.join(cache.cache_dir(cache_dir), 'arrays',
                      f'{stem}-{image_size}px-c{channels}-{key}.npz')
  stored = cache.load_npz(path)
  if stored is None:
    stored = _decode(scan, image_size, channels)
    cache.save_npz(path, stored)
  splits = {split: make_split(stored[f'{split}.images'], stored[f'{split}.labels'],
                              tuple(stored[f'{split}.ids'].tolist()))
            for split in scan.files}
  corrupt = tuple(zip(stored['corrupt.ids'].tolist(), stored['corrupt.reasons'].tolist()))
  return splits, corrupt


def _decode(scan: folder.FolderScan, image_size: int, channels: int) -> dict[str, np.ndarray]:
  arrays = {}
  corrupt_ids, corrupt_reasons = [], []
  for split, files in scan.files.items():
    images, labels, ids = [], [], []
    decoded = imaging.decode_all([f.path for f in files], image_size, channels)
    for f, result in zip(files, decoded):
      if isinstance(result, Exception):
        corrupt_ids.append(f.id)
        corrupt_reasons.append(f'{type(result).__name__}: {result}')
        continue
      images.append(result)
      labels.append(f.label)
      ids.append(f.id)
    arrays[f'{split}.images'] = np.asarray(images, np.uint8).reshape(
        -1, image_size, image_size, channels)
    arrays[f'{split}.labels'] = np.asarray(labels, np.int32)
    arrays[f'{split}.ids'] = np.asarray(ids, dtype=np.str_)
  arrays['corrupt.ids'] = np.asarray(corrupt_ids, dtype=np.str_)
  arrays['corrupt.reasons'] = np.asarray(corrupt_reasons, dtype=np.str_)
  return arrays


def load_source(name: str, *, data_dir: str | None, image_size: int, channels: int, seed: int,
                cache_dir: str | None, root: str | None = None,
                test_fraction: float = 0.2) -> Source:
  """Options: `root` (default: data_dir itself) and `test_fraction`.

  A tree without its own test split gets a stratified one carved with a fixed
  seed; without a val split, `load` carves val from train.
  """
  del name, seed  # the carved test split is fixed, see TEST_SEED
  if not (root or data_dir):
    raise DataError('image_folder needs the tree: pass --data_dir=<dir> (or '
                    '--config.data.options.root=<dir>)')
  scan = folder.scan(root or data_dir)
  splits, corrupt = decode_scan(scan, image_size, channels, cache_dir)
  train, test = splits['train'], splits.get('test')
  if test is None:
    try:
      keep, hold = splitting.stratified_holdout(
          train.labels, test_fraction, TEST_SEED, scan.class_names, what='test')
    except DataError as e:  # a class may be short only because its files would not decode
      if not corrupt:
        raise
      raise DataError(f'{e} ({len(corrupt)} corrupt image(s) were skipped, e.g. '
                      f'{os.path.join(scan.root, corrupt[0][0])}: {corrupt[0][1]})') from e
    train, test = train.take(keep), train.take(hold)
  return Source(train=train, val=splits.get('val'), test=test,
                class_names=scan.class_names, source=scan.root, corrupt=corrupt)
