"""Optimizer studies: several optimizers x seeds on one task at one evaluation budget.

  python launch.py --study=compare_optimizers_brain_mri --preset=quick --workdir=runs/cmp \
      [--optimizers=pso,de,ga,cma,random] [--seeds=3] [--first_seed=0] \
      [--config.search.budget=20]

Every run is the study's experiment (pso_<task>) with `search.optimizer` and `seed` set (at
one seed, every optimizer starts from the same first population: `search.shared_start`),
trained by `launch.run_experiment` in `<workdir>/<optimizer>-seed<seed>/` as if launched by
hand (each has its own leaderboard and report, and `--resume` works on it). Overrides apply to
every run, so every optimizer asks the same number of candidates. A run that finished is
skipped when the same command runs again; one that was interrupted is resumed, and one that
finished at a smaller `search.budget` is extended (its stored candidates replay). The study's
own leaderboard and report, comparing the optimizers, land in `<workdir>/`
(`nas.report.write_study`), rewritten each time the runs of a seed are all finished.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import os
from typing import Any, Callable, Sequence

from absl import logging
import ml_collections

import experiments
from nas import errors
from nas import optimizers as optimizers_lib
from nas import report

# Study name -> the experiment every run starts from.
STUDIES: dict[str, str] = {
    f'compare_optimizers_{task}': f'pso_{task}'
    for task in ('brain_mri', 'pneumoniamnist', 'breastmnist', 'dermamnist', 'synthetic')}
OPTIMIZERS = ('pso', 'de', 'ga', 'cma', 'random')
SEEDS = 3
# Written into a run's workdir once it has finished: the config it finished with.
FINISHED = 'finished.json'
# The fields a study sets in each run; overriding them would make the runs equal.
_STUDY_FIELDS = ('search.optimizer', 'seed')

RunExperiment = Callable[[ml_collections.ConfigDict, str, Sequence[str]], Any]


@dataclasses.dataclass(frozen=True)
class StudyRun:
  """One optimizer at one seed."""
  optimizer: str
  seed: int
  overrides: tuple[str, ...]  # the study's overrides, then this run's optimizer and seed

  @property
  def name(self) -> str:
    return f'{self.optimizer}-seed{self.seed}'


@dataclasses.dataclass(frozen=True)
class Study:
  name: str
  experiment: str
  preset: str
  optimizers: tuple[str, ...]
  seeds: tuple[int, ...]
  overrides: tuple[str, ...]

  def runs(self) -> list[StudyRun]:
    # Seed-major, so that a study stopped part-way holds every optimizer for the seeds it did.
    return [StudyRun(o, s, (*self.overrides, f'search.optimizer={o}', f'seed={s}'))
            for s in self.seeds for o in self.optimizers]

  def config(self, run: StudyRun) -> ml_collections.ConfigDict:
    return experiments.get_config(self.experiment, self.preset, run.overrides)


def make_study(name: str, preset: str, optimizers: Sequence[str] | None = None,
               seeds: int | None = None, overrides: Sequence[str] = (),
               first_seed: int = 0) -> Study:
  """The study `name` at `preset`, seeds first_seed..first_seed+seeds-1.

  A later first_seed adds seeds to a study, or splits one across machines: the run folders
  copied into one workdir, the command with first_seed 0 and every seed skips the finished
  runs and merges them all. UserError, before anything trains, for any bad input.
  """
  if name not in STUDIES:
    near = difflib.get_close_matches(name, list(STUDIES), n=3)
    hint = f'did you mean {" or ".join(near)}? ' if near else ''
    raise errors.UserError(f'unknown study {name!r}; {hint}choose one of '
                           f'{", ".join(STUDIES)}')
  optimizers = tuple(OPTIMIZERS if optimizers is None else optimizers)
  if not optimizers:
    raise errors.UserError('--optimizers names none; list some, e.g. --optimizers=pso,de,random')
  unknown = [o for o in optimizers if o not in optimizers_lib.OPTIMIZERS]
  if unknown:
    raise errors.UserError(f'unknown optimizer {", ".join(map(repr, unknown))} in --optimizers; '
                           f'choose from {", ".join(sorted(optimizers_lib.OPTIMIZERS))}')
  if len(set(optimizers)) < len(optimizers):
    raise errors.UserError(f'--optimizers={",".join(optimizers)} names an optimizer twice')
  seeds = SEEDS if seeds is None else seeds
  if seeds < 1:
    raise errors.UserError(f'--seeds={seeds}: a study needs at least one seed per optimizer')
  if first_seed < 0:
    raise errors.UserError(f'--first_seed={first_seed}: seeds start at 0')
  fixed = [o for o in overrides if o.partition('=')[0] in _STUDY_FIELDS]
  if fixed:
    raise errors.UserError(f'the study sets search.optimizer and seed of each run; use '
                           f'--optimizers and --seeds instead of --config.{fixed[0]}')
  study = Study(name, STUDIES[name], preset, optimizers,
                tuple(range(first_seed, first_seed + seeds)), tuple(overrides))
  for run in study.runs():  # a typo in an override fails here, not after hours of training
    study.config(run)
  return study


def run_study(study: Study, workdir: str, run_experiment: RunExperiment) -> dict[str, str]:
  """Runs what is not finished yet and writes the study's leaderboard and report.

  They are written each time this call finishes the runs of a seed, over the seeds so far,
  so that a long study stopped part-way has a leaderboard of its finished seeds, and at the
  end over every seed.

  Args:
    study: from make_study.
    workdir: the study's folder; each run gets a folder in it.
    run_experiment: trains `(config, workdir, overrides)` as launch.py does, continuing a
      search stored in that workdir.

  Returns:
    The paths nas.report.write_study wrote, by file name.
  """
  if os.path.exists(os.path.join(workdir, 'trials.sqlite')):
    raise errors.UserError(f'{workdir} holds a single search, whose report the study would '
                           'overwrite; choose another --workdir for the study')
  runs = study.runs()
  ran = False  # since the last leaderboard
  for i, run in enumerate(runs, start=1):
    run_dir = os.path.join(workdir, run.name)
    config = study.config(run)
    if _finished(run_dir, run, config):
      logging.info('study %s: run %d/%d %s finished before; skipped', study.name, i, len(runs),
                   run.name)
    else:
      logging.info('study %s: run %d/%d %s', study.name, i, len(runs), run.name)
      run_experiment(config, run_dir, run.overrides)
      _write_json(os.path.join(run_dir, FINISHED),
                  {'overrides': run.overrides, 'config': json.loads(config.to_json())})
      ran = True
    if ran and i < len(runs) and runs[i].seed != run.seed:  # runs[:i] ends a seed
      _write_report(study, workdir, runs[:i])
      ran = False
  return _write_report(study, workdir, runs)


def _write_report(study: Study, workdir: str, finished: list[StudyRun]) -> dict[str, str]:
  seeds = len({run.seed for run in finished})
  so_far = '' if seeds == len(study.seeds) else f'; {seeds} of {len(study.seeds)} seeds so far'
  return report.write_study([os.path.join(workdir, run.name) for run in finished], workdir,
                            title=f'{study.name} ({study.experiment}, preset {study.preset}'
                            f'{so_far})')


def holds_study(workdir: str) -> bool:
  """Whether `workdir` holds a study's runs (searches in its sub-folders)."""
  return os.path.isdir(workdir) and any(
      os.path.exists(os.path.join(workdir, name, 'trials.sqlite'))
      for name in os.listdir(workdir))


def _write_json(path: str, value: Any) -> None:
  # Via a temporary file: a kill while writing leaves no half marker.
  temporary = f'{path}.{os.getpid()}.tmp'
  with open(temporary, 'w', encoding='utf-8') as f:
    json.dump(value, f, indent=1)
  os.replace(temporary, path)


def _finished(run_dir: str, run: StudyRun, config: ml_collections.ConfigDict) -> bool:
  """Whether the run finished with this config; UserError if it finished with another.

  A run finished at a smaller budget is not finished: the study extends it.
  """
  path = os.path.join(run_dir, FINISHED)
  if not os.path.exists(path):
    return False
  try:
    with open(path, encoding='utf-8') as f:
      finished = json.load(f)
  except (OSError, ValueError) as e:  # the run's store is intact: resuming it finishes it again
    logging.warning('%s unreadable (%s); the run is resumed', path, e)
    return False
  differences = experiments.config_differences(finished['config'],
                                               json.loads(config.to_json()))
  if differences:
    raise errors.UserError(
        f'{run_dir} holds a run finished with another config ({"; ".join(differences)}; '
        f'overrides then: {" ".join(finished["overrides"])}); run the study in a new '
        '--workdir')
  return finished['config']['search']['budget'] == config.search.budget
