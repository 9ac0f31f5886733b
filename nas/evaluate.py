r"""Scores a saved network, or an ensemble of them, on a split of the dataset it was trained for.

  python -m nas.evaluate --model=WORKDIR/best [--split=test] [--dedup] [--data_dir=DIR]
  python -m nas.evaluate --model='WORKDIR/final/*' [...]

`--dedup` keeps only the images without a near duplicate in the training split (see
`python -m datasets.audit`), which is the honest test set of a leaky dataset. Prints the
metrics as JSON on stdout, for scripts, and one line per network on stderr, to read.
Searches score their test split in their final stage; this is for a model saved earlier or
elsewhere.

Several `--model` flags, or a quoted glob, score each network and their ensemble: the mean
of their predicted probabilities (soft voting), e.g. the final stage's seeds of one genotype.
Choose the members before looking at test numbers, or the ensemble's score is not a test.
"""
from __future__ import annotations

import json
import sys

from absl import app
from absl import flags

import datasets
from nas import ensemble

_MODEL = flags.DEFINE_multi_string(
    'model', None, 'A saved model folder, e.g. WORKDIR/best. Repeat it, or quote a glob such '
    'as WORKDIR/final/*, to score an ensemble.')
_SPLIT = flags.DEFINE_enum('split', 'test', ['train', 'val', 'test'], 'Which split to score.')
_DEDUP = flags.DEFINE_bool('dedup', False, 'Drop images with a near duplicate in training.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Default $MEDNAS_DATA_DIR or ./data.')
_SEED = flags.DEFINE_integer('seed', 0, 'The experiment seed (it places the val split).')


def main(argv: list[str]) -> None:
  del argv
  import models  # pylint: disable=g-import-not-at-top
  from nas import train as train_lib  # pylint: disable=g-import-not-at-top
  try:
    paths = ensemble.model_paths(_MODEL.value or [])
    members = [models.load(path) for path in paths]
  except (OSError, ValueError, KeyError, TypeError) as e:
    _fail(f'cannot load a model ({e}); pass folders saved by a search, e.g. WORKDIR/best or '
          "'WORKDIR/final/*'")
  if not members:
    _fail('no model given; pass --model=WORKDIR/best')
  reason = ensemble.mismatch(members, paths)
  if reason:
    _fail(f'these models cannot form one ensemble: {reason}; pass models trained on the same '
          'data and classes')
  first = members[0]
  spec = ensemble.data_spec(first, _DATA_DIR.value, _SEED.value, _DEDUP.value)
  try:
    split = getattr(spec.load(), _SPLIT.value)
  except datasets.DataError as e:
    _fail(str(e))
  # A classifier's or a segmenter's metrics; at the default loss weights, which only 'loss' uses.
  task = train_lib.TASKS[type(first.genotype)]()
  each, mean = ensemble.probabilities(members, split.images, 256)
  header = {'split': _SPLIT.value, 'dedup': _DEDUP.value}
  scores = [task.score(split, p) for p in each]
  if len(members) == 1:
    result = {'model': paths[0], **header, **scores[0]}
    lines = [(paths[0], scores[0])]
  else:
    result = {'models': paths, **header,
              'members': [{'model': path, **s} for path, s in zip(paths, scores)],
              'ensemble': task.score(split, mean)}
    lines = [*zip(paths, scores), ('ensemble', result['ensemble'])]
  print(json.dumps(result, indent=2))
  for name, metrics in lines:
    print(f'{name}: {_headline(metrics)}', file=sys.stderr)


def _headline(metrics: dict) -> str:
  """The scalar metrics, e.g. 'accuracy 0.9263, auc 0.9760, ... on 624 images'."""
  values = ', '.join(f'{k} {v:.4f}' for k, v in metrics.items() if isinstance(v, float))
  return f'{values} on {metrics["num_examples"]} images'


def _fail(message: str) -> None:
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


if __name__ == '__main__':
  app.run(main)
