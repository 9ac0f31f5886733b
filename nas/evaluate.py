r"""Scores a saved network on a split of the dataset it was trained for.

  python -m nas.evaluate --model=WORKDIR/best [--split=test] [--dedup] [--data_dir=DIR]

`--dedup` keeps only the images without a near duplicate in the training split (see
`python -m datasets.audit`), which is the honest test set of a leaky dataset. Prints the
metrics as JSON. Searches score their test split in their final stage; this is for a model
saved earlier or elsewhere.
"""
from __future__ import annotations

import json
import sys

from absl import app
from absl import flags

import datasets
from nas import metrics as metrics_lib

_MODEL = flags.DEFINE_string('model', None, 'A saved model folder, e.g. WORKDIR/best.')
_SPLIT = flags.DEFINE_enum('split', 'test', ['train', 'val', 'test'], 'Which split to score.')
_DEDUP = flags.DEFINE_bool('dedup', False, 'Drop images with a near duplicate in training.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Default $MEDNAS_DATA_DIR or ./data.')
_SEED = flags.DEFINE_integer('seed', 0, 'The experiment seed (it places the val split).')


def main(argv: list[str]) -> None:
  del argv
  import models  # pylint: disable=g-import-not-at-top
  try:
    model = models.load(_MODEL.value)
  except (OSError, ValueError, KeyError, TypeError) as e:
    print(f'error: cannot load a model from {_MODEL.value} ({e}); pass a folder saved by a '
          'search, e.g. WORKDIR/best', file=sys.stderr)
    sys.exit(2)
  spec = datasets.Spec(name=model.info['dataset'], data_dir=_DATA_DIR.value or
                       datasets.default_data_dir(), image_size=model.image_size,
                       channels=model.channels, seed=_SEED.value, dedup=_DEDUP.value,
                       options=tuple(sorted(model.info.get('data_options', {}).items())))
  try:
    split = getattr(spec.load(), _SPLIT.value)
  except datasets.DataError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  result = metrics_lib.classification_metrics(split.labels, model.predict(split.images, 256))
  print(json.dumps({'model': _MODEL.value, 'split': _SPLIT.value, 'dedup': _DEDUP.value,
                    **result}, indent=2))


if __name__ == '__main__':
  app.run(main)
