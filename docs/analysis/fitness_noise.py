r"""How much of a search's fitness is the network, and how much the training seed?

  python docs/analysis/fitness_noise.py --seeds=4 runs/STUDY/random-seed3 runs/STUDY/pso-seed3

Retrains the best `--top` genotypes of each search (as its final stage ranks them), at the
fidelity and with the config they were scored at, once per seed from the search's own seed
on (the first training repeats the stored one), and prints each genotype's fitness metric:
stored, per seed, mean ± std. Where the genotypes' means differ by less than one seed's
spread, the search ranked them by their seed as much as by their network. Validation split
only; behind the optimizer studies of docs/results.md.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile

from absl import app
from absl import flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import datasets  # pylint: disable=g-import-not-at-top,wrong-import-position
import experiments  # pylint: disable=g-import-not-at-top,wrong-import-position
from datasets import augment as augment_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from models import genotype as genotype_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from nas import errors  # pylint: disable=g-import-not-at-top,wrong-import-position
from nas import final  # pylint: disable=g-import-not-at-top,wrong-import-position
from nas import records  # pylint: disable=g-import-not-at-top,wrong-import-position
from nas import search  # pylint: disable=g-import-not-at-top,wrong-import-position
from nas.store import TrialStore  # pylint: disable=g-import-not-at-top,wrong-import-position

_SEEDS = flags.DEFINE_integer('seeds', 4, 'Trainings per genotype.')
_TOP = flags.DEFINE_integer('top', 1, 'Genotypes per search, best first.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Default $MEDNAS_DATA_DIR or ./data.')


def main(argv: list[str]) -> None:
  if len(argv) < 2 or _SEEDS.value < 2 or _TOP.value < 1:
    _fail('pass one or more search workdirs, --seeds of at least 2 and --top of at least 1')
  try:
    for workdir in argv[1:]:
      _retrain(workdir)
  except errors.UserError as e:
    _fail(str(e))


def _retrain(workdir: str) -> None:
  """Prints each of the search's best genotypes' fitness, stored and at `--seeds` seeds."""
  with TrialStore(workdir) as store:
    meta, trials = store.meta(), store.trials()
  stored = json.loads(meta['config'])
  config = experiments.get_config(meta['experiment'], stored['preset'],
                                  json.loads(meta['overrides']))
  if stored['search'].get('training_seeds', 1) > 1:
    raise errors.UserError(f'{workdir} averaged several trainings per candidate already, so '
                           'no one training of it can be repeated; pass a search of one')
  metric = config.search.metric
  for trial in final.ranking(trials)[:_TOP.value]:
    genotype = genotype_lib.from_json(trial.genotype)
    with tempfile.TemporaryDirectory() as checkpoints:
      ctx = search.EvalContext(
          data=datasets.Spec.from_config(config.data, _DATA_DIR.value, config.seed),
          num_classes=len(json.loads(meta['class_names'])), seed=config.seed,
          train_config=config.train, aug_config=augment_lib.AugmentConfig(**config.augment),
          metric=metric, checkpoint_root=checkpoints, training_seeds=_SEEDS.value)
      result = search.evaluate_candidate(genotype, trial.fidelity, ctx, generation=0)
    if result.status != records.OK:
      raise errors.UserError(f'{genotype.hash} failed to train: {result.error}')
    values = [m[metric] for m in result.metrics['per_seed']]
    print(f'{workdir} {genotype.hash} ({trial.params} parameters): {metric} at '
          f'{trial.fidelity} epochs stored {trial.metrics[metric]:.4f}; seeds {config.seed}-'
          f'{config.seed + _SEEDS.value - 1}: {" ".join(f"{v:.4f}" for v in values)}; '
          f'mean {np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}', flush=True)


def _fail(message: str) -> None:
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


if __name__ == '__main__':
  app.run(main)
