r"""Classifies or segments images with a saved network, preprocessed as it was trained.

  python -m nas.predict --model=runs/pso_brain_mri-.../best scan1.jpg folder/ [--json]
  python -m nas.predict --model=runs/pso_kvasir_seg-.../best --masks_dir=masks/ images/

A segmentation network writes one binary PNG mask per image (foreground 255) at the image's
own size, under --masks_dir in the images' folder layout, and prints its foreground share.

Folders are searched recursively for image files. An image that cannot be read gets one
`error:` line on stderr (and an entry with its error under --json); the others go on.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence

from absl import app
from absl import flags
import numpy as np
from PIL import Image

from datasets import imaging
from models.genotype import SegGenotype

_MODEL = flags.DEFINE_string('model', None, 'A saved model folder, e.g. WORKDIR/best.')
_JSON = flags.DEFINE_bool('json', False, 'Print one JSON list instead of a table.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 64, 'Images per forward pass.')
_MASKS_DIR = flags.DEFINE_string('masks_dir', None,
                                 'Where a segmentation network writes its masks (PNG).')


def image_paths(targets: Sequence[str]) -> Iterator[str]:
  """The files named, and the image files below the folders named, in sorted order."""
  for target in targets:
    if os.path.isdir(target):
      for folder, _, files in sorted(os.walk(target)):
        for name in sorted(files):
          if imaging.is_image_file(name):
            yield os.path.join(folder, name)
    else:
      yield target


def predict(model, paths: Sequence[str], batch_size: int,
            masks_dir: str | None = None) -> list[dict]:
  """One result per path: {'path', 'error'}, or for a classifier {'path', 'class',
  'probabilities'}, for a segmenter (which needs `masks_dir`) {'path', 'mask', 'foreground'}.
  """
  decoded = list(imaging.decode_all(paths, model.image_size, model.channels))
  readable = [i for i, d in enumerate(decoded) if not isinstance(d, Exception)]
  probs = model.predict(np.stack([decoded[i] for i in readable]), batch_size) if readable else []
  results = [{'path': p, 'error': f'{type(d).__name__}: {d}'} if isinstance(d, Exception)
             else {'path': p} for p, d in zip(paths, decoded)]
  if not _segments(model):
    for i, p in zip(readable, probs):
      results[i].update({'class': model.class_names[int(p.argmax())],
                         'probabilities': dict(zip(model.class_names, map(float, p)))})
    return results
  # Masks keep the images' folder layout below their common folder, so equal names differ.
  root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths] or ['.'])
  for i, p in zip(readable, probs):
    path = results[i]['path']
    mask = os.path.join(masks_dir, os.path.splitext(
        os.path.relpath(os.path.abspath(path), root))[0] + '_mask.png')
    results[i].update(mask=mask, foreground=_write_mask(p[..., 0], path, mask))
  return results


def _segments(model) -> bool:
  return isinstance(model.genotype, SegGenotype)


def _write_mask(probabilities: np.ndarray, image_path: str, mask_path: str) -> float:
  """Saves the mask at the image's own size; returns its foreground share."""
  with Image.open(image_path) as image:
    size = image.size
  resized = np.asarray(Image.fromarray(probabilities.astype(np.float32), 'F').resize(
      size, Image.Resampling.BILINEAR))
  mask = np.where(resized > 0.5, 255, 0).astype(np.uint8)
  os.makedirs(os.path.dirname(mask_path), exist_ok=True)
  Image.fromarray(mask).save(mask_path)
  return float(np.mean(mask > 0))


def _table(results: list[dict], class_names: Sequence[str]) -> str:
  width = max([len(r['path']) for r in results] + [4])
  ok = [r for r in results if 'error' not in r]
  if ok and 'mask' in ok[0]:
    lines = [f'{"path":<{width}}  {"foreground":>10}  mask']
    lines += [f'{r["path"]:<{width}}  {r["foreground"]:>10.4f}  {r["mask"]}' for r in ok]
    return '\n'.join(lines)
  lines = [f'{"path":<{width}}  {"class":<12}  ' + '  '.join(f'{n:>10}' for n in class_names)]
  for r in ok:
    probs = '  '.join(f'{r["probabilities"][n]:>10.4f}' for n in class_names)
    lines.append(f'{r["path"]:<{width}}  {r["class"]:<12}  {probs}')
  return '\n'.join(lines)


def main(argv: list[str]) -> None:
  import models  # pylint: disable=g-import-not-at-top
  targets = argv[1:]
  if not _MODEL.value or not targets:
    _fail('usage: python -m nas.predict --model=WORKDIR/best IMAGE_OR_FOLDER [...]')
  try:
    model = models.load(_MODEL.value)
  except (OSError, ValueError, KeyError) as e:
    _fail(f'cannot load a model from {_MODEL.value} ({e}); pass a folder saved by a search, '
          'e.g. WORKDIR/best')
  if _segments(model) and not _MASKS_DIR.value:
    _fail(f'{_MODEL.value} is a segmentation network; pass --masks_dir=DIR to write its masks')
  if _MASKS_DIR.value and not _segments(model):
    _fail(f'{_MODEL.value} is a classifier, which draws no masks; drop --masks_dir')
  paths = list(image_paths(targets))
  missing = [p for p in paths if not os.path.exists(p)]
  paths = [p for p in paths if p not in missing]
  results = predict(model, paths, _BATCH_SIZE.value, _MASKS_DIR.value) if paths else []
  results += [{'path': p, 'error': 'no such file'} for p in missing]
  for r in results:
    if 'error' in r:
      print(f'error: {r["path"]}: {r["error"]}', file=sys.stderr)
  if _JSON.value:
    print(json.dumps(results, indent=2))
  else:
    print(_table(results, model.class_names))
  if all('error' in r for r in results):
    sys.exit(2)


def _fail(message: str) -> None:
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


if __name__ == '__main__':
  app.run(main)
