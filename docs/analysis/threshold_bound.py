r"""Is a binary classifier's test error a matter of its decision threshold, or of its ranking?

  python docs/analysis/threshold_bound.py --model='runs/pn-final15/final/*'

For each network and for their ensemble (mean probability), prints the test accuracy at the
argmax, the best accuracy any threshold on the positive class's probability reaches on the
split, and the accuracy after re-weighting the probabilities by the positive class's share
estimated from the unlabelled images (EM, Saerens et al. 2002, Neural Computation 14:21).
The best threshold is chosen on the split's own labels: a bound on what moving the threshold
could give, never a result. The EM estimate uses no labels (nas.metrics.shifted_class_shares).
Behind the PneumoniaMNIST section of docs/results.md.
"""
from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import datasets  # pylint: disable=g-import-not-at-top,wrong-import-position
import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from nas import ensemble  # pylint: disable=g-import-not-at-top,wrong-import-position
from nas import metrics as nas_metrics  # pylint: disable=g-import-not-at-top,wrong-import-position

_MODEL = flags.DEFINE_multi_string('model', None, 'Saved networks of one binary task; globs allowed.')
_SPLIT = flags.DEFINE_enum('split', 'test', ['val', 'test'], 'Which split to score.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Default $MEDNAS_DATA_DIR or ./data.')
_CLASS_BALANCED = flags.DEFINE_bool(
    'class_balanced', True, 'The networks were trained with train.class_balanced (every '
    'PneumoniaMNIST preset), so the classes were equally likely to them; false takes the '
    "training split's class shares.")


def main(argv: list[str]) -> None:
  del argv
  try:
    paths = ensemble.model_paths(_MODEL.value or [])
    members = [models.load(path) for path in paths]
  except (OSError, ValueError) as e:
    _fail(f'cannot load a model ({e}); pass saved networks, e.g. --model=\'WORKDIR/final/*\'')
  if not members or len(members[0].class_names) != 2:
    _fail('pass the saved networks of one binary task, e.g. --model=\'WORKDIR/final/*\'')
  reason = ensemble.mismatch(members, paths)
  if reason:
    _fail(f'these networks cannot form one ensemble: {reason}')
  try:
    data = ensemble.data_spec(members[0], _DATA_DIR.value).load()
  except datasets.DataError as e:
    _fail(str(e))
  split = getattr(data, _SPLIT.value)
  labels = np.asarray(split.labels)
  trained_shares = (np.full(2, 0.5) if _CLASS_BALANCED.value else
                    np.bincount(data.train.labels, minlength=2) / len(data.train.labels))
  each, mean = ensemble.probabilities(members, split.images, 256)
  print(f'{_SPLIT.value}: {len(labels)} images, positive share {labels.mean():.3f}')
  for name, probabilities in [*zip(paths, each), ('ensemble', mean)]:
    scores = nas_metrics.classification_metrics(labels, probabilities)
    shares, adjusted = nas_metrics.shifted_class_shares(probabilities, trained_shares)
    print(f'{name}: auc {scores["auc"]:.4f}, accuracy {scores["accuracy"]:.4f}, '
          f'best threshold {nas_metrics.best_threshold_accuracy(labels, probabilities[:, 1]):.4f}, '
          f'EM share {shares[1]:.3f} -> accuracy {np.mean(adjusted.argmax(1) == labels):.4f}')


def _fail(message: str) -> None:
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


if __name__ == '__main__':
  app.run(main)
