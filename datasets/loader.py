"""`load(name, ...)`: the one entry point from a dataset name to train/val/test splits."""
from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Callable

from absl import logging
import numpy as np

from datasets import brain_tumor_mri
from datasets import dedup as dedup_lib
from datasets import image_folder
from datasets import kvasir_seg
from datasets import mask_folder
from datasets import medmnist
from datasets import paths
from datasets import splitting
from datasets import synthetic
from datasets import synthetic_seg
from datasets.records import CLASSIFICATION, DataError, Source, Split, Splits

# Dataset names; 'medmnist/<name>' reads any <data_dir>/medmnist/<name>.npz.
NAMES = ('brain_tumor_mri', 'image_folder', 'kvasir_seg', 'mask_folder', 'medmnist/<name>',
         'synthetic', 'synthetic_seg')
_LOADERS: dict[str, Callable[..., Source]] = {
    'brain_tumor_mri': brain_tumor_mri.load_source,
    'image_folder': image_folder.load_source,
    'kvasir_seg': kvasir_seg.load_source,
    'mask_folder': mask_folder.load_source,
    'medmnist': medmnist.load_source,
    'synthetic': synthetic.load_source,
    'synthetic_seg': synthetic_seg.load_source,
}
_KNOWN_NAMES = (*(n for n in NAMES if '<' not in n),
                *(f'medmnist/{task}' for task in sorted(medmnist.CLASS_NAMES)))
ON_CORRUPT = ('skip', 'error')
default_data_dir = paths.default_data_dir


def load(name: str, data_dir: str | None = None, image_size: int = 64, channels: int = 1,
         val_fraction: float = 0.1, seed: int = 0, dedup: bool = False,
         on_corrupt: str = 'skip', cache_dir: str | None = None,
         dedup_threshold: int = dedup_lib.DEFAULT_THRESHOLD, **options) -> Splits:
  """Loads a dataset as uint8 train/val/test splits at image_size x image_size.

  Args:
    name: one of NAMES, e.g. 'brain_tumor_mri' or 'medmnist/pneumoniamnist'.
    data_dir: folder holding the datasets; default `default_data_dir()`. For
      image_folder and mask_folder, the tree itself (or pass root=).
    image_size: side of the square images (and masks), in pixels.
    channels: 1 (grey) or 3 (RGB).
    val_fraction: share of each class of train held out as val (of all of train,
      for segmentation), when the dataset has no official val split.
    seed: seeds the val split (and the content of 'synthetic', 'synthetic_seg').
    dedup: drop exact duplicates inside train, and every val and test image that
      has a near duplicate in train (see datasets.dedup).
    on_corrupt: 'skip' (log and count) or 'error' (raise) for undecodable images.
    cache_dir: decoded-array cache; default env MEDNAS_CACHE_DIR or ~/.cache/mednas.
    dedup_threshold: Hamming distance between perceptual hashes, in bits, up to
      which two images are near duplicates.
    **options: dataset specific, e.g. root, test_fraction (image_folder,
      mask_folder), mask_suffix, mask_threshold (mask_folder), num_classes,
      num_train, num_test, difficulty (synthetic), max_shapes (synthetic_seg).

  Returns:
    Splits; info has 'task' ('classification' or 'segmentation', as
    Splits.task), 'source', 'corrupt_skipped' (ids), 'val' ('official' or
    'carved') and, with dedup, 'dedup_dropped' (images dropped per split).

  Raises:
    DataError: bad name, options or data; the message says how to fix it.
  """
  if channels not in (1, 3):
    raise DataError(f'channels must be 1 or 3, got {channels}')
  if image_size < 8:
    raise DataError(f'image_size must be at least 8, got {image_size}')
  if on_corrupt not in ON_CORRUPT:
    raise DataError(f'on_corrupt must be one of {ON_CORRUPT}, got {on_corrupt!r}')
  data_dir = os.path.abspath(data_dir) if data_dir else None
  load_source = _resolve(name, options)
  source = load_source(name, data_dir=data_dir, image_size=image_size, channels=channels,
                       seed=seed, cache_dir=cache_dir, **options)

  if source.corrupt:
    if on_corrupt == 'error':
      first, reason = source.corrupt[0]
      raise DataError(
          f'corrupt image {os.path.join(source.source, first)} ({reason}) and '
          f'{len(source.corrupt) - 1} more; replace or delete it, or pass --config.data.on_corrupt=skip')
    for image_id, reason in source.corrupt:
      logging.warning('Skipped corrupt image %s: %s',
                      os.path.join(source.source, image_id), reason)

  train, val = source.train, source.val
  if val is None:
    if train.task == CLASSIFICATION:
      keep, hold = splitting.stratified_holdout(
          train.labels, val_fraction, seed, source.class_names, what='val')
    else:  # segmentation images have no class to stratify by
      keep, hold = splitting.random_holdout(len(train), val_fraction, seed, what='val')
    train, val = train.take(keep), train.take(hold)
  splits = Splits(
      name=name, train=train, val=val, test=source.test, class_names=source.class_names,
      info={'task': train.task, 'source': source.source,
            'val': 'carved' if source.val is None else 'official',
            'corrupt_skipped': [image_id for image_id, _ in source.corrupt]})
  if not dedup:
    return splits
  hashes = hashes_for(name, data_dir=data_dir, val_fraction=val_fraction, seed=seed,
                      cache_dir=cache_dir, **options)
  return drop_leaks(splits, hashes, dedup_threshold)


def hashes_for(name: str, **kwargs) -> dict[str, int]:
  """Perceptual hash of every image id of `load(name, **kwargs)`, at any image size."""
  fixed = load(name, image_size=dedup_lib.HASH_SIZE, channels=1, on_corrupt='skip',
               **kwargs)
  hashes = dedup_lib.split_hashes(fixed, kwargs.get('cache_dir'))
  return {i: h for split_name, split in fixed.items()
          for i, h in zip(split.ids, hashes[split_name])}


def hash_array(split: Split, hashes: dict[str, int]) -> np.ndarray:
  """The hashes of `split`'s images, in its order."""
  return np.array([hashes[i] for i in split.ids], np.uint64)


def drop_leaks(splits: Splits, hashes: dict[str, int], threshold: int) -> Splits:
  """Drops exact duplicates inside train (keeping the first) and every val and
  test image that has a near duplicate in the remaining train."""
  keep = dedup_lib.first_copies(dedup_lib.pixel_digests(splits.train))
  train = splits.train.take(np.flatnonzero(keep))
  train_hashes = hash_array(train, hashes)
  dropped = {'train': int((~keep).sum())}
  kept: dict[str, Split] = {}
  for split_name in ('val', 'test'):
    split = getattr(splits, split_name)
    dist, _ = dedup_lib.nearest(hash_array(split, hashes), train_hashes)
    clean = dist > threshold
    kept[split_name] = split.take(np.flatnonzero(clean))
    dropped[split_name] = int((~clean).sum())
  info = dict(splits.info, dedup_dropped=dropped, dedup_threshold=threshold)
  return Splits(name=splits.name, train=train, val=kept['val'], test=kept['test'],
                class_names=splits.class_names, info=info)


def _resolve(name: str, options: dict) -> Callable[..., Source]:
  family, _, task = name.partition('/')
  load_source = _LOADERS.get(family)
  if load_source is None or bool(task) != (family == 'medmnist'):
    close = difflib.get_close_matches(name, _KNOWN_NAMES, n=1, cutoff=0.5)
    hint = f'; did you mean {close[0]!r}?' if close else ''
    raise DataError(f'unknown dataset {name!r}; known: {", ".join(NAMES)}{hint}')
  params = inspect.signature(load_source).parameters
  allowed = sorted(p for p, v in params.items() if v.default is not inspect.Parameter.empty)
  unknown = sorted(set(options) - set(allowed))
  if unknown:
    raise DataError(f'unknown option(s) {unknown} for dataset {family!r}; '
                    f'known: {allowed or "none"}')
  return load_source
