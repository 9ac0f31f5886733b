"""Exact and near-duplicate detection: perceptual hashes and fast Hamming search.

Near duplicates are images whose 64-bit perceptual hashes (imagehash.phash)
differ in at most `threshold` bits. Hashes are computed from a fixed-size
decoded version (HASH_SIZE x HASH_SIZE grey), so they do not depend on the
image size a model trains at. Exact duplicates are images with identical
decoded pixels at the loaded size.
"""
from __future__ import annotations

import hashlib
import os

import imagehash
import numpy as np
from PIL import Image

from datasets import cache
from datasets.records import Split, Splits

HASH_SIZE = 64
# A phash sets the bits above the median of 64 DCT terms, so every hash has 32
# ones and distances are even: thresholds 4 and 5 are the same. 4 flags re-saved,
# re-windowed or slightly shifted copies; from 6 on, neighbouring slices of a scan
# and then different scans begin to match (checked by eye on brain_tumor_mri).
DEFAULT_THRESHOLD = 4
_NO_MATCH = 65  # farther than any two 64-bit hashes
_BLOCK = 512  # query rows per block: bounds the (block, reference) distance matrix


def phash(images: np.ndarray) -> np.ndarray:
  """64-bit perceptual hashes, uint64 (N,), of uint8 (N, H, W, 1) images."""
  bits = [imagehash.phash(Image.fromarray(image[..., 0])).hash.ravel() for image in images]
  packed = np.packbits(np.asarray(bits, bool).reshape(len(images), 64), axis=1)
  return packed.view('>u8').astype(np.uint64).ravel()


def split_hashes(splits: Splits, cache_dir: str | None) -> dict[str, np.ndarray]:
  """Perceptual hashes of every split of `splits`, loaded at HASH_SIZE grey.

  Cached by content: the union of all splits is the same for every seed, so the
  hashes are computed once per dataset.
  """
  parts = [split for _, split in splits.items()]
  if parts[0].images.shape[1:] != (HASH_SIZE, HASH_SIZE, 1):
    raise ValueError(f'hash from {HASH_SIZE}x{HASH_SIZE} grey, got {parts[0].images.shape}')
  ids = np.asarray([i for s in parts for i in s.ids], dtype=np.str_)
  order = np.argsort(ids, kind='stable')
  images = np.concatenate([s.images for s in parts])[order]
  key = cache.digest(['phash-v1', '\n'.join(ids[order].tolist()), images.tobytes()])
  stem = splits.name.replace('/', '_')
  path = os.path.join(cache.cache_dir(cache_dir), 'phash', f'{stem}-{key}.npz')
  stored = cache.load_npz(path)
  if stored is None:
    stored = {'phash': phash(images)}
    cache.save_npz(path, stored)
  hashes = np.empty(len(ids), np.uint64)
  hashes[order] = stored['phash']
  bounds = np.cumsum([0] + [len(s) for s in parts])
  return {name: hashes[a:b] for (name, _), a, b in zip(splits.items(), bounds[:-1], bounds[1:])}


def nearest(query: np.ndarray, reference: np.ndarray, same: bool = False
            ) -> tuple[np.ndarray, np.ndarray]:
  """For each query hash, the Hamming distance to its nearest reference and its index.

  `same`: query and reference are the same array; an image is not its own match.
  Distance is _NO_MATCH (index -1) when there is no reference.
  """
  dist = np.full(len(query), _NO_MATCH, np.int64)
  index = np.full(len(query), -1, np.int64)
  if not len(reference):
    return dist, index
  for start in range(0, len(query), _BLOCK):
    block = np.bitwise_count(query[start:start + _BLOCK, None] ^ reference[None, :])
    block = block.astype(np.int64)
    if same:
      rows = np.arange(len(block))
      block[rows, start + rows] = _NO_MATCH
    index[start:start + len(block)] = block.argmin(axis=1)
    dist[start:start + len(block)] = block.min(axis=1)
  return dist, index


def pixel_digests(split: Split) -> list[bytes]:
  """A content hash of each image's decoded pixels."""
  return [hashlib.sha1(image.tobytes()).digest() for image in split.images]


def first_copies(digests: list[bytes]) -> np.ndarray:
  """Bool mask: True for the first occurrence of each digest."""
  seen = set()
  keep = np.zeros(len(digests), bool)
  for i, d in enumerate(digests):
    keep[i] = d not in seen
    seen.add(d)
  return keep
