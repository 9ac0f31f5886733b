r"""Runs a MedNAS experiment (search, final retraining and test, report) or a study of several.

  python launch.py --experiment=pso_brain_mri --preset=quick
  python launch.py --experiment=pso_brain_mri --config.search.budget=20 --workdir=runs/a
  python launch.py --workdir=runs/a --resume
  python launch.py --list_experiments
  python launch.py --study=compare_optimizers_brain_mri --preset=quick --workdir=runs/cmp

Any config field can be overridden with --config.<path>=<value>; the value must have the
field's type. Results land in the workdir: trials.sqlite, leaderboard.md/.csv, report.html.
"""
from __future__ import annotations

import functools
import json
import logging as py_logging
import os
import shlex
import sys
import time
from typing import Sequence

from absl import app
from absl import flags
from absl import logging
import ml_collections

FLAGS = flags.FLAGS
flags.DEFINE_string('experiment', None, 'Experiment name (see --list_experiments).')
flags.DEFINE_string('preset', 'quick', 'smoke | quick | cpu | full.')
flags.DEFINE_string('workdir', None,
                    'Where the search is stored (default runs/<experiment>-<time>).')
flags.DEFINE_string('data_dir', None, 'Dataset root (default $MEDNAS_DATA_DIR or ./data).')
flags.DEFINE_bool('resume', False, 'Continue the search stored in --workdir.')
flags.DEFINE_bool('list_experiments', False, 'List the experiments and studies and exit.')
flags.DEFINE_string('study', None, 'Run a study of several searches (see --list_experiments) '
                    'into --workdir; running it again continues it (see nas/compare.py).')
flags.DEFINE_list('optimizers', None, 'Study: the optimizers to compare '
                  '(default pso,de,ga,cma,random).')
flags.DEFINE_integer('seeds', None, 'Study: runs per optimizer, seeds 0..N-1 (default 3).')
flags.DEFINE_integer('first_seed', 0, 'Study: the first seed, so that --seeds=N runs seeds '
                     'first_seed..first_seed+N-1 (to add seeds to a study).')

_OVERRIDE_PREFIX = '--config.'


class _Overrides:
  """`--config.a.b=v` arguments, taken out of argv before absl parses the rest."""
  values: list[str] = []


def _parse_flags(argv: list[str]) -> list[str]:
  _Overrides.values = [a[len(_OVERRIDE_PREFIX):] for a in argv[1:]
                       if a.startswith(_OVERRIDE_PREFIX)]
  for arg, after in zip(argv[1:], argv[2:]):
    if arg.startswith(_OVERRIDE_PREFIX) and '=' not in arg and not after.startswith('-'):
      _fail(f'write {arg}={after}: a --config override takes its value after "="')
  try:
    return FLAGS([a for a in argv if not a.startswith(_OVERRIDE_PREFIX)])
  except flags.Error as e:
    _fail(f'{e}; see python launch.py --helpshort')


def _fail(message: str, code: int = 2):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(code)


def _resolve_config(meta: dict[str, str] | None) -> ml_collections.ConfigDict:
  """The experiment's config; on --resume, the stored overrides and then the new ones."""
  import experiments  # pylint: disable=g-import-not-at-top
  from nas import errors  # pylint: disable=g-import-not-at-top
  if meta is None:
    if not FLAGS.experiment:
      raise errors.UserError('pass --experiment=NAME (see --list_experiments), '
                             'or --workdir=W --resume to continue a search')
    return experiments.get_config(FLAGS.experiment, FLAGS.preset, _Overrides.values)
  return experiments.get_config(
      FLAGS.experiment or meta['experiment'],
      FLAGS.preset if FLAGS['preset'].present else json.loads(meta['config'])['preset'],
      [*json.loads(meta['overrides']), *_Overrides.values])


def _resume_command(workdir: str) -> str:
  return f'python launch.py --workdir={shlex.quote(workdir)} --resume'


def run_experiment(config: ml_collections.ConfigDict, workdir: str,
                   overrides: Sequence[str] = (), data_dir: str | None = None) -> dict[str, str]:
  """Search, final stage and report of `config` in `workdir`; continues a search stored there.

  Returns the paths nas.report.write_report wrote. Raises UserError, before anything is
  written, where `workdir` holds a search of another config.
  """
  # Imported here so that --help and flag errors do not pay for importing JAX.
  import datasets  # pylint: disable=g-import-not-at-top
  import experiments  # pylint: disable=g-import-not-at-top
  from nas import distributed  # pylint: disable=g-import-not-at-top
  from nas import errors  # pylint: disable=g-import-not-at-top
  from nas import executors  # pylint: disable=g-import-not-at-top
  from nas import final  # pylint: disable=g-import-not-at-top
  from nas import optimizers  # pylint: disable=g-import-not-at-top
  from nas import report  # pylint: disable=g-import-not-at-top
  from nas import search  # pylint: disable=g-import-not-at-top
  from nas import train as train_lib  # pylint: disable=g-import-not-at-top
  from datasets import cache as data_cache  # pylint: disable=g-import-not-at-top
  from nas.store import TrialStore  # pylint: disable=g-import-not-at-top

  executors.check_config(config.executor)
  executors.prepare_this_process(config.executor)
  store = (TrialStore(workdir) if os.path.exists(os.path.join(workdir, 'trials.sqlite'))
           else None)
  try:
    if store:
      stored = store.meta()
      stored_config = json.loads(stored['config'])
      differences = experiments.config_differences(stored_config, json.loads(config.to_json()))
      if differences:
        raise errors.UserError(
            f'{workdir} holds a search with a different config; refusing to resume '
            f'({"; ".join(differences)}); start a new --workdir instead')
      if stored_config['search']['budget'] != config.search.budget:
        if config.search.optimizer not in optimizers.EXTENSIBLE:
          raise errors.UserError(
              f'search.optimizer={config.search.optimizer} asks other candidates at another '
              f'budget, so {workdir} cannot be extended to search.budget='
              f'{config.search.budget}; start a new --workdir with that budget')
        # Extended: a later --resume without the override continues at the larger budget.
        store.update_meta(config=config.to_json(), overrides=json.dumps(
            [*json.loads(stored['overrides']), f'search.budget={config.search.budget}']))
    distributed.initialize(config.distributed)
    compilation_cache = os.path.join(data_cache.cache_dir(), 'jax')
    train_lib.enable_compilation_cache(compilation_cache)
    data = datasets.Spec.from_config(config.data, data_dir, config.seed)
    splits = data.load()
    search.check_config(config, splits.task, len(splits.class_names))
    fingerprint = splits.fingerprint()
    if store and 'data' in stored and json.loads(stored['data']) != fingerprint:
      then = json.loads(stored['data'])['sizes']
      raise errors.UserError(
          f'{workdir} holds a search of other data than {data.name} in {data.data_dir} '
          f'(images per split then {then}, now {fingerprint["sizes"]}; or the same counts, '
          'other pixels); point --data_dir at the data it was stored with, or start a new '
          '--workdir')
    meta = dict(experiment=config.experiment, config=config.to_json(),
                overrides=json.dumps(list(overrides)),
                class_names=json.dumps(list(splits.class_names)), started=str(time.time()),
                data=json.dumps(fingerprint))
    host_dir = distributed.host_workdir(workdir)
    if store and host_dir != workdir:
      # Process 0 owns the workdir; the others replay a copy of its store. Their own stores
      # may differ from it by a trial (a kill between two processes' writes), and a process
      # that trained a candidate that the others replay would pair its collectives with
      # theirs for another one. Process 0 stores no trained candidate before this process
      # trains it too, so the copy holds every one that process 0 will replay.
      store.copy_to(host_dir)
      store.close()
      store = None
    if store and distributed.is_main():  # the report leaves out the pause before this session
      store.update_meta(resumed=json.dumps([*json.loads(stored.get('resumed', '[]')),
                                            time.time()]))
    store = store or TrialStore.open_or_create(host_dir, **meta)
    logging.info('workdir %s; train %d, val %d, test %d images', workdir,
                 len(splits.train.labels), len(splits.val.labels), len(splits.test.labels))
    try:
      executor = executors.make(config.executor, host_dir, compilation_cache)
      try:
        search.Search(config, data, len(splits.class_names), store, executor, splits.task,
                      workdir).run()
      finally:
        executor.shutdown()  # its workers' devices are the final stage's
      final.run_final(config, data, store, workdir)
    finally:
      train_lib.forget_compiled_steps()
  finally:
    if store:
      store.close()
  return report.write_report([workdir]) if distributed.is_main() else {}


def _check_not_a_file(workdir: str) -> None:
  from nas import errors  # pylint: disable=g-import-not-at-top
  if os.path.isfile(workdir):
    raise errors.UserError(f'--workdir={workdir} is a file; pass a folder (new or a search\'s)')


def _run_study() -> str:
  """The study's searches, one after the other, and its comparison; returns its workdir."""
  from nas import compare  # pylint: disable=g-import-not-at-top
  study = compare.make_study(FLAGS.study, FLAGS.preset, FLAGS.optimizers, FLAGS.seeds,
                             _Overrides.values, FLAGS.first_seed)
  FLAGS.workdir = workdir = FLAGS.workdir or os.path.join(
      'runs', f'{study.name}-{time.strftime("%Y%m%d-%H%M%S")}')
  _check_not_a_file(workdir)
  paths = compare.run_study(study, workdir,
                            functools.partial(run_experiment, data_dir=FLAGS.data_dir))
  print(f'study leaderboard: {paths["leaderboard.md"]}')
  print(f'study report:      {paths["report.html"]}')
  return workdir


def run() -> str:
  """Search, final stage and report, or a study; returns the workdir."""
  import experiments  # pylint: disable=g-import-not-at-top
  from nas import errors  # pylint: disable=g-import-not-at-top
  from nas.store import TrialStore  # pylint: disable=g-import-not-at-top

  if FLAGS.list_experiments:
    from nas import compare  # pylint: disable=g-import-not-at-top
    print('\n'.join(experiments.names()))
    print('\nstudies (--study=NAME):\n' + '\n'.join(compare.STUDIES))
    return ''
  if FLAGS.study:
    if FLAGS.experiment:
      raise errors.UserError(f'--study={FLAGS.study} runs its own experiment; drop '
                             f'--experiment={FLAGS.experiment}')
    return _run_study()
  if FLAGS.resume:
    if not FLAGS.workdir:
      raise errors.UserError('--resume needs --workdir=W, the workdir of the search to continue')
    with TrialStore(FLAGS.workdir) as store:
      config = _resolve_config(store.meta())
    workdir = FLAGS.workdir
  else:
    config = _resolve_config(None)
    FLAGS.workdir = workdir = FLAGS.workdir or os.path.join(
        'runs', f'{config.experiment}-{time.strftime("%Y%m%d-%H%M%S")}')
    _check_not_a_file(workdir)
    if os.path.exists(os.path.join(workdir, 'trials.sqlite')):
      raise errors.UserError(f'{workdir} already holds a search; add --resume to continue '
                             'it, or choose a new --workdir')
    from nas import compare  # pylint: disable=g-import-not-at-top
    if compare.holds_study(workdir):
      raise errors.UserError(f'{workdir} holds an optimizer study, whose report the search '
                             'would overwrite; choose a new --workdir')
  paths = run_experiment(config, workdir, _Overrides.values, FLAGS.data_dir)
  print(f'leaderboard: {paths.get("leaderboard.md", workdir)}')
  print(f'report:      {paths.get("report.html", workdir)}')
  if not config.final.top_k:
    print('final stage skipped (final.top_k=0): no network was retrained or tested')
  if os.path.isdir(os.path.join(workdir, 'best')):
    print(f'best model:  {os.path.join(workdir, "best")}  (models.load(path).predict(images))')
  return workdir


def _without_orbax_info(record: py_logging.LogRecord) -> bool:
  # Orbax logs about ten INFO lines per checkpoint, and a final training saves one every
  # epoch: they would bury the training's own lines. Its warnings and errors stay.
  return record.levelno >= py_logging.WARNING or f'{os.sep}orbax{os.sep}' not in record.pathname


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    _fail(f'unexpected arguments {" ".join(argv[1:])}; flags look like --name=value')
  logging.get_absl_handler().addFilter(_without_orbax_info)
  import datasets  # pylint: disable=g-import-not-at-top
  from nas import errors  # pylint: disable=g-import-not-at-top
  try:
    run()
  except (errors.UserError, datasets.DataError) as e:
    _fail(str(e))
  except KeyboardInterrupt:
    if FLAGS.study and FLAGS.workdir:
      _fail('interrupted; finished runs are kept. Continue with the same command and '
            f'--workdir={shlex.quote(FLAGS.workdir)}', code=130)
    if FLAGS.workdir and os.path.exists(os.path.join(FLAGS.workdir, 'trials.sqlite')):
      _fail('interrupted; every finished trial is stored. Resume with: '
            f'{_resume_command(FLAGS.workdir)}', code=130)
    _fail('interrupted before the search started; nothing was stored', code=130)


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
