r"""Leakage audit: images per split and class, exact and near duplicates.

  python -m datasets.audit --dataset=brain_tumor_mri [--data_dir=DIR] \
      [--image_size=64] [--threshold=4] [--json]

Exact duplicates have identical pixels at --image_size/--channels; near
duplicates have perceptual hashes within --threshold bits (datasets.dedup).
'a/b' entries count the images of split b that have a duplicate in split a;
'train+val/test' compares test with the whole official training set.
"""
from __future__ import annotations

import collections
import contextlib
import json
import sys
from typing import Any

from absl import app
from absl import flags
import numpy as np

from datasets import dedup
from datasets import loader
from datasets.records import DataError, Split, Splits

_DATASET = flags.DEFINE_string('dataset', None, f'One of {", ".join(loader.NAMES)}.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Datasets folder (image_folder: the '
                                'tree itself); default MEDNAS_DATA_DIR or ./data.')
_CACHE_DIR = flags.DEFINE_string('cache_dir', None, 'Default MEDNAS_CACHE_DIR or '
                                 '~/.cache/mednas.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 64, 'Size at which exact duplicates '
                                   'are compared.')
_CHANNELS = flags.DEFINE_integer('channels', 1, '1 or 3.')
_THRESHOLD = flags.DEFINE_integer('threshold', dedup.DEFAULT_THRESHOLD,
                                  'Near duplicates: max Hamming distance of 64-bit phashes.',
                                  lower_bound=0, upper_bound=64)
_VAL_FRACTION = flags.DEFINE_float('val_fraction', 0.1, 'As in datasets.load.')
_SEED = flags.DEFINE_integer('seed', 0, 'As in datasets.load.')
_EXAMPLES = flags.DEFINE_integer('examples', 10, 'Pairs listed per split pair.')
_JSON = flags.DEFINE_bool('json', False, 'Print one JSON object instead of text.')

_CROSS = (('train', 'val'), ('train', 'test'), ('val', 'test'), ('train+val', 'test'))


def audit(splits: Splits, hashes: dict[str, int], threshold: int,
          max_examples: int = 10) -> dict[str, Any]:
  """The audit report of `splits`; `hashes` maps every image id to its phash."""
  views = dict(splits.items())
  views['train+val'] = Split(np.concatenate([splits.train.images, splits.val.images]),
                             np.concatenate([splits.train.labels, splits.val.labels]),
                             splits.train.ids + splits.val.ids)
  digests = {k: dedup.pixel_digests(v) for k, v in views.items()}
  phashes = {k: loader.hash_array(v, hashes) for k, v in views.items()}

  report: dict[str, Any] = {
      'dataset': splits.name, 'threshold': threshold,
      'image_shape': list(splits.train.images.shape[1:]),
      'counts': {k: dict(zip(splits.class_names,
                             v.class_counts(splits.num_classes).tolist()))
                 for k, v in splits.items()},
      'exact_duplicates': {}, 'near_duplicates': {},
      'cross_split_exact_duplicates': {}, 'cross_split_near_duplicates': {},
      'cross_split_near_duplicates_by_distance': {},
      'cross_split_label_conflicts': {}, 'examples': {},
  }
  for name, split in splits.items():
    copies = collections.Counter(digests[name])
    report['exact_duplicates'][name] = {
        'groups': sum(n > 1 for n in copies.values()),
        'redundant_images': len(split) - len(copies)}
    dist, _ = dedup.nearest(phashes[name], phashes[name], same=True)
    report['near_duplicates'][name] = int((dist <= threshold).sum())

  for a, b in _CROSS:
    key = f'{a}/{b}'
    in_a = set(digests[a])
    report['cross_split_exact_duplicates'][key] = sum(d in in_a for d in digests[b])
    dist, match = dedup.nearest(phashes[b], phashes[a])
    near = np.flatnonzero(dist <= threshold)
    report['cross_split_near_duplicates'][key] = len(near)
    report['cross_split_near_duplicates_by_distance'][key] = {
        d: int((dist == d).sum()) for d in range(threshold + 1)}
    conflicts = views[b].labels[near] != views[a].labels[match[near]]
    report['cross_split_label_conflicts'][key] = int(conflicts.sum())
    report['examples'][key] = [
        {b: views[b].ids[i], a: views[a].ids[match[i]], 'distance': int(dist[i])}
        for i in near[np.argsort(dist[near], kind='stable')][:max_examples]]
  return report


def format_text(report: dict[str, Any]) -> str:
  lines = [f"{report['dataset']}: images {report['image_shape']}, near-duplicate "
           f"threshold {report['threshold']} bits"]
  classes = list(next(iter(report['counts'].values())))
  lines.append('split      ' + ' '.join(f'{c:>12}' for c in classes) + '        total')
  for split, counts in report['counts'].items():
    lines.append(f'{split:<10} ' + ' '.join(f'{n:>12}' for n in counts.values())
                 + f' {sum(counts.values()):>12}')
  lines.append('within a split:')
  for split, exact in report['exact_duplicates'].items():
    lines.append(f"  {split:<6} exact: {exact['groups']} groups, "
                 f"{exact['redundant_images']} redundant images; "
                 f"images with a near duplicate: {report['near_duplicates'][split]}")
  lines.append('across splits (images of the second split with a duplicate in the first):')
  for key, near in report['cross_split_near_duplicates'].items():
    lines.append(f"  {key:<15} exact: {report['cross_split_exact_duplicates'][key]:>5}  "
                 f"near: {near:>5}  with another label: "
                 f"{report['cross_split_label_conflicts'][key]}")
    for example in report['examples'][key][:3]:
      lines.append('      ' + '  ~  '.join(f'{k}: {v}' for k, v in example.items()))
  return '\n'.join(lines)


def main(argv: list[str]) -> None:
  del argv
  kwargs = dict(data_dir=_DATA_DIR.value, val_fraction=_VAL_FRACTION.value,
                seed=_SEED.value, cache_dir=_CACHE_DIR.value)
  try:
    if not _DATASET.value:
      raise DataError(f'pass --dataset, one of {", ".join(loader.NAMES)}')
    # TFDS prints its progress to stdout, which must hold the report alone.
    with contextlib.redirect_stdout(sys.stderr):
      splits = loader.load(_DATASET.value, image_size=_IMAGE_SIZE.value,
                           channels=_CHANNELS.value, **kwargs)
      hashes = loader.hashes_for(_DATASET.value, **kwargs)
  except DataError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  report = audit(splits, hashes, _THRESHOLD.value, _EXAMPLES.value)
  print(json.dumps(report, indent=1) if _JSON.value else format_text(report))


if __name__ == '__main__':
  app.run(main)
