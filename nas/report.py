"""Leaderboards and a self-contained HTML report of a search, or a comparison of several.

  python -m nas.report WORKDIR [WORKDIR ...] [--out=DIR]
  python -m nas.report --merge_study=DIR STUDY/*-seed* [OTHER_STUDY/*-seed* ...]

Writes `leaderboard.md`, `leaderboard.csv` and `report.html` into each workdir and, for several
workdirs, the same three files comparing them into --out. With --merge_study, the workdirs are
optimizer runs (a study's `<optimizer>-seed<N>` folders, from one study or several, e.g. seeds
run in workdirs of their own) and DIR gets their optimizer study leaderboard, as
`launch.py --study` writes it. The trial store is only read, so a report can be written while
its search is still running.
"""
from __future__ import annotations

import base64
import collections
import dataclasses
import functools
import html
import importlib.resources
import io
import json
import os
import sqlite3
import sys
import time
from typing import Any, Callable, Sequence
import urllib.parse

from absl import app
from absl import flags
from matplotlib import figure
from matplotlib import ticker
from matplotlib.backends import backend_agg
import numpy as np
import pandas as pd
from scipy import stats

import experiments
from nas import errors
from nas import records
from nas import store

_OUT = flags.DEFINE_string(
    'out', None, 'Where the comparison of several workdirs goes; '
    'default: <parent of the first workdir>/comparison.')
_MERGE_STUDY = flags.DEFINE_string(
    'merge_study', None, 'Merge the workdirs, runs of optimizers x seeds, into one optimizer '
    'study leaderboard in this folder (each optimizer and seed once).')

HTML_TOP = 20  # leaderboard rows shown in report.html; the .md and .csv have all
_NA = '—'
# nas.metrics.FITNESS_METRICS (a test keeps them equal), not imported: nas.metrics imports
# scikit-learn, which would double the start-up time of this command.
TEST_METRICS = ('accuracy', 'balanced_accuracy', 'macro_f1', 'auc')
# nas.seg_metrics.SEG_FITNESS_METRICS and HD95, likewise kept equal and not imported.
SEG_TEST_METRICS = ('dice', 'iou', 'precision', 'recall', 'hd95')
_TRAINED = (records.OK, records.FAILED)  # duplicates and rejections cost no training
_NAMES = {'accuracy': 'accuracy', 'balanced_accuracy': 'balanced accuracy', 'macro_f1': 'macro F1',
          'auc': 'AUC', 'dice': 'Dice', 'iou': 'IoU', 'precision': 'precision',
          'recall': 'recall', 'hd95': 'HD95 (pixels, lower is better)'}
_SHORT_NAMES = {'accuracy': 'acc', 'balanced_accuracy': 'bal. acc', 'macro_f1': 'macro F1',
                'auc': 'AUC', 'dice': 'Dice', 'iou': 'IoU', 'precision': 'precision',
                'recall': 'recall', 'hd95': 'HD95 px ↓'}
_DIGITS = {'hd95': 2}  # pixels; every other metric is a fraction, shown with 4 digits
_LINESTYLES = ('-', '--', ':', '-.')
_CSS = """
body {font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1250px; color: #222;
      padding: 0 1em}
table {border-collapse: collapse; font-size: 13px; margin: .5em 0 1.5em}
th, td {border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top}
thead th {background: #eef1f5}
table.fields th {background: #f6f6f6; white-space: nowrap}
img {max-width: 100%; display: block; margin: .5em 0 1.5em}
.muted {color: #666}
"""


@dataclasses.dataclass(frozen=True)
class Run:
  """What one search workdir holds, read once."""
  workdir: str
  meta: dict[str, str]
  config: dict[str, Any]
  class_names: tuple[str, ...]
  trials: tuple[records.Trial, ...]
  finals: tuple[records.FinalResult, ...]
  ensembles: tuple[records.EnsembleResult, ...] = ()
  label: str = ''

  def setting(self, dotted: str, default: Any = None) -> Any:
    """A config field such as 'search.metric'.

    Where the stored config lacks it: its earlier value if it was added later (as a resumed
    search reads it, `experiments.FIELDS_ADDED_LATER`), else `default`.
    """
    value = self.config
    for key in dotted.split('.'):
      if not isinstance(value, dict) or key not in value:
        return experiments.FIELDS_ADDED_LATER.get(dotted, default)
      value = value[key]
    return value

  @property
  def experiment(self) -> str:
    return self.meta.get('experiment') or self.setting('experiment', '') or os.path.basename(
        os.path.abspath(self.workdir))

  @property
  def dataset(self) -> str:
    return str(self.setting('data.name', 'unknown'))

  @property
  def image_size(self) -> str:
    size = self.setting('data.image_size', None)
    return f'{size}px' if size else 'unknown size'

  @property
  def optimizer(self) -> str:
    return str(self.setting('search.optimizer', 'unknown'))

  @property
  def fitness(self) -> str:
    """What ranked the candidates, e.g. 'validation auc, mean of 2 trainings per candidate'."""
    repeats = int(self.setting('search.training_seeds', 1))
    return f'validation {self.metric}' + (
        f', mean of {repeats} trainings per candidate (seeds seed to seed + {repeats - 1})'
        if repeats > 1 else '')

  @property
  def metric(self) -> str:
    return str(self.setting('search.metric', 'accuracy'))

  @property
  def task(self) -> str:
    """'classification' or 'segmentation', told by the ranking metric: no metric ranks both."""
    return next((name for name, task in _TASKS.items() if self.metric in task.test_metrics),
                'classification')

  @property
  def start_time(self) -> float:
    """When the search started: meta 'started', or when its first trial began training."""
    starts = []
    if self.trials:
      first = self.trials[0]
      starts.append(first.created - first.train_seconds)  # train_seconds include compiling
    try:
      starts.append(float(self.meta['started']))
    except (KeyError, ValueError):
      pass
    return min(starts, default=0.0)


def load_run(workdir: str) -> Run:
  """Reads one search's meta, trials and final results; UserError if it is not a search."""
  with store.TrialStore(workdir) as trial_store:
    try:
      meta, trials, finals = trial_store.meta(), trial_store.trials(), trial_store.finals()
      ensembles = trial_store.ensembles()
    except sqlite3.Error as e:
      raise errors.UserError(f'cannot read the trial store in {workdir}: {e}') from e
  try:
    config = json.loads(meta.get('config', '{}'))
    class_names = tuple(str(name) for name in json.loads(meta.get('class_names', '[]')))
  except json.JSONDecodeError as e:
    raise errors.UserError(f'the trial store in {workdir} has malformed meta: {e}') from e
  run = Run(workdir, meta, config, class_names, tuple(trials), tuple(finals), tuple(ensembles))
  seed = run.setting('seed', '?')
  return dataclasses.replace(run, label=f'{run.experiment} {run.optimizer} seed {seed}')


def _unique_labels(runs: Sequence[Run]) -> list[Run]:
  """Runs whose labels collide get their workdir's name appended, so legends tell them apart."""
  counts = collections.Counter(run.label for run in runs)
  unique = []
  for run in runs:
    if counts[run.label] > 1:
      name = os.path.basename(os.path.abspath(run.workdir))
      run = dataclasses.replace(run, label=f'{run.label} ({name})')
    unique.append(run)
  return unique


# The leaderboard.


def _metric_names(run: Run) -> tuple[str, ...]:
  """The ranking metric first, then the other metrics of the run's task."""
  return tuple(dict.fromkeys((run.metric, *_TASKS[run.task].test_metrics)))


def _value(values: dict[str, Any], name: str) -> float:
  """One metric as a float; NaN where missing or None (JSON has no NaN)."""
  value = values.get(name)
  return float('nan') if value is None else float(value)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample standard deviation of the finite values; NaN where there are too few."""
  finite = [v for v in values if np.isfinite(v)]
  mean = float(np.mean(finite)) if finite else float('nan')
  std = float(np.std(finite, ddof=1)) if len(finite) > 1 else float('nan')
  return mean, std


def _by_hash(items: Sequence[Any]) -> dict[str, list[Any]]:
  grouped = collections.defaultdict(list)
  for item in items:
    grouped[item.genotype_hash].append(item)
  return grouped


def _columns(names: Sequence[str]) -> list[str]:
  return ['genotype_hash', 'description', 'fidelity', 'trial_id',
          *[f'val_{n}' for n in names],
          *[f'test_{n}_{stat}' for n in names for stat in ('mean', 'std')],
          'final_seeds', 'params', 'flops', 'train_seconds', 'trials']


def leaderboard(run: Run) -> pd.DataFrame:
  """One row per genotype that trained ok: highest fidelity, then best validation metric.

  Each genotype is scored by its ok trial at the highest fidelity; test columns are the mean
  and sample std over its final seeds (NaN if it was not finally tested); train_seconds sums
  all of its trials that trained.
  """
  names = _metric_names(run)
  finals = _by_hash(run.finals)
  rows = []
  for genotype_hash, trials in _by_hash(run.trials).items():
    ok = [t for t in trials if t.status == records.OK]
    if not ok:
      continue
    best = max(ok, key=lambda t: (t.fidelity, -(t.id or 0)))
    row = {'genotype_hash': genotype_hash, 'description': best.description,
           'fidelity': best.fidelity, 'trial_id': best.id}
    row.update({f'val_{n}': _value(best.metrics, n) for n in names})
    tested = finals.get(genotype_hash, [])
    for n in names:
      row[f'test_{n}_mean'], row[f'test_{n}_std'] = _mean_std(
          [_value(f.test_metrics, n) for f in tested])
    row.update(final_seeds=len(tested), params=best.params, flops=best.flops,
               train_seconds=sum(t.train_seconds for t in trials if t.status in _TRAINED),
               trials=len(trials))
    rows.append(row)
  board = pd.DataFrame(rows, columns=_columns(names))
  # As nas.final.ranking: a genotype promoted to a higher fidelity beat every one that was
  # not, and metrics are compared within a fidelity, never across.
  board = board.sort_values(['fidelity', f'val_{run.metric}', 'params'],
                            ascending=[False, False, True], na_position='last', kind='stable')
  board.insert(0, 'rank', np.arange(1, len(board) + 1))
  return board.reset_index(drop=True)


def _winner(board: pd.DataFrame) -> pd.Series | None:
  """The best-ranked genotype that was finally tested, else the best-ranked one."""
  if board.empty:
    return None
  tested = board[board.final_seeds > 0]
  return (tested if len(tested) else board).iloc[0]


def _tested(run: Run, winner: pd.Series | None) -> list[dict[str, Any]]:
  """The winner's test metrics, one dict per final seed."""
  if winner is None:
    return []
  return [f.test_metrics for f in run.finals if f.genotype_hash == winner.genotype_hash]


def _ensemble(run: Run, winner: pd.Series | None) -> records.EnsembleResult | None:
  """The winner's final seeds tested together, if the final stage tested them so."""
  if winner is None:
    return None
  return next((e for e in run.ensembles if e.genotype_hash == winner.genotype_hash), None)


def _winner_evaluations(run: Run, winner: pd.Series) -> tuple[list[dict[str, Any]], str]:
  """The winner's test metrics, one dict per final seed, else its validation metrics; and which."""
  tested = _tested(run, winner)
  if tested:
    return tested, f'test split, {len(tested)} seed{"s" if len(tested) > 1 else ""}'
  # A candidate trained at several seeds (search.training_seeds) keeps each training's.
  return ([m for t in run.trials if t.id == winner.trial_id
           for m in t.metrics.get('per_seed', [t.metrics])],
          f'validation split at {winner.fidelity} epochs (no final test yet)')


def _elapsed(run: Run) -> np.ndarray:
  """Seconds of searching from its start to each trial landing, in store order.

  A search stopped and resumed (meta 'resumed': when each later session started) counts each
  session from its start to its last trial, not the pause between sessions.
  """
  landed = np.array([t.created for t in run.trials], dtype=float)
  starts = np.array([run.start_time, *json.loads(run.meta.get('resumed', '[]'))], dtype=float)
  session = np.maximum(np.searchsorted(starts, landed, side='right') - 1, 0)
  ends = starts.copy()
  np.maximum.at(ends, session, landed)
  before = np.concatenate([[0.0], np.cumsum(ends - starts)[:-1]])
  return before[session] + landed - starts[session]


# Text: numbers as people read them, and the summary above every table.


def _fmt(value: float, digits: int = 4) -> str:
  return _NA if not np.isfinite(value) else f'{value:.{digits}f}'


def _fmt_mean_std(mean: float, std: float, digits: int = 4) -> str:
  if not np.isfinite(mean):
    return _NA
  if not np.isfinite(std):
    return f'{mean:.{digits}f}'
  return f'{mean:.{digits}f} ± {std:.{digits}f}'


def _fmt_count(count: float) -> str:
  for scale, suffix in ((1e9, 'G'), (1e6, 'M'), (1e3, 'k')):
    if count >= scale:
      return f'{count / scale:.3g}{suffix}'
  return str(int(count)) if count > 0 else _NA


def _fmt_duration(seconds: float) -> str:
  if seconds < 120:
    return f'{seconds:.0f} s'
  if seconds < 7200:
    return f'{seconds / 60:.1f} min'
  return f'{seconds / 3600:.1f} h'


def _status_counts(run: Run) -> str:
  """E.g. '14 trials: 9 ok, 2 failed, 1 rejected, 2 duplicate'; every status, even at 0."""
  counts = collections.Counter(t.status for t in run.trials)
  statuses = [*records.STATUSES, *sorted(set(counts) - set(records.STATUSES))]
  return f'{len(run.trials)} trials: ' + ', '.join(f'{counts[s]} {s}' for s in statuses)


def _status_line(run: Run, board: pd.DataFrame) -> str:
  return f'{_status_counts(run)}; {len(board)} distinct genotypes trained ok.'


def _wall_time(run: Run) -> str:
  elapsed = _elapsed(run)
  return _fmt_duration(float(elapsed.max())) if elapsed.size else _NA


def _test_summary(winner: pd.Series, names: Sequence[str]) -> str:
  """E.g. 'accuracy 0.9300 ± 0.0361, AUC 0.97 ... (mean ± std over 3 seeds)'."""
  parts = [f'{_NAMES.get(n, n)} '
           f'{_fmt_mean_std(winner[f"test_{n}_mean"], winner[f"test_{n}_std"], _DIGITS.get(n, 4))}'
           for n in names]
  return ', '.join(parts) + f' ({_over_seeds(winner.final_seeds)})'


def _over_seeds(n: int) -> str:
  """How a test number of n final seeds was summarised."""
  return 'one seed' if n == 1 else f'mean ± std over {n} seeds'


def _header(run: Run, board: pd.DataFrame) -> list[tuple[str, str]]:
  """The fields above the leaderboard, as (name, value) pairs."""
  winner = _winner(board)
  names = _TASKS[run.task].test_metrics
  fields = [('Experiment', run.experiment), ('Dataset', run.dataset),
            ('Image size', run.image_size), ('Optimizer', run.optimizer),
            ('Search metric', run.fitness), ('Trials', _status_counts(run)),
            ('Wall time', _wall_time(run)), ('Workdir', run.workdir)]
  if winner is None:
    return fields + [('Best validation', 'no trial has trained ok yet')]
  best = board.iloc[0]
  fields.append(('Best validation', f'{run.metric} {_fmt(best[f"val_{run.metric}"])} at '
                 f'{best.fidelity} epochs: {best.description}'))
  if winner.final_seeds:
    fields.append((f'Final test of the winner (rank {winner["rank"]})',
                   _test_summary(winner, names)))
    deduplicated = [f.test_metrics[records.DEDUPLICATED] for f in run.finals
                    if f.genotype_hash == winner.genotype_hash
                    and records.DEDUPLICATED in f.test_metrics]
    if deduplicated:
      mean, std = _mean_std([d[names[0]] for d in deduplicated])
      fields.append(('Final test without leaked images',
                     f'{_NAMES[names[0]]} {_fmt_mean_std(mean, std)} on the '
                     f'{deduplicated[0]["num_examples"]} test images that have no near '
                     f'duplicate in the training split ({_over_seeds(len(deduplicated))})'))
    ensembled = _ensemble(run, winner)
    if ensembled:
      fields.append((f'Final test of the winner\'s {len(ensembled.seeds)} seeds ensembled',
                     _ensemble_summary(run, ensembled, names)))
  else:
    fields.append(('Final test', 'not yet: no genotype has been retrained and tested'))
  return fields


def _ensemble_summary(run: Run, ensembled: records.EnsembleResult, names: Sequence[str]) -> str:
  """E.g. "accuracy 0.9263, AUC 0.9760 (soft voting: ...; python -m nas.evaluate ...)"."""
  text = ', '.join(_metric_text(ensembled.test_metrics, n) for n in names)
  deduplicated = ensembled.test_metrics.get(records.DEDUPLICATED)
  if deduplicated:
    text += f'; without leaked images {_metric_text(deduplicated, names[0])}'
  pattern = os.path.join(run.workdir, 'final', f'{ensembled.genotype_hash}-seed*')
  return (f"{text} (soft voting: the mean of the {len(ensembled.seeds)} networks' "
          f"probabilities; python -m nas.evaluate --model='{pattern}' prints each and the "
          'ensemble)')


def _metric_text(values: dict[str, Any], name: str, names: dict[str, str] = _NAMES) -> str:
  """E.g. 'accuracy 0.9263', one metric of a single evaluation."""
  return f'{names.get(name, name)} {_fmt(_value(values, name), _DIGITS.get(name, 4))}'


def _display(board: pd.DataFrame, run: Run) -> pd.DataFrame:
  """The leaderboard as a person reads it: formatted numbers, test results as mean ± std."""
  task = _TASKS[run.task]
  shown = pd.DataFrame({'#': board['rank'].astype(str), 'architecture': board.description})
  for name in dict.fromkeys((run.metric, *task.validation)):
    shown[f'val {_SHORT_NAMES.get(name, name)}'] = board[f'val_{name}'].map(_fmt)
  shown['epochs'] = board.fidelity.astype(str)
  for name in task.test_metrics:
    shown[f'test {_SHORT_NAMES[name]}'] = [
        _fmt_mean_std(m, s, _DIGITS.get(name, 4))
        for m, s in zip(board[f'test_{name}_mean'], board[f'test_{name}_std'])]
  shown['seeds'] = board.final_seeds.astype(str)
  shown['params'] = board.params.map(_fmt_count)
  shown['FLOPs'] = board.flops.map(_fmt_count)
  shown['cost'] = board.train_seconds.map(_fmt_duration)
  shown['trials'] = board.trials.astype(str)
  return shown


def _failures(run: Run) -> pd.DataFrame:
  """Distinct first lines of the errors of failed and rejected trials, most frequent first."""
  errors_seen = [(t.status, (t.error.strip().splitlines() or ['(no message)'])[0][:200])
                 for t in run.trials if t.status in (records.FAILED, records.REJECTED)]
  table = pd.DataFrame(errors_seen, columns=['status', 'error'])
  return table.value_counts().reset_index(name='trials').head(10)


# Published numbers (nas/anchors.json) beside the measured ones.


@functools.cache
def anchors() -> dict[str, Any]:
  """Published numbers, transcribed from the project's ANCHORS.md; 'datasets' is by data.name."""
  text = importlib.resources.files('nas').joinpath('anchors.json').read_text(encoding='utf-8')
  return json.loads(text)


def _fmt_unit(mean: float, std: float, unit: str) -> str:
  """Measured numbers in the unit the published ones use (99.19% or .944)."""
  if unit == 'percent':
    return _fmt_mean_std(100 * mean, 100 * std, 2) + ('%' if np.isfinite(mean) else '')
  return _fmt_mean_std(mean, std, 3)


def _measured_rows(run: Run, board: pd.DataFrame, entry: dict[str, Any]) -> list[list[str]]:
  """The winner's row, and its seeds' ensemble's where the final stage tested one."""
  winner = _winner(board)
  tested = _tested(run, winner)
  values = [_fmt_unit(*_mean_std([_value(t, key) for t in tested]), entry['unit'])
            for key, _ in entry['metrics']]
  notes = _over_seeds(len(tested)) if tested else 'no final test yet'
  if winner is not None and winner.params > 0:  # published rows name their sizes in notes
    notes += f'; {_fmt_count(winner.params)} parameters'
  rows = [[f'MedNAS winner: {run.label}', *values, 'official test split', run.image_size, notes]]
  ensembled = _ensemble(run, winner)
  if ensembled:
    rows.append([f'MedNAS winner, its {len(ensembled.seeds)} seeds ensembled: {run.label}',
                 *[_fmt_unit(_value(ensembled.test_metrics, key), float('nan'), entry['unit'])
                   for key, _ in entry['metrics']],
                 'official test split', run.image_size, 'soft voting of the seeds above'])
  return rows


def published(runs: Sequence[Run],
              boards: Sequence[pd.DataFrame]) -> list[tuple[str, pd.DataFrame | None]]:
  """Per dataset of `runs`: a title and the measured winners above the published numbers.

  The table is None where no published numbers are on file for the dataset.
  """
  sections = []
  for dataset in dict.fromkeys(run.dataset for run in runs):
    entry = anchors()['datasets'].get(dataset)
    if entry is None:
      sections.append((f'No published numbers on file for dataset {dataset!r}.', None))
      continue
    keys = [key for key, _ in entry['metrics']]
    rows = [row for run, board in zip(runs, boards) if run.dataset == dataset
            for row in _measured_rows(run, board, entry)]
    rows += [[row['system'], *[row['results'].get(key, _NA) for key in keys],
              row.get('split', entry['split']), row.get('image_size', entry['image_size']),
              row.get('notes', '')] for row in entry['rows']]
    columns = ['system', *[label for _, label in entry['metrics']], 'split', 'image size', 'notes']
    source = f' (published: {entry["source"]})' if 'source' in entry else ''
    sections.append((entry['title'] + source, pd.DataFrame(rows, columns=columns)))
  return sections


# Plots, each a matplotlib Figure rendered by Agg into a data URI.


def _png(fig: figure.Figure) -> str:
  """The figure as a data URI, so that the report needs no file beside it."""
  buffer = io.BytesIO()
  backend_agg.FigureCanvasAgg(fig).print_png(buffer)
  return 'data:image/png;base64,' + base64.b64encode(buffer.getvalue()).decode('ascii')


def _plain(text: str) -> str:
  """Text that matplotlib shows as written: '$' would start math mode."""
  return text.replace('$', r'\$')


def _tick(name: str, width: int = 18) -> str:
  return _plain(name if len(name) <= width else name[:width - 1] + '…')


def _styles(runs: Sequence[Run]) -> list[tuple[str, str]]:
  """(color, linestyle) per run: one color per optimizer, line styles tell its seeds apart."""
  colors = {name: f'C{i % 10}' for i, name in enumerate(sorted({r.optimizer for r in runs}))}
  seen = collections.Counter()
  styles = []
  for run in runs:
    styles.append((colors[run.optimizer], _LINESTYLES[seen[run.optimizer] % len(_LINESTYLES)]))
    seen[run.optimizer] += 1
  return styles


def _ok_values(run: Run) -> np.ndarray:
  """The search metric of each trial in store order; NaN for trials that did not train ok."""
  return np.array([_value(t.metrics, run.metric) if t.status == records.OK else np.nan
                   for t in run.trials], dtype=float)


def _time_unit(seconds: float) -> tuple[float, str]:
  if seconds < 120:
    return 1.0, 's'
  return (60.0, 'min') if seconds < 7200 else (3600.0, 'h')


def _plot_progress(runs: Sequence[Run]) -> figure.Figure:
  """Best-so-far validation metric against evaluations and against wall time."""
  fig = figure.Figure(figsize=(11, 4.2), layout='constrained')
  by_eval, by_time = fig.subplots(1, 2, sharey=True)
  elapsed = [_elapsed(run) for run in runs]
  scale, unit = _time_unit(max((float(e.max()) for e in elapsed if e.size), default=0.0))
  for run, seconds, (color, style) in zip(runs, elapsed, _styles(runs)):
    values = _ok_values(run)
    best = np.fmax.accumulate(values) if values.size else values
    steps = np.arange(1, len(values) + 1)
    label = 'best so far' if len(runs) == 1 else run.label
    if len(runs) == 1:
      by_eval.scatter(steps, values, s=14, color='0.65', label='each ok trial')
      by_time.scatter(seconds / scale, values, s=14, color='0.65')
    by_eval.plot(steps, best, drawstyle='steps-post', color=color, linestyle=style, lw=2,
                 label=_plain(label))
    by_time.plot(seconds / scale, best, drawstyle='steps-post', color=color, linestyle=style,
                 lw=2)
  by_eval.set_xlabel('evaluations (trials in the order they landed)')
  by_time.set_xlabel(f'wall time searching ({unit}; pauses between sessions left out)')
  metric_names = ' / '.join(dict.fromkeys(run.metric for run in runs))
  by_eval.set_ylabel(f'best validation {metric_names}')
  by_eval.legend(loc='lower right', fontsize=8)
  for ax in (by_eval, by_time):
    ax.grid(alpha=0.3)
  return fig


def _pareto_front(params: np.ndarray, values: np.ndarray) -> np.ndarray:
  """Indices of the points no other beats with as few parameters, in order of parameters."""
  front, best = [], -np.inf
  for i in np.lexsort((-values, params)):
    if values[i] > best:
      front.append(i)
      best = values[i]
  return np.array(front, dtype=int)


def _plot_pareto(runs: Sequence[Run], boards: Sequence[pd.DataFrame]) -> figure.Figure:
  """Validation metric against parameters of every ok trial, the Pareto front highlighted."""
  fig = figure.Figure(figsize=(8, 4.8), layout='constrained')
  ax = fig.subplots()
  single = len(runs) == 1
  for run, board, (color, style) in zip(runs, boards, _styles(runs)):
    ok = [t for t in run.trials if t.status == records.OK and t.params > 0
          and np.isfinite(_value(t.metrics, run.metric))]
    if not ok:
      continue
    params = np.array([t.params for t in ok], dtype=float)
    values = np.array([_value(t.metrics, run.metric) for t in ok])
    fidelities = np.array([t.fidelity for t in ok])
    if single:
      levels = sorted(set(fidelities))
      for i, level in enumerate(levels):
        shade = 0.75 - 0.55 * i / max(len(levels) - 1, 1)  # darker = more epochs
        ax.scatter(params[fidelities == level], values[fidelities == level], s=22,
                   color=str(shade), label=f'ok trial, {level} epochs')
    else:
      ax.scatter(params, values, s=14, color=color, alpha=0.35)
    front = _pareto_front(params, values)
    ax.plot(params[front], values[front], drawstyle='steps-post', marker='o',
            color='crimson' if single else color, linestyle=style, lw=2,
            label='Pareto front' if single else _plain(run.label))
    winner = _winner(board)
    if single and winner is not None and winner.params > 0:
      ax.scatter([winner.params], [winner[f'val_{run.metric}']], marker='*', s=260,
                 color='gold', edgecolor='black', zorder=5, label='winner')
  ax.set_xscale('log')
  # 20k, 50k, 100k read faster than 2x10^4; unlabelled minor ticks keep the axis uncluttered.
  ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
  ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: _fmt_count(x)))
  ax.xaxis.set_minor_formatter(ticker.NullFormatter())
  ax.set_xlabel('parameters (log scale)')
  ax.set_ylabel(f'validation {" / ".join(dict.fromkeys(run.metric for run in runs))}')
  ax.grid(alpha=0.3, which='both')
  ax.legend(loc='lower right', fontsize=8)
  return fig


def _class_names(run: Run, count: int) -> list[str]:
  if len(run.class_names) == count:
    return list(run.class_names)
  return [f'class {i}' for i in range(count)]


def _plot_confusion(matrix: np.ndarray, names: Sequence[str], title: str) -> figure.Figure:
  """Counts in the cells, colored by the fraction of each true class."""
  k = len(matrix)
  side = min(3.0 + 0.55 * k, 12.0)
  fig = figure.Figure(figsize=(side + 1.5, side), layout='constrained')
  ax = fig.subplots()
  totals = matrix.sum(axis=1, keepdims=True)
  rates = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
  image = ax.imshow(rates, cmap='Blues', vmin=0, vmax=1)
  fig.colorbar(image, ax=ax, label='fraction of the true class')
  ticks = np.arange(k)
  ax.set_xticks(ticks, [_tick(n) for n in names], rotation=40, ha='right')
  ax.set_yticks(ticks, [_tick(n) for n in names])
  ax.set_xlabel('predicted class')
  ax.set_ylabel('true class')
  ax.set_title(_plain(title), fontsize=10)
  if k <= 15:
    for (i, j), count in np.ndenumerate(matrix):
      ax.text(j, i, f'{count:.0f}', ha='center', va='center', fontsize=9,
              color='white' if rates[i, j] > 0.5 else 'black')
  return fig


def _rates(evaluations: Sequence[dict[str, Any]], name: str) -> pd.DataFrame:
  """Per-class rates: one row per evaluation, one column per class; None becomes NaN."""
  return pd.DataFrame([[np.nan if v is None else v for v in e[name]] for e in evaluations],
                      dtype=float)


def _class_table(matrix: np.ndarray, evaluations: Sequence[dict[str, Any]],
                 names: Sequence[str]) -> pd.DataFrame:
  """Per class: examples (summed over evaluations), sensitivity and specificity as mean ± std."""
  table = pd.DataFrame({'class': names, 'examples': matrix.sum(axis=1).astype(int)})
  for name in ('sensitivity', 'specificity'):
    rates = _rates(evaluations, name)
    table[name] = [_fmt_mean_std(m, s, 3) for m, s in zip(rates.mean(), rates.std())]
  return table


def _plot_reliability(evaluations: Sequence[dict[str, Any]], source: str) -> figure.Figure:
  """Accuracy against confidence per bin, pooled over seeds, with the ECE of each seed."""
  bins = [e['calibration'] for e in evaluations]
  count = np.sum([b['count'] for b in bins], axis=0).astype(float)
  def pooled(key):
    values = np.array([[np.nan if v is None else v for v in b[key]] for b in bins])
    weights = np.array([b['count'] for b in bins], dtype=float)
    with np.errstate(invalid='ignore'):
      return np.nansum(values * weights, axis=0) / count
  accuracy, confidence = pooled('accuracy'), pooled('confidence')
  ece_mean, ece_std = _mean_std([e['ece'] for e in evaluations])
  edges = np.linspace(0, 1, len(count) + 1)
  fig = figure.Figure(figsize=(4.6, 4.2))
  ax = fig.subplots()
  ax.bar(edges[:-1], np.nan_to_num(accuracy), width=np.diff(edges), align='edge',
         edgecolor='black', alpha=0.7, label='accuracy')
  ax.plot([0, 1], [0, 1], 'k--', label='perfect calibration')
  ax.plot(confidence, accuracy, 'o', color='tab:red', markersize=3, label='bin mean confidence')
  ax.set(xlabel='confidence', ylabel='accuracy', xlim=(0, 1), ylim=(0, 1))
  ax.set_title(_plain(f'Reliability, {source}\nECE {_fmt_mean_std(ece_mean, ece_std)}'),
               fontsize=9)
  ax.legend(fontsize=7, loc='upper left')
  fig.tight_layout()
  return fig


def _plot_class_rates(evaluations: Sequence[dict[str, Any]], names: Sequence[str],
                      title: str) -> figure.Figure:
  """Sensitivity and specificity per class; bars are means, whiskers the std over seeds."""
  k = len(names)
  fig = figure.Figure(figsize=(max(6.0, 1.0 + 0.8 * k), 4.2), layout='constrained')
  ax = fig.subplots()
  x = np.arange(k)
  for offset, name, color in ((-0.2, 'sensitivity', 'C0'), (0.2, 'specificity', 'C1')):
    rates = _rates(evaluations, name)
    ax.bar(x + offset, rates.mean(), 0.4, yerr=rates.std().fillna(0), capsize=3, color=color,
           label=name)
  ax.set_xticks(x, [_tick(n) for n in names], rotation=30, ha='right')
  ax.set_ylim(0, 1.18)  # headroom above 1 for the legend, so that it hides no bar
  ax.set_yticks(np.linspace(0, 1, 6))
  ax.set_ylabel('rate')
  ax.set_title(_plain(title), fontsize=10)
  ax.grid(alpha=0.3, axis='y')
  ax.legend(loc='upper center', ncols=2, fontsize=8)
  return fig


# Markdown and HTML.


def _md_cell(value: Any) -> str:
  return str(value).replace('|', r'\|').replace('\n', ' ')


def _md_table(table: pd.DataFrame) -> list[str]:
  lines = ['| ' + ' | '.join(_md_cell(c) for c in table.columns) + ' |',
           '|' + '---|' * len(table.columns)]
  lines += ['| ' + ' | '.join(_md_cell(v) for v in row) + ' |'
            for row in table.itertuples(index=False)]
  return lines


def _md_published(runs: Sequence[Run], boards: Sequence[pd.DataFrame]) -> list[str]:
  lines = ['', '## Published numbers', '']
  for title, table in published(runs, boards):
    lines += [title, '']
    if table is not None:
      lines += _md_table(table) + ['']
  return lines


def _run_markdown(run: Run, board: pd.DataFrame) -> str:
  lines = [f'# MedNAS leaderboard: {run.label}', '']
  lines += [f'- **{name}:** {_md_cell(value)}' for name, value in _header(run, board)]
  lines += ['', _status_line(run, board), '']
  lines += _md_table(_display(board, run)) if len(board) else [
      'No genotype has trained ok yet.']
  return '\n'.join(lines + _md_published([run], [board])) + '\n'


def _e(value: Any) -> str:
  return html.escape(str(value))


def _html_table(table: pd.DataFrame) -> str:
  head = ''.join(f'<th>{_e(c)}</th>' for c in table.columns)
  body = ''.join('<tr>' + ''.join(f'<td>{_e(v)}</td>' for v in row) + '</tr>\n'
                 for row in table.itertuples(index=False))
  return f'<table><thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody></table>'


def _html_fields(fields: Sequence[tuple[str, str]]) -> str:
  rows = ''.join(f'<tr><th>{_e(name)}</th><td>{_e(value)}</td></tr>\n' for name, value in fields)
  return f'<table class="fields">\n{rows}</table>'


def _html_image(fig: figure.Figure, alt: str) -> str:
  return f'<img alt="{_e(alt)}" src="{_png(fig)}">'


def _html_page(title: str, body: Sequence[str]) -> str:
  note = (f'Written {time.strftime("%Y-%m-%d %H:%M:%S")}; a search that is still running adds '
          'trials after this snapshot.')
  return '\n'.join([
      '<!doctype html>', '<html lang="en"><head><meta charset="utf-8">',
      f'<title>{_e(title)}</title><style>{_CSS}</style></head><body>',
      f'<h1>{_e(title)}</h1>', f'<p class="muted">{_e(note)}</p>',
      *body, '</body></html>', ''])


def _html_published(runs: Sequence[Run], boards: Sequence[pd.DataFrame]) -> list[str]:
  parts = ['<h2>Published numbers</h2>']
  for title, table in published(runs, boards):
    parts.append(f'<p>{_e(title)}</p>')
    if table is not None:
      parts.append(_html_table(table))
  return parts


def _html_winner(run: Run, board: pd.DataFrame) -> list[str]:
  """The winner's section, from its test results if it has any; what it shows is the task's."""
  winner = _winner(board)
  evaluations, source = _winner_evaluations(run, winner)
  parts = [f'<h2>Winner (rank {_e(winner["rank"])})</h2>', f'<p>{_e(winner.description)}</p>']
  return parts + _TASKS[run.task].winner(run, evaluations, source)


def _html_classifier(run: Run, evaluations: Sequence[dict[str, Any]], source: str) -> list[str]:
  """A classifier's confusion matrix, per-class rates, calibration and Grad-CAM."""
  if not evaluations or 'confusion_matrix' not in evaluations[0]:
    return [f'<p>{_e(f"No confusion matrix recorded ({source}).")}</p>']
  matrix = np.sum([np.array(e['confusion_matrix'], dtype=float) for e in evaluations], axis=0)
  names = _class_names(run, len(matrix))
  summed = ', summed over seeds' if len(evaluations) > 1 else ''
  parts = [_html_image(_plot_confusion(matrix, names, f'Confusion matrix, {source}{summed}'),
                       'confusion matrix of the winner')]
  if all('sensitivity' in e and 'specificity' in e for e in evaluations):
    rates = _plot_class_rates(evaluations, names,
                              f'Per-class sensitivity and specificity, {source}')
    parts += [_html_image(rates, 'per-class sensitivity and specificity of the winner'),
              _html_table(_class_table(matrix, evaluations, names))]
  if all('calibration' in e for e in evaluations):
    parts += ['<h3>Calibration</h3>',
              _html_image(_plot_reliability(evaluations, source),
                          'reliability diagram of the winner')]
  return parts + _html_explanations(run, 'What the winner looks at (Grad-CAM)',
                                    'Grad-CAM heat maps')


# What each segmentation metric is; nas.seg_metrics computes them per image and averages.
_SEG_DEFINITIONS = {
    'dice': '2|P ∩ T| / (|P| + |T|)',
    'iou': '|P ∩ T| / |P ∪ T|',
    'precision': '|P ∩ T| / |P|',
    'recall': '|P ∩ T| / |T|',
    'hd95': '95th percentile of the boundary-to-boundary distances, in pixels at the image '
            'size; lower is better',
}


def _html_segmenter(run: Run, evaluations: Sequence[dict[str, Any]], source: str) -> list[str]:
  """A segmenter's metrics with their definitions, and its best and worst test masks."""
  if not evaluations:
    return [f'<p>{_e(f"No metrics recorded ({source}).")}</p>']
  table = pd.DataFrame({
      'metric': [_NAMES[n] for n in SEG_TEST_METRICS],
      source: [_fmt_mean_std(*_mean_std([_value(e, n) for e in evaluations]), _DIGITS.get(n, 4))
               for n in SEG_TEST_METRICS],
      'per image, averaged over images (P predicted, T true foreground)': [
          _SEG_DEFINITIONS[n] for n in SEG_TEST_METRICS]})
  return [_html_table(table)] + _html_explanations(
      run, 'Predicted and true masks (test images)', 'predicted and true masks')


def _html_explanations(run: Run, heading: str, alt: str) -> list[str]:
  """The figures the final stage drew of the winner (nas.explain, nas.overlays), embedded."""
  folder = os.path.join(run.workdir, 'explain')
  images = sorted(f for f in os.listdir(folder) if f.endswith('.png')) if os.path.isdir(
      folder) else []
  parts = [f'<h3>{_e(heading)}</h3>'] if images else []
  for name in images:
    with open(os.path.join(folder, name), 'rb') as f:
      data = base64.b64encode(f.read()).decode('ascii')
    parts.append(f'<img alt="{_e(f"{alt}: {name}")}" src="data:image/png;base64,{data}">')
  return parts


@dataclasses.dataclass(frozen=True)
class _Task:
  """What a report shows of one task's searches."""
  test_metrics: tuple[str, ...]  # the leaderboard's test columns; the first is the headline
  validation: tuple[str, ...]  # validation columns shown after the ranking metric
  compared: tuple[str, ...]  # the winner's test metrics in the table of several runs
  winner: Callable[[Run, Sequence[dict[str, Any]], str], list[str]]  # the winner's section


# Task (datasets.Splits.task) -> its report.
_TASKS = {
    'classification': _Task(TEST_METRICS, ('accuracy',), ('accuracy', 'auc'), _html_classifier),
    'segmentation': _Task(SEG_TEST_METRICS, ('dice', 'iou'), ('dice', 'iou'), _html_segmenter),
}


def _run_html(run: Run, board: pd.DataFrame) -> str:
  body = [_html_fields(_header(run, board)), '<h2>Leaderboard</h2>',
          f'<p>{_e(_status_line(run, board))}</p>']
  if board.empty:
    body.append('<p>No genotype has trained ok yet: no leaderboard, plots or winner.</p>')
  else:
    if len(board) > HTML_TOP:
      note = f'Top {HTML_TOP} of {len(board)}; all are in leaderboard.csv.'
      body.append(f'<p class="muted">{_e(note)}</p>')
    body += [_html_table(_display(board.head(HTML_TOP), run)),
             '<h2>Search progress</h2>',
             _html_image(_plot_progress([run]), 'best-so-far validation metric'),
             '<h2>Validation metric against size</h2>',
             _html_image(_plot_pareto([run], [board]), 'Pareto front')]
    body += _html_winner(run, board)
  body += _html_published([run], [board])
  failures = _failures(run)
  if len(failures):
    body += ['<h2>Failed and rejected trials</h2>', _html_table(failures)]
  return _html_page(f'MedNAS search report: {run.label}', body)


# The comparison of several runs.


def _runs_table(runs: Sequence[Run], boards: Sequence[pd.DataFrame]) -> pd.DataFrame:
  """One row per run: what it searched, what it cost and what its winner scored."""
  rows = []
  for run, board in zip(runs, boards):
    winner = _winner(board)
    best = board.iloc[0][f'val_{run.metric}'] if len(board) else float('nan')
    seeds = 0 if winner is None else winner.final_seeds
    rows.append({
        'run': run.label, 'dataset': run.dataset, 'image size': run.image_size,
        'trials': _status_counts(run), 'wall time': _wall_time(run),
        'training time': _fmt_duration(
            sum(t.train_seconds for t in run.trials if t.status in _TRAINED)),
        'best val': f'{run.metric} {_fmt(best)}',
        **{f'winner test {_SHORT_NAMES[name]}': _winner_test(winner, name)
           for name in _TASKS[run.task].compared},
        'seeds': str(seeds),
        'seeds ensembled': _ensemble_test(run, winner),
    })
  # Runs of different tasks share no winner columns: each shows a dash in the other's.
  return pd.DataFrame(rows).fillna(_NA)


def _winner_test(winner: pd.Series | None, name: str) -> str:
  if winner is None or not winner.final_seeds:
    return _NA
  return _fmt_mean_std(winner[f'test_{name}_mean'], winner[f'test_{name}_std'])


def _ensemble_test(run: Run, winner: pd.Series | None) -> str:
  """The ranking metric of the winner's seeds ensembled, e.g. 'acc 0.9263'."""
  ensembled = _ensemble(run, winner)
  if ensembled is None:
    return _NA
  return _metric_text(ensembled.test_metrics, _TASKS[run.task].test_metrics[0], _SHORT_NAMES)


def _merged_csv(runs: Sequence[Run], boards: Sequence[pd.DataFrame]) -> pd.DataFrame:
  """Every run's leaderboard, each row tagged with its run; ranks stay within a run."""
  tagged = [board.assign(run=run.label, workdir=run.workdir) for run, board in zip(runs, boards)]
  merged = pd.concat(tagged, ignore_index=True)
  return merged[['run', 'workdir', *[c for c in merged.columns if c not in ('run', 'workdir')]]]


def _comparison_markdown(runs: Sequence[Run], boards: Sequence[pd.DataFrame]) -> str:
  lines = [f'# MedNAS comparison of {len(runs)} searches', '']
  lines += _md_table(_runs_table(runs, boards))
  lines += ['', 'Each run has its own leaderboard.md and report.html in its workdir.']
  return '\n'.join(lines + _md_published(runs, boards)) + '\n'


def _comparison_html(runs: Sequence[Run], boards: Sequence[pd.DataFrame], out_dir: str) -> str:
  hrefs = [urllib.parse.quote(os.path.relpath(os.path.join(run.workdir, 'report.html'), out_dir))
           for run in runs]
  links = ''.join(f'<li><a href="{_e(href)}">{_e(run.label)}</a></li>'
                  for run, href in zip(runs, hrefs))
  body = ['<h2>Runs</h2>', _html_table(_runs_table(runs, boards)),
          f'<p>Each run\'s own report:</p><ul>{links}</ul>']
  if any(len(board) for board in boards):
    body += ['<h2>Search progress</h2>',
             _html_image(_plot_progress(runs), 'best-so-far validation metric per run'),
             '<h2>Validation metric against size</h2>',
             _html_image(_plot_pareto(runs, boards), 'Pareto front per run')]
  else:
    body.append('<p>No run has a trial that trained ok yet.</p>')
  body += _html_published(runs, boards)
  return _html_page(f'MedNAS comparison of {len(runs)} searches', body)


# Writing.


def _make_dir(path: str) -> None:
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise errors.UserError(f'cannot create {path}: {e.strerror}') from e


def _write(path: str, text: str) -> str:
  """Writes via a temporary file, so that a reader never sees half a report."""
  temporary = f'{path}.{os.getpid()}.tmp'
  try:
    with open(temporary, 'w', encoding='utf-8') as f:
      f.write(text)
    os.replace(temporary, path)
  except OSError as e:
    raise errors.UserError(f'cannot write {path}: {e.strerror}') from e
  return path


def _write_all(directory: str, markdown: str, table: pd.DataFrame, page: str) -> dict[str, str]:
  return {'leaderboard.md': _write(os.path.join(directory, 'leaderboard.md'), markdown),
          'leaderboard.csv': _write(os.path.join(directory, 'leaderboard.csv'),
                                    table.to_csv(index=False)),
          'report.html': _write(os.path.join(directory, 'report.html'), page)}


def _write_run(run: Run, board: pd.DataFrame) -> dict[str, str]:
  return _write_all(run.workdir, _run_markdown(run, board), board, _run_html(run, board))


def write_report(workdirs: Sequence[str], out_dir: str | None = None) -> dict[str, str]:
  """Writes the leaderboards and report of each workdir, and compares them if there are several.

  Args:
    workdirs: search workdirs, each holding a trials.sqlite.
    out_dir: where the comparison goes; default `<parent of workdirs[0]>/comparison`. Given
      explicitly, a comparison is written even for a single workdir.

  Returns:
    The paths written, keyed by file name ('report.html') for a single search without a
    comparison, else '<run label>/<file name>' and 'comparison/<file name>'.

  Raises:
    errors.UserError: a workdir is not a search, or a file cannot be written.
  """
  if not workdirs:
    raise errors.UserError('no workdir given: pass the --workdir of one or more searches')
  runs = _unique_labels([load_run(workdir) for workdir in workdirs])
  boards = [leaderboard(run) for run in runs]
  if len(runs) == 1 and not out_dir:
    return _write_run(runs[0], boards[0])
  written = {}
  for run, board in zip(runs, boards):
    written.update({f'{run.label}/{name}': path
                    for name, path in _write_run(run, board).items()})
  out_dir = out_dir or os.path.join(os.path.dirname(os.path.abspath(workdirs[0])), 'comparison')
  _make_dir(out_dir)
  files = _write_all(out_dir, _comparison_markdown(runs, boards), _merged_csv(runs, boards),
                     _comparison_html(runs, boards, out_dir))
  written.update({f'comparison/{name}': path for name, path in files.items()})
  return written


# Optimizer studies (nas.compare): several optimizers x seeds at one evaluation budget.

BASELINE = 'random'


def anytime(run: Run) -> np.ndarray:
  """The best validation metric found after each candidate asked: entry k after k + 1.

  Candidates count as the search's budget counts them, in the order asked, whatever rung
  they reached; NaN until the first trial that trained ok.
  """
  values = np.full(max((t.ask_index + 1 for t in run.trials), default=0), np.nan)
  for trial in run.trials:
    if trial.status == records.OK:
      values[trial.ask_index] = np.fmax(values[trial.ask_index],
                                        _value(trial.metrics, run.metric))
  return np.fmax.accumulate(values)


def evaluations_to_reach(curve: np.ndarray, target: float) -> float:
  """Candidates a best-so-far `curve` (see anytime) asks until it reaches `target`, or NaN."""
  reached = np.flatnonzero(curve >= target)
  return float(reached[0] + 1) if reached.size else float('nan')


def _final_value(curve: np.ndarray) -> float:
  return float(curve[-1]) if curve.size else float('nan')


def study_summary(runs: Sequence[Run], boards: Sequence[pd.DataFrame],
                  baseline: str = BASELINE) -> pd.DataFrame:
  """One row per optimizer; each number is a mean and sample std over its runs (seeds).

  best_val: the best validation metric a run found (the end of its anytime curve).
  evaluations_to_baseline: per run, the candidates asked until its best so far reached what
  `baseline` found with the same seed in its whole budget. A run that never did counts as
  its candidates + 1, the least it could have needed, so the mean is over every run with a
  baseline of its seed (baseline_runs) and is a lower bound where some missed;
  reached_baseline counts the runs that did. test_*: each run's
  winner on the test split, averaged over its final seeds first. ensembled_*: each run's
  winner with its final seeds ensembled (the final stage's, one value per run), over the
  ensembled_runs that have one.
  best_val_vs_baseline: per seed, a run's best_val minus `baseline`'s with the same seed;
  their mean, and the two-sided p of Wilcoxon's signed-rank test that they centre on zero
  (seeds of equal bests, tied_runs, dropped), over the paired_runs.
  """
  curves = [anytime(run) for run in runs]
  reached = _evaluations_per_run(runs, curves, baseline)
  differences = _differences_from_baseline(runs, curves, baseline)
  rows = []
  for optimizer in dict.fromkeys(run.optimizer for run in runs):
    mine = [i for i, run in enumerate(runs) if run.optimizer == optimizer]
    evaluations = [reached[i] for i in mine]
    winners = [_winner(boards[i]) for i in mine]
    ensembles = [_ensemble(runs[i], winner) for i, winner in zip(mine, winners)]
    row = {'optimizer': optimizer, 'runs': len(mine),
           'candidates': max(len(curves[i]) for i in mine)}
    row['best_val_mean'], row['best_val_std'] = _mean_std([_final_value(curves[i])
                                                           for i in mine])
    row['evaluations_to_baseline_mean'], row['evaluations_to_baseline_std'] = _mean_std(
        evaluations)
    row['baseline_runs'] = int(np.isfinite(evaluations).sum())
    row['reached_baseline'] = int(sum(e <= len(curves[i]) for i, e in zip(mine, evaluations)))
    row.update(_paired_test([differences[i] for i in mine]))
    for name in TEST_METRICS:
      row[f'test_{name}_mean'], row[f'test_{name}_std'] = _mean_std(
          [float('nan') if w is None else w[f'test_{name}_mean'] for w in winners])
      row[f'ensembled_{name}_mean'], row[f'ensembled_{name}_std'] = _mean_std(
          [float('nan') if e is None else _value(e.test_metrics, name) for e in ensembles])
    row['ensembled_runs'] = sum(e is not None for e in ensembles)
    row['train_seconds_mean'] = float(np.mean([
        sum(t.train_seconds for t in runs[i].trials if t.status in _TRAINED) for i in mine]))
    rows.append(row)
  return pd.DataFrame(rows)


def _evaluations_per_run(runs: Sequence[Run], curves: Sequence[np.ndarray],
                         baseline: str) -> list[float]:
  """Per run (its anytime curve beside it), the candidates it asked until its best so far
  reached what `baseline` found with the same seed in its whole budget."""
  targets = _baseline_bests(runs, curves, baseline)
  return [_evaluations_to_baseline(curve, targets.get(run.setting('seed', None)))
          for run, curve in zip(runs, curves)]


def _baseline_bests(runs: Sequence[Run], curves: Sequence[np.ndarray],
                    baseline: str) -> dict[Any, float]:
  """Seed -> the best validation value `baseline`'s run of that seed found."""
  return {run.setting('seed', None): _final_value(curve)
          for run, curve in zip(runs, curves) if run.optimizer == baseline}


def _differences_from_baseline(runs: Sequence[Run], curves: Sequence[np.ndarray],
                              baseline: str) -> list[float]:
  """Per run, its best validation value minus `baseline`'s with the same seed, or NaN."""
  bests = _baseline_bests(runs, curves, baseline)
  # Rounded so that equal differences of unequal values (0.9754 - 0.9753, 0.9710 - 0.9709)
  # rank as the ties they are.
  return [round(_final_value(curve) - bests.get(run.setting('seed', None), float('nan')), 9)
          for run, curve in zip(runs, curves)]


def _paired_test(differences: Sequence[float]) -> dict[str, float | int]:
  """Mean of the finite `differences` and the p of Wilcoxon's signed-rank test on them.

  The test a study's few seeds allow: it assumes no normal distribution, and pairing by seed
  removes what a seed does to every optimizer alike (the shared first population, the
  training seeds). p is NaN where every difference is zero or missing (the baseline itself).
  """
  paired = np.asarray([d for d in differences if np.isfinite(d)])
  # The test drops the zeros; given them, scipy would count them in its limit of 13 seeds
  # for an exact p where two differences are equal (50 otherwise).
  unequal = paired[paired != 0]
  p = float(stats.wilcoxon(unequal).pvalue) if unequal.size else float('nan')
  return {'best_val_vs_baseline_mean': float(paired.mean()) if paired.size else float('nan'),
          'best_val_vs_baseline_p': p, 'paired_runs': int(paired.size),
          'tied_runs': int(np.sum(paired == 0))}


def _evaluations_to_baseline(curve: np.ndarray, target: float | None) -> float:
  """Candidates asked until `curve` reached `target`; a miss counts as len(curve) + 1.

  NaN only where there is no target (no baseline run of the seed, or it trained nothing):
  averaging over the runs that reached it alone would flatter an optimizer that often misses.
  """
  if target is None or not np.isfinite(target):
    return float('nan')
  reached = evaluations_to_reach(curve, target)
  return reached if np.isfinite(reached) else float(len(curve) + 1)


def baseline_best_in_first_generation(runs: Sequence[Run],
                                      baseline: str = BASELINE) -> tuple[int, int]:
  """Of the `baseline` runs, how many found their best in a shared first population.

  With `search.shared_start` every optimizer of one seed asks the same first population, so
  where the baseline's best is in it, each optimizer reaches that best at the same candidate
  as the baseline: such a seed cannot show an optimizer finding it sooner.
  """
  mine = [run for run in runs if run.optimizer == baseline]
  first = 0
  for run in mine:
    curve = anytime(run)
    population = run.setting('search.population', 0)
    if (run.setting('search.shared_start') and
        evaluations_to_reach(curve, _final_value(curve)) <= population):
      first += 1
  return first, len(mine)


def study_curves(runs: Sequence[Run]) -> pd.DataFrame:
  """Per optimizer and candidate asked: mean and sample std over its runs of the best so far.

  A run that asked fewer candidates keeps its last value: a best so far does not drop.
  """
  rows = []
  for optimizer in dict.fromkeys(run.optimizer for run in runs):
    curves = [anytime(run) for run in runs if run.optimizer == optimizer]
    size = max(len(c) for c in curves)
    padded = np.array([np.pad(c, (0, size - len(c)), mode='edge') if c.size
                       else np.full(size, np.nan) for c in curves])
    for k in range(size):
      mean, std = _mean_std(padded[:, k])
      rows.append({'optimizer': optimizer, 'candidates': k + 1, 'best_val_mean': mean,
                   'best_val_std': std, 'runs': int(np.isfinite(padded[:, k]).sum())})
  return pd.DataFrame(rows, columns=['optimizer', 'candidates', 'best_val_mean',
                                     'best_val_std', 'runs'])


def _fmt_reach(row: pd.Series) -> str:
  if not row.baseline_runs:  # also where the study has no baseline runs at all
    return _NA
  text = _fmt_mean_std(row.evaluations_to_baseline_mean, row.evaluations_to_baseline_std, 1)
  if row.reached_baseline < row.baseline_runs:
    text = '≥ ' + text  # the misses count as their candidates + 1
  return f'{text} (reached in {row.reached_baseline}/{row.baseline_runs} runs)'


def _study_display(summary: pd.DataFrame, metric: str, baseline: str) -> pd.DataFrame:
  """The per-optimizer summary as a person reads it."""
  return pd.DataFrame({
      'optimizer': summary.optimizer,
      'runs': summary.runs.astype(str),
      'candidates': summary.candidates.astype(str),
      f'best val {_SHORT_NAMES.get(metric, metric)}': [
          _fmt_mean_std(m, s) for m, s in zip(summary.best_val_mean, summary.best_val_std)],
      f'evaluations to {baseline}\'s best': [_fmt_reach(row) for _, row in summary.iterrows()],
      f'best val − {baseline}\'s, paired by seed': [
          _fmt_paired(row, baseline) for _, row in summary.iterrows()],
      **{f'winner test {_SHORT_NAMES[name]}': [
          _fmt_mean_std(m, s) for m, s in zip(summary[f'test_{name}_mean'],
                                              summary[f'test_{name}_std'])]
         for name in ('accuracy', 'auc')},
      **({'winner seeds ensembled acc': [_fmt_ensembled(row)
                                         for _, row in summary.iterrows()]}
         if summary.ensembled_runs.any() else {}),
      'training per run': summary.train_seconds_mean.map(_fmt_duration),
  })


def _fmt_paired(row: pd.Series, baseline: str) -> str:
  if row.optimizer == baseline or not row.paired_runs:
    return _NA
  p = _NA if np.isnan(row.best_val_vs_baseline_p) else f'{row.best_val_vs_baseline_p:.2g}'
  tied = f', {row.tied_runs} tied' if row.tied_runs else ''
  seeds = 'seed' if row.paired_runs == 1 else 'seeds'
  return (f'{row.best_val_vs_baseline_mean:+.4f} (Wilcoxon p {p}, {row.paired_runs} {seeds}'
          f'{tied})')


def _fmt_reached(evaluations: float, candidates: int) -> str:
  """A run's evaluations to the baseline's best: where it got there, or that it never did."""
  if not np.isfinite(evaluations):
    return _NA
  return f'candidate {evaluations:g}' if evaluations <= candidates else 'never'


def _fmt_ensembled(row: pd.Series) -> str:
  """Mean ± std of the runs' ensembled winners, saying how many runs have one if not all."""
  if not row.ensembled_runs:
    return _NA
  text = _fmt_mean_std(row.ensembled_accuracy_mean, row.ensembled_accuracy_std)
  if row.ensembled_runs < row.runs:
    text += f' ({row.ensembled_runs}/{row.runs} runs)'
  return text


def _plot_anytime(curves: pd.DataFrame, metric: str, baseline: str,
                  baseline_best: float) -> figure.Figure:
  """Each optimizer's mean best so far against candidates asked; the band is ± 1 std."""
  fig = figure.Figure(figsize=(8, 4.8), layout='constrained')
  ax = fig.subplots()
  colors = {name: f'C{i % 10}' for i, name in enumerate(sorted(set(curves.optimizer)))}
  for optimizer, group in curves.groupby('optimizer', sort=False):
    mean, std = group.best_val_mean.to_numpy(), group.best_val_std.fillna(0).to_numpy()
    ax.plot(group.candidates, mean, drawstyle='steps-post', color=colors[optimizer], lw=2,
            label=_plain(f'{optimizer} (mean of {group.runs.max()} runs)'))
    ax.fill_between(group.candidates, mean - std, mean + std, step='post', alpha=0.15,
                    color=colors[optimizer])
  if np.isfinite(baseline_best):
    ax.axhline(baseline_best, color='0.3', linestyle=':',
               label=_plain(f'{baseline}: final best, mean over runs'))
  ax.set_xlabel('candidates asked')
  ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  ax.set_ylabel(f'best validation {metric} so far')
  ax.grid(alpha=0.3)
  ax.legend(loc='lower right', fontsize=8)
  return fig


def write_study(workdirs: Sequence[str], out_dir: str, title: str = '',
                baseline: str = BASELINE) -> dict[str, str]:
  """Writes the optimizer comparison of a study's runs into `out_dir`.

  Files: leaderboard.md and report.html (per-optimizer summary, anytime curves, every run,
  published numbers), leaderboard.csv (study_summary), anytime.csv (study_curves) and
  anytime.png. Returns their paths by file name. Each run keeps its own report.
  """
  runs = _unique_labels([load_run(workdir) for workdir in workdirs])
  pairs = collections.Counter((run.optimizer, run.setting('seed', None)) for run in runs)
  twice = [f'{optimizer} seed {seed}' for (optimizer, seed), n in pairs.items() if n > 1]
  if twice:  # seeds pair runs with the baseline: two of one seed would make one pairing silent
    raise errors.UserError(f'{", ".join(twice)} given more than once; pass each optimizer\'s '
                           'run of a seed once')
  title = title or f'{len(runs)} runs of {", ".join(dict.fromkeys(r.experiment for r in runs))}'
  _make_dir(out_dir)
  boards = [leaderboard(run) for run in runs]
  summary = study_summary(runs, boards, baseline)
  curves = study_curves(runs)
  metric = ' / '.join(dict.fromkeys(run.metric for run in runs))
  has_baseline = baseline in summary.optimizer.values
  baseline_best = (float(summary.loc[summary.optimizer == baseline, 'best_val_mean'].iloc[0])
                   if has_baseline else float('nan'))
  budgets = sorted({str(run.setting('search.budget', '?')) for run in runs})
  in_first, baseline_runs = baseline_best_in_first_generation(runs, baseline)
  first_generation_note = (
      f'; in {in_first} of {baseline_runs} seeds {baseline}\'s best was in the first '
      'population, which every optimizer of the seed asks alike, so there all reach it at the '
      'same candidate (read the anytime curves)') if in_first else ''
  target_note = ('; the project\'s target for PSO and DE (docs/results.md): at most half the '
                 f'budget, {int(budgets[0]) / 2:g}'
                 if len(budgets) == 1 and budgets[0].isdigit() else '')
  fields = [
      ('Study', title),
      ('Dataset', ', '.join(dict.fromkeys(run.dataset for run in runs))),
      ('Image size', ', '.join(dict.fromkeys(run.image_size for run in runs))),
      ('Search metric', ' / '.join(dict.fromkeys(run.fitness for run in runs))),
      ('Budget', f'{" / ".join(budgets)} candidates per run'
       + ('' if len(budgets) == 1 else ' (unequal: the runs do not compare fairly)')),
      (f'Evaluations to {baseline}\'s best',
       (f'per run, the candidates asked until its best so far reached what {baseline} found '
        'with the same seed in its whole budget; mean ± std over the runs, a run that never '
        'reached it counted as its candidates + 1 (so "≥": the least it could have needed)'
        + target_note + first_generation_note)
       if has_baseline else f'not computed: the study has no {baseline} runs'),
      (f'Paired with {baseline}',
       (f'per seed, a run\'s best validation value minus {baseline}\'s with the same seed: '
        'their mean, and the two-sided p of Wilcoxon\'s signed-rank test that they centre on '
        'zero (seeds of equal bests, "tied", dropped); with n seeds of unequal bests no p '
        'falls below 2 / 2^n (0.25 at 3 seeds, 0.002 at 10; exact p up to 13 such seeds), '
        'so few seeds cannot show a difference at any size')
       if has_baseline else f'not computed: the study has no {baseline} runs'),
      ('Winner test', 'each run\'s winner, retrained and tested once per final seed; '
                      'mean ± std over runs' + (
                          '; "seeds ensembled": its final seeds\' probabilities averaged, '
                          'one test per run' if summary.ensembled_runs.any() else '')),
  ]
  table = _study_display(summary, metric, baseline)
  runs_table = _runs_table(runs, boards)
  run_curves = [anytime(run) for run in runs]
  runs_table.insert(runs_table.columns.get_loc('best val') + 1, f'reaches {baseline}\'s best at',
                    [_fmt_reached(e, len(curve)) for e, curve in
                     zip(_evaluations_per_run(runs, run_curves, baseline), run_curves)])
  figure_uri = _png(_plot_anytime(curves, metric, baseline, baseline_best))

  markdown = [f'# MedNAS optimizer study: {title}', '']
  markdown += [f'- **{name}:** {_md_cell(value)}' for name, value in fields]
  markdown += ['', *_md_table(table), '', 'Anytime curves: anytime.png, anytime.csv.', '',
               '## Runs', '', *_md_table(runs_table)]
  hrefs = [urllib.parse.quote(os.path.relpath(os.path.join(run.workdir, 'report.html'),
                                              out_dir)) for run in runs]
  links = ''.join(f'<li><a href="{_e(href)}">{_e(run.label)}</a></li>'
                  for run, href in zip(runs, hrefs))
  body = [_html_fields(fields), '<h2>Optimizers</h2>', _html_table(table),
          '<h2>Anytime curves</h2>',
          f'<img alt="best validation metric so far per optimizer" src="{figure_uri}">',
          '<h2>Runs</h2>', _html_table(runs_table),
          f'<p>Each run\'s own report:</p><ul>{links}</ul>',
          *_html_published(runs, boards)]
  png = os.path.join(out_dir, 'anytime.png')
  try:
    with open(png, 'wb') as f:
      f.write(base64.b64decode(figure_uri.partition(',')[2]))
  except OSError as e:
    raise errors.UserError(f'cannot write {png}: {e.strerror}') from e
  return {
      'leaderboard.md': _write(os.path.join(out_dir, 'leaderboard.md'), '\n'.join(
          markdown + _md_published(runs, boards)) + '\n'),
      'leaderboard.csv': _write(os.path.join(out_dir, 'leaderboard.csv'),
                                summary.to_csv(index=False)),
      'anytime.csv': _write(os.path.join(out_dir, 'anytime.csv'), curves.to_csv(index=False)),
      'anytime.png': png,
      'report.html': _write(os.path.join(out_dir, 'report.html'), _html_page(
          f'MedNAS optimizer study: {title}', body)),
  }


def main(argv: Sequence[str]) -> None:
  if len(argv) < 2:
    raise app.UsageError('pass one or more search workdirs')
  try:
    written = (write_study(argv[1:], _MERGE_STUDY.value) if _MERGE_STUDY.value
               else write_report(argv[1:], _OUT.value))
  except errors.UserError as e:
    print(f'error: {e}'.replace('\n', ' '), file=sys.stderr)
    sys.exit(2)
  for path in written.values():
    print(path)


if __name__ == '__main__':
  app.run(main)
