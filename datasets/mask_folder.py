"""Image/mask pairs for segmentation: `<root>/[<split>/]images/*` with `masks/*` beside it.

An image and its mask share their name up to the extension (`images/a.jpg` pairs
with `masks/a.png`), optionally with a suffix on the mask (`masks/a_mask.png`,
mask_suffix='_mask'); names may include subfolders. Splits are the folders
train, val and test (any of folder.SPLIT_ALIASES, case-insensitive), or none:
then `root/images` is the training split. Decoded pairs are cached like
image_folder's trees.
"""
from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np
from PIL import Image

from datasets import cache
from datasets import folder
from datasets import imaging
from datasets import splitting
from datasets.records import DataError, Source, Split, make_seg_split

IMAGES, MASKS = 'images', 'masks'
CLASS_NAMES = ('background', 'foreground')
# Bump when decoding changes, so that caches decoded the old way are not reused.
DECODER_VERSION = '1'
# As image_folder.TEST_SEED: a carved test split must not move with `seed`.
TEST_SEED = 0
_LISTED = 3  # file names quoted in a pairing error


@dataclasses.dataclass(frozen=True)
class Pair:
  image: str  # absolute
  mask: str  # absolute
  id: str  # the image's path relative to the root, '/'-separated


@dataclasses.dataclass(frozen=True)
class PairScan:
  """The pairs of a tree, by split ('train', and 'val', 'test' when present)."""
  root: str
  pairs: dict[str, tuple[Pair, ...]]
  fingerprint: str  # changes when any image or mask is added, removed, resized or touched


def _layout(root: str) -> str:
  return (f'expected {root}/{IMAGES}/* with {root}/{MASKS}/*, or '
          f'{root}/<split>/{IMAGES}/* with {root}/<split>/{MASKS}/* (split: train, val, test)')


def scan(root: str, mask_suffix: str = '') -> PairScan:
  """Lists and pairs the tree; raises DataError when its layout cannot be used."""
  root = os.path.abspath(root)
  if not os.path.isdir(root):
    raise DataError(f'no directory {root}; {_layout(root)}')
  if os.path.isdir(os.path.join(root, IMAGES)):
    split_dirs = {'': 'train'}
  else:
    split_dirs = {}
    # Other folders (split lists, previews) may sit beside the splits.
    for d in folder.subdirs(root):
      if not os.path.isdir(os.path.join(root, d, IMAGES)):
        continue
      split = folder.SPLIT_ALIASES.get(d.lower())
      if split is None:
        raise DataError(f'{os.path.join(root, d)} holds {IMAGES}/ but {d!r} is not a split '
                        'name; rename it to train, val or test')
      if split in split_dirs.values():
        raise DataError(f'{root} has two folders for split {split!r}; merge them')
      split_dirs[d] = split
    if 'train' not in split_dirs.values():
      raise DataError(f'{root} has no {IMAGES}/ folder for training; {_layout(root)}')

  pairs, stamps = {}, []
  for d, split in sorted(split_dirs.items(), key=lambda kv: kv[1]):
    pairs[split] = _pair(root, d, mask_suffix, stamps)
  return PairScan(root, pairs, cache.digest(stamps))


def _by_name(directory: str, suffix: str) -> dict[str, tuple[str, os.stat_result]]:
  """Image files under `directory` by their relative path without extension (and suffix)."""
  found: dict[str, tuple[str, os.stat_result]] = {}
  for path, st in folder.image_files(directory):
    name = os.path.splitext(os.path.relpath(path, directory))[0].replace(os.sep, '/')
    if suffix and name.endswith(suffix):
      name = name[:-len(suffix)]
    if name in found:
      raise DataError(f'{found[name][0]} and {path} have the same name up to the '
                      'extension, so the pairing is ambiguous; keep one of them')
    found[name] = (path, st)
  return found


def _pair(root: str, d: str, mask_suffix: str, stamps: list[str]) -> tuple[Pair, ...]:
  """The pairs of one split; appends a stamp of every file to `stamps`."""
  image_dir, mask_dir = os.path.join(root, d, IMAGES), os.path.join(root, d, MASKS)
  if not os.path.isdir(mask_dir):
    raise DataError(f'{image_dir} has no {MASKS}/ folder beside it; put the mask of '
                    f'each image in {mask_dir} under the same name')
  images, masks = _by_name(image_dir, ''), _by_name(mask_dir, mask_suffix)
  if not images:
    raise DataError(f'{image_dir} has no image files; add images (extensions '
                    f'{", ".join(sorted(imaging.IMAGE_EXTENSIONS))})')
  lonely_images = sorted(set(images) - set(masks))
  lonely_masks = sorted(set(masks) - set(images))
  if lonely_images or lonely_masks:
    problems = []
    for what, names, files, where in (('image', lonely_images, images, mask_dir),
                                      ('mask', lonely_masks, masks, image_dir)):
      if names:
        listed = ', '.join(os.path.basename(files[n][0]) for n in names[:_LISTED])
        more = f' and {len(names) - _LISTED} more' if len(names) > _LISTED else ''
        problems.append(f'{len(names)} {what}(s) with no partner in {where} '
                        f'({listed}{more})')
    hint = '' if mask_suffix else ', or set mask_suffix when mask names add a suffix'
    raise DataError(f'{"; ".join(problems)}: each {IMAGES}/<name>.<ext> needs '
                    f'{MASKS}/<name>{mask_suffix}.<ext>; add the missing files or delete '
                    f'the extra ones{hint}')
  pairs = []
  for n in sorted(images):
    rels = []
    for path, st in (images[n], masks[n]):
      rels.append(os.path.relpath(path, root).replace(os.sep, '/'))
      stamps.append(f'{rels[-1]}\t{st.st_size}\t{st.st_mtime_ns}')
    pairs.append(Pair(images[n][0], masks[n][0], rels[0]))
  return tuple(pairs)


def decode_pair(pair: Pair, image_size: int, channels: int, threshold: int
                ) -> tuple[np.ndarray, np.ndarray]:
  """The image and its binary mask; raises for broken files or a size mismatch."""
  with Image.open(pair.image) as image, Image.open(pair.mask) as mask:
    if image.size != mask.size:
      raise ValueError(f'image is {image.size[0]}x{image.size[1]} but its mask '
                       f'{os.path.basename(pair.mask)} is {mask.size[0]}x{mask.size[1]}')
  return (imaging.decode(pair.image, image_size, channels),
          imaging.decode_mask(pair.mask, image_size, threshold))


def decode_scan(tree: PairScan, name: str, image_size: int, channels: int, threshold: int,
                cache_dir: str | None
                ) -> tuple[dict[str, Split], tuple[tuple[str, str], ...]]:
  """All splits of `tree`, decoded, from the cache when the files are unchanged.

  Returns the splits and the (id, reason) of every pair that failed to decode.
  """
  key = cache.digest([DECODER_VERSION, name, tree.fingerprint, str(image_size),
                      str(channels), str(threshold)])
  stem = os.path.basename(tree.root.rstrip(os.sep)) or 'root'
  path = os.path.join(cache.cache_dir(cache_dir), 'arrays',
                      f'{stem}-seg-{image_size}px-c{channels}-{key}.npz')
  stored = cache.load_npz(path)
  if stored is None:
    stored = _decode(tree, image_size, channels, threshold)
    cache.save_npz(path, stored)
  splits = {split: make_seg_split(stored[f'{split}.images'], stored[f'{split}.masks'],
                                  tuple(stored[f'{split}.ids'].tolist()))
            for split in tree.pairs}
  corrupt = tuple(zip(stored['corrupt.ids'].tolist(), stored['corrupt.reasons'].tolist()))
  if not any(split.labels.any() for split in splits.values()):
    raise DataError(f'every mask under {tree.root} is empty at threshold {threshold}; '
                    'masks that store class indices (0 and 1) need mask_threshold=0')
  return splits, corrupt


def _decode(tree: PairScan, image_size: int, channels: int, threshold: int
            ) -> dict[str, np.ndarray]:
  arrays = {}
  corrupt_ids, corrupt_reasons = [], []
  read = functools.partial(decode_pair, image_size=image_size, channels=channels,
                           threshold=threshold)
  for split, pairs in tree.pairs.items():
    images, masks, ids = [], [], []
    for pair, result in zip(pairs, imaging.map_files(read, pairs)):
      if isinstance(result, Exception):
        corrupt_ids.append(pair.id)
        corrupt_reasons.append(f'{type(result).__name__}: {result}')
        continue
      images.append(result[0])
      masks.append(result[1])
      ids.append(pair.id)
    arrays[f'{split}.images'] = np.asarray(images, np.uint8).reshape(
        -1, image_size, image_size, channels)
    arrays[f'{split}.masks'] = np.asarray(masks, np.uint8).reshape(
        -1, image_size, image_size, 1)
    arrays[f'{split}.ids'] = np.asarray(ids, dtype=np.str_)
  arrays['corrupt.ids'] = np.asarray(corrupt_ids, dtype=np.str_)
  arrays['corrupt.reasons'] = np.asarray(corrupt_reasons, dtype=np.str_)
  return arrays


def load_source(name: str, *, data_dir: str | None, image_size: int, channels: int, seed: int,
                cache_dir: str | None, root: str | None = None, test_fraction: float = 0.2,
                mask_suffix: str = '', mask_threshold: int = 127) -> Source:
  """Options: `root` (default: data_dir itself), `test_fraction`, `mask_suffix` and
  `mask_threshold` (foreground is value > threshold; 0 for masks stored as 0/1).

  A tree without its own test split gets one carved with a fixed seed; without a
  val split, `load` carves val from train.
  """
  del seed  # the carved test split is fixed, see TEST_SEED
  if not (root or data_dir):
    raise DataError('mask_folder needs the tree: pass --data_dir=<dir> (or '
                    '--config.data.options.root=<dir>)')
  pair_scan = scan(root or data_dir, mask_suffix)
  splits, corrupt = decode_scan(pair_scan, name, image_size, channels, mask_threshold,
                                cache_dir)
  train, test = splits['train'], splits.get('test')
  if test is None:
    keep, hold = splitting.random_holdout(len(train), test_fraction, TEST_SEED, what='test')
    train, test = train.take(keep), train.take(hold)
  return Source(train=train, val=splits.get('val'), test=test, class_names=CLASS_NAMES,
                source=pair_scan.root, corrupt=corrupt)
