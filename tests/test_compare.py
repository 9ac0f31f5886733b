"""Optimizer studies: the study summary on hand-made runs, bad input, and a real small study."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import experiments
from nas import compare
from nas import errors
from nas import records
from nas import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Hand-made runs: (ask_index, fidelity, status, accuracy) per trial.
_TRIALS = {
    ('random', 0): [(0, 1, 'ok', 0.5), (1, 1, 'ok', 0.7), (2, 1, 'failed', None),
                    (3, 1, 'ok', 0.6)],
    ('random', 1): [(0, 1, 'ok', 0.6), (1, 1, 'duplicate', 0.6), (2, 1, 'ok', 0.8),
                    (3, 1, 'ok', 0.5)],
    ('pso', 0): [(0, 1, 'ok', 0.4), (1, 1, 'ok', 0.6), (2, 1, 'ok', 0.75), (3, 1, 'ok', 0.8)],
    # Candidate 1 is promoted to a second rung, where it scores best.
    ('pso', 1): [(0, 1, 'ok', 0.9), (1, 1, 'ok', 0.3), (1, 2, 'ok', 0.95),
                 (2, 1, 'rejected', None), (3, 1, 'ok', 0.2)],
    ('de', 0): [(0, 1, 'ok', 0.1), (1, 1, 'ok', 0.2), (2, 1, 'ok', 0.3), (3, 1, 'ok', 0.4)],
    ('de', 1): [(0, 1, 'failed', None), (1, 1, 'ok', 0.5), (2, 1, 'ok', 0.6)],
}
# Test accuracy of the winner of some runs (its best trial at the highest fidelity).
_TESTED = {('pso', 0): ('0-3-1', 0.85), ('pso', 1): ('0-1-2', 0.75)}


def _run(optimizer: str, seed: int) -> report.Run:
  trials = []
  for ask_index, fidelity, status, accuracy in _TRIALS[optimizer, seed]:
    metrics = {} if accuracy is None else {'accuracy': accuracy}
    trials.append(records.Trial(
        ask_index=ask_index, fidelity=fidelity, genotype_hash=f'0-{ask_index}-{fidelity}',
        genotype='{}', description=f'candidate {ask_index}', status=status,
        loss=1 - (accuracy or 0), metrics=metrics, seed=seed, train_seconds=2.0))
  finals = ()
  if (optimizer, seed) in _TESTED:
    genotype_hash, accuracy = _TESTED[optimizer, seed]
    finals = (records.FinalResult(genotype_hash, '{}', 'winner', seed, 5, {},
                                  {'accuracy': accuracy, 'auc': accuracy + 0.1}),)
  config = {'seed': seed, 'search': {'optimizer': optimizer, 'metric': 'accuracy', 'budget': 4},
            'data': {'name': 'synthetic', 'image_size': 8}}
  return report.Run(f'/study/{optimizer}-seed{seed}', {}, config, (), tuple(trials), finals,
                    label=f'{optimizer} {seed}')


def test_anytime_is_the_best_so_far_per_candidate_asked():
  np.testing.assert_array_equal(report.anytime(_run('random', 0)), [0.5, 0.7, 0.7, 0.7])
  np.testing.assert_array_equal(report.anytime(_run('pso', 1)), [0.9, 0.95, 0.95, 0.95])
  np.testing.assert_array_equal(report.anytime(_run('de', 1)), [np.nan, 0.5, 0.6])


@pytest.mark.parametrize('curve, target, expected', [
    ([0.5, 0.7, 0.7], 0.7, 2),
    ([0.5, 0.7, 0.7], 0.6, 2),
    ([0.8, 0.8], 0.7, 1),
    ([np.nan, 0.5, 0.9], 0.9, 3),
    ([0.1, 0.2], 0.7, math.nan),
    ([0.1, 0.2], math.nan, math.nan),
    ([], 0.5, math.nan),
])
def test_evaluations_to_reach(curve, target, expected):
  result = report.evaluations_to_reach(np.array(curve, dtype=float), target)
  assert result == expected or (math.isnan(result) and math.isnan(expected))


def test_study_summary_on_hand_made_runs():
  runs = [_run(o, s) for o in ('pso', 'de', 'random') for s in (0, 1)]
  summary = report.study_summary(runs, [report.leaderboard(r) for r in runs]).set_index(
      'optimizer')
  assert list(summary.index) == ['pso', 'de', 'random']
  # random's best: 0.7 with seed 0, 0.8 with seed 1. pso reaches 0.7 at candidate 3 (seed 0)
  # and 0.8 at candidate 1 (seed 1); random itself at 2 and 3; de never, so its misses count
  # as its candidates + 1: 5 (seed 0 asked 4) and 4 (seed 1 asked 3).
  assert summary.loc['pso', 'evaluations_to_baseline_mean'] == pytest.approx(2.0)
  assert summary.loc['pso', 'evaluations_to_baseline_std'] == pytest.approx(math.sqrt(2))
  assert summary.loc['random', 'evaluations_to_baseline_mean'] == pytest.approx(2.5)
  assert summary.loc['pso', 'reached_baseline'] == 2
  assert summary.loc['de', 'reached_baseline'] == 0
  assert (summary.baseline_runs == 2).all()
  assert summary.loc['de', 'evaluations_to_baseline_mean'] == pytest.approx(4.5)
  assert summary.loc['pso', 'best_val_mean'] == pytest.approx((0.8 + 0.95) / 2)
  assert summary.loc['random', 'best_val_mean'] == pytest.approx(0.75)
  assert summary.loc['de', 'best_val_mean'] == pytest.approx(0.5)  # (0.4 + 0.6) / 2
  assert summary.loc['pso', 'test_accuracy_mean'] == pytest.approx(0.8)
  assert summary.loc['pso', 'test_auc_mean'] == pytest.approx(0.9)
  assert math.isnan(summary.loc['random', 'test_accuracy_mean'])
  assert (summary.candidates == 4).all()  # de seed 1 asked 3: the longest run counts

  curves = report.study_curves(runs)
  de = curves[curves.optimizer == 'de']
  # de seed 1 stopped after 3 candidates and keeps its best, 0.6, at the 4th.
  np.testing.assert_allclose(de.best_val_mean, [0.1, 0.35, 0.45, 0.5])
  assert list(de.runs) == [1, 2, 2, 2]


def test_each_optimizer_is_compared_with_the_baseline_seed_by_seed():
  runs = [_run(o, s) for o in ('pso', 'de', 'random') for s in (0, 1)]
  summary = report.study_summary(runs, [report.leaderboard(r) for r in runs])
  rows = summary.set_index('optimizer')
  # pso: 0.8 - 0.7 and 0.95 - 0.8; de: 0.4 - 0.7 and 0.6 - 0.8. Two seeds of one sign give
  # Wilcoxon's smallest two-sided p at two seeds, 2 / 2^2.
  assert rows.loc['pso', 'best_val_vs_baseline_mean'] == pytest.approx(0.125)
  assert rows.loc['de', 'best_val_vs_baseline_mean'] == pytest.approx(-0.25)
  assert rows.loc['pso', 'best_val_vs_baseline_p'] == pytest.approx(0.5)
  assert (rows.paired_runs == 2).all()
  assert math.isnan(rows.loc['random', 'best_val_vs_baseline_p'])
  shown = report._study_display(summary, 'accuracy', 'random')
  assert list(shown["best val − random's, paired by seed"]) == [
      '+0.1250 (Wilcoxon p 0.5, 2 seeds)', '-0.2500 (Wilcoxon p 0.5, 2 seeds)', '—']
  # Ten seeds: all ten above the baseline, p = 2 / 2^10; the one below of the smallest size
  # adds the sign pattern of rank sum 1 to each tail: 4 / 2^10. A seed without a baseline run
  # (NaN) pairs nothing.
  above = [0.001 * (k + 1) for k in range(10)]
  assert report._paired_test(above + [math.nan])['best_val_vs_baseline_p'] == pytest.approx(
      2 / 2**10)
  assert report._paired_test([-above[0], *above[1:]]) == pytest.approx(
      {'best_val_vs_baseline_mean': (sum(above) - 2 * above[0]) / 10,
       'best_val_vs_baseline_p': 4 / 2**10, 'paired_runs': 10, 'tied_runs': 0})
  # Equal differences of unequal values are equal: Wilcoxon ranks them as tied.
  runs = [_run(o, s) for s in (0, 1) for o in ('random', 'pso')]
  curves = [np.array([v]) for v in (0.9753, 0.9754, 0.9709, 0.9710)]
  differences = report._differences_from_baseline(runs, curves, 'random')
  assert differences[1] == differences[3] == pytest.approx(0.0001)
  # Twelve tied seeds leave two to the test, and its exact p at two: 2 / 2^2.
  assert report._paired_test([0.0] * 12 + above[:2])['best_val_vs_baseline_p'] == (
      pytest.approx(0.5))
  # A tied seed is paired but left out of the test: three seeds above, one tied.
  tied = report._paired_test([0.0, *above[:3]])
  assert (tied['paired_runs'], tied['tied_runs']) == (4, 1)
  assert tied['best_val_vs_baseline_p'] == pytest.approx(2 / 2**3)
  shown = report._study_display(pd.DataFrame([{**rows.loc['pso'], 'optimizer': 'pso', **tied}]),
                                'accuracy', 'random')
  assert shown["best val − random's, paired by seed"][0] == (
      '+0.0015 (Wilcoxon p 0.25, 4 seeds, 1 tied)')


def test_a_miss_counts_in_the_mean_and_is_shown_as_a_lower_bound():
  # pso seed 0 reaches random's 0.7 at candidate 3; in seed 1 it is cut to never reaching 0.8.
  pso1 = _run('pso', 1)
  pso1 = dataclasses.replace(pso1, trials=tuple(
      dataclasses.replace(t, metrics={'accuracy': 0.3}) for t in pso1.trials if t.metrics))
  runs = [_run('random', 0), _run('random', 1), _run('pso', 0), pso1]
  summary = report.study_summary(runs, [report.leaderboard(r) for r in runs])
  pso = summary.set_index('optimizer').loc['pso']
  assert pso.evaluations_to_baseline_mean == pytest.approx((3 + 5) / 2)  # the miss as 4 + 1
  assert pso.reached_baseline == 1
  shown = report._study_display(summary, 'accuracy', 'random')
  assert list(shown["evaluations to random's best"]) == [
      '2.5 ± 0.7 (reached in 2/2 runs)', '≥ 4.0 ± 1.4 (reached in 1/2 runs)']


def test_counts_the_seeds_whose_baseline_best_is_in_the_shared_first_population():
  runs = [_run('random', 0), _run('random', 1), _run('pso', 0)]
  for run in runs:
    run.config['search'].update(population=2, shared_start=True)
  # random's best: candidate 2 with seed 0 (in the first population of 2), 3 with seed 1.
  assert report.baseline_best_in_first_generation(runs) == (1, 2)
  for run in runs:
    run.config['search']['shared_start'] = False  # first populations differ: nothing shared
  assert report.baseline_best_in_first_generation(runs) == (0, 2)


def test_study_summary_averages_the_ensembled_winners_of_the_runs_that_have_one():
  pso0, pso1 = _run('pso', 0), _run('pso', 1)
  # pso seed 0's winner ensembled; a runner-up's ensemble in seed 1 must not count.
  runs = [dataclasses.replace(pso0, ensembles=(
              records.EnsembleResult('0-3-1', (0, 1), {'accuracy': 0.9, 'auc': 0.95}),)),
          dataclasses.replace(pso1, ensembles=(
              records.EnsembleResult('0-0-1', (0, 1), {'accuracy': 0.1, 'auc': 0.2}),))]
  summary = report.study_summary(runs, [report.leaderboard(r) for r in runs])
  assert summary.ensembled_runs[0] == 1
  assert summary.ensembled_accuracy_mean[0] == pytest.approx(0.9)
  assert summary.test_accuracy_mean[0] == pytest.approx(0.8)  # single networks, as before
  shown = report._study_display(summary, 'accuracy', 'random')
  assert shown['winner seeds ensembled acc'][0] == '0.9000 (1/2 runs)'
  plain = report.study_summary([pso0, pso1], [report.leaderboard(r) for r in (pso0, pso1)])
  assert plain.ensembled_runs.eq(0).all()
  assert 'winner seeds ensembled acc' not in report._study_display(plain, 'accuracy', 'random')


def test_study_without_the_baseline_says_so():
  runs = [_run('pso', 0), _run('de', 0)]
  summary = report.study_summary(runs, [report.leaderboard(r) for r in runs])
  assert summary.reached_baseline.eq(0).all() and summary.baseline_runs.eq(0).all()
  assert summary.evaluations_to_baseline_mean.isna().all()


@pytest.mark.parametrize('kwargs, message', [
    (dict(name='compare_optimizers_brain_mr'), 'did you mean compare_optimizers_brain_mri'),
    (dict(optimizers=['pso', 'psoo']), "unknown optimizer 'psoo' in --optimizers"),
    (dict(optimizers=['pso', 'pso']), 'names an optimizer twice'),
    (dict(optimizers=[]), '--optimizers names none'),
    (dict(seeds=0), 'at least one seed'),
    (dict(first_seed=-1), 'seeds start at 0'),
    (dict(overrides=['seed=3']), 'use --optimizers and --seeds'),
    (dict(overrides=['search.optimizer=de']), 'use --optimizers and --seeds'),
    (dict(overrides=['search.budgt=3']), 'did you mean budget'),
])
def test_bad_study_input_is_one_clear_error(kwargs, message):
  kwargs = {'name': 'compare_optimizers_synthetic', 'preset': 'smoke', **kwargs}
  with pytest.raises(errors.UserError, match=message):
    compare.make_study(**kwargs)


def test_every_study_runs_a_known_experiment_with_the_default_optimizers():
  for name, experiment in compare.STUDIES.items():
    study = compare.make_study(name, 'smoke')
    assert study.experiment == experiment in experiments.names()
    names = [r.name for r in study.runs()]
    assert names[:len(compare.OPTIMIZERS)] == [f'{o}-seed0' for o in compare.OPTIMIZERS]
    assert len(study.runs()) == len(compare.OPTIMIZERS) * compare.SEEDS
    budgets = {study.config(r).search.budget for r in study.runs()}
    assert len(budgets) == 1, f'{name}: unequal budgets {budgets}'


def test_first_seed_adds_seeds_that_merge_with_the_earlier_runs():
  earlier = compare.make_study('compare_optimizers_synthetic', 'smoke', ['pso', 'de'], seeds=2)
  added = compare.make_study('compare_optimizers_synthetic', 'smoke', ['pso', 'de'], seeds=1,
                             first_seed=2)
  merged = compare.make_study('compare_optimizers_synthetic', 'smoke', ['pso', 'de'], seeds=3)
  assert [r.name for r in added.runs()] == ['pso-seed2', 'de-seed2']
  # Equal runs and configs, so the merged study skips every run the two others finished.
  assert earlier.runs() + added.runs() == merged.runs()
  for run in added.runs():
    assert added.config(run) == merged.config(run)


# A real study, small: 16px images, a space of four networks, four candidates of one epoch.
_TINY = ('--config.search.budget=4', '--config.search.fidelity.rungs=(1,)',
         '--config.final.seeds=1', '--config.final.epochs=1', '--config.data.image_size=16',
         '--config.data.options.num_train=256', '--config.data.options.num_test=64',
         '--config.space.num_stages=1', '--config.space.num_cells=(0,1)',
         "--config.space.cells=('conv',)", '--config.space.widths=(4,8)',
         '--config.space.stem_widths=(4,)', "--config.space.attention=('none',)")
_STUDY = ('--study=compare_optimizers_synthetic', '--preset=smoke', '--optimizers=pso,random',
          '--seeds=2', *_TINY)


def _launch(*args, env):
  return subprocess.run([sys.executable, 'launch.py', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope='module')
def study(tmp_path_factory):
  env = dict(os.environ, MEDNAS_CACHE_DIR=str(tmp_path_factory.mktemp('cache')))
  workdir = tmp_path_factory.mktemp('study') / 'cmp'
  result = _launch(*_STUDY, f'--workdir={workdir}', env=env)
  assert result.returncode == 0, result.stderr[-5000:]
  return workdir, env


def _curve(run_dir) -> list[float]:
  """The best validation accuracy so far per candidate asked, straight from the store."""
  with sqlite3.connect(run_dir / 'trials.sqlite') as db:
    rows = db.execute('SELECT ask_index, status, metrics FROM trials').fetchall()
  best, curve = -1.0, []
  for ask_index in range(max(r[0] for r in rows) + 1):
    for index, status, metrics in rows:
      if index == ask_index and status == 'ok':
        best = max(best, json.loads(metrics)['accuracy'])
    curve.append(best)
  return curve


def test_study_merges_its_runs_into_one_leaderboard(study):
  workdir, _ = study
  for name in ('leaderboard.md', 'leaderboard.csv', 'anytime.csv', 'anytime.png',
               'report.html'):
    assert (workdir / name).exists(), name
  summary = pd.read_csv(workdir / 'leaderboard.csv').set_index('optimizer')
  assert list(summary.index) == ['pso', 'random']
  assert (summary.runs == 2).all() and (summary.candidates == 4).all()

  curves = {(o, s): _curve(workdir / f'{o}-seed{s}') for o in ('pso', 'random') for s in (0, 1)}
  markdown = (workdir / 'leaderboard.md').read_text()
  rows = {line.split(' | ')[0]: line for line in markdown.splitlines() if ' seed ' in line}
  for optimizer in ('pso', 'random'):
    needed = []
    for seed in (0, 1):
      target = curves['random', seed][-1]
      reached = [k + 1 for k, v in enumerate(curves[optimizer, seed]) if v >= target]
      needed.append(reached[0] if reached else len(curves[optimizer, seed]) + 1)
      # The runs table says where each run got there.
      cell = f'| candidate {reached[0]} |' if reached else '| never |'
      assert cell in rows[f'| pso_synthetic {optimizer} seed {seed}'], markdown
    assert summary.loc[optimizer, 'reached_baseline'] == sum(n <= 4 for n in needed)
    assert summary.loc[optimizer, 'evaluations_to_baseline_mean'] == pytest.approx(
        np.mean(needed))
    assert summary.loc[optimizer, 'best_val_mean'] == pytest.approx(
        np.mean([curves[optimizer, s][-1] for s in (0, 1)]))
    # Every run's winner was retrained and tested once.
    assert np.isfinite(summary.loc[optimizer, 'test_accuracy_mean'])
  assert summary.loc['random', 'reached_baseline'] == 2  # random always reaches its own best

  assert "evaluations to random's best" in markdown
  assert "best val − random's, paired by seed" in markdown
  assert 'pso_synthetic pso seed 1' in markdown  # the per-run table
  html = (workdir / 'report.html').read_text()
  assert 'src="data:image/png;base64,' in html and 'pso-seed0/report.html' in html
  anytime = pd.read_csv(workdir / 'anytime.csv')
  assert len(anytime) == 2 * 4


def test_report_cli_merges_study_runs_as_the_study_does(study, tmp_path):
  workdir, env = study
  runs = sorted(str(p) for p in workdir.glob('*-seed*'))
  merged = subprocess.run([sys.executable, '-m', 'nas.report',
                           f'--merge_study={tmp_path / "merged"}', *runs], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
  assert merged.returncode == 0, merged.stderr[-3000:]
  pd.testing.assert_frame_equal(pd.read_csv(tmp_path / 'merged' / 'leaderboard.csv'),
                                pd.read_csv(workdir / 'leaderboard.csv'))
  assert '# MedNAS optimizer study: 4 runs of pso_synthetic' in (
      tmp_path / 'merged' / 'leaderboard.md').read_text()

  twice = subprocess.run([sys.executable, '-m', 'nas.report',
                          f'--merge_study={tmp_path / "twice"}', *runs, runs[0]], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
  assert twice.returncode == 2 and 'Traceback' not in twice.stderr
  assert 'pso seed 0 given more than once' in twice.stderr
  assert not (tmp_path / 'twice').exists()


def test_study_run_again_skips_finished_runs(study):
  workdir, env = study
  stores = {p: p.read_bytes() for p in workdir.glob('*/trials.sqlite')}
  assert len(stores) == 4
  result = _launch(*_STUDY, f'--workdir={workdir}', env=env)
  assert result.returncode == 0, result.stderr[-5000:]
  assert result.stderr.count('finished before; skipped') == 4
  assert all(p.read_bytes() == data for p, data in stores.items())


def test_study_refuses_a_finished_run_of_another_config(study):
  workdir, env = study
  result = _launch(*_STUDY, '--config.train.epochs=2', f'--workdir={workdir}', env=env)
  assert result.returncode == 2
  errors_seen = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors_seen) == 1 and 'finished with another config' in errors_seen[0]
  assert 'train.epochs: 4 -> 2' in errors_seen[0]


@pytest.mark.parametrize('finished_before', [(), ('random-seed0',)])
def test_a_study_stopped_part_way_has_the_leaderboard_of_its_finished_seeds(
    study, tmp_path, finished_before):
  workdir, _ = study
  for name in finished_before:  # the seed's last run is skipped, its first trains
    shutil.copytree(workdir / name, tmp_path / name)
  stopped = compare.make_study('compare_optimizers_synthetic', 'smoke', ['pso', 'random'],
                               seeds=2, overrides=[o.removeprefix('--config.') for o in _TINY])

  def run_experiment(config, run_dir, overrides):  # the fixture's runs stand in for training
    del overrides
    if config.seed == 1:
      raise KeyboardInterrupt
    shutil.copytree(workdir / os.path.basename(run_dir), run_dir)

  with pytest.raises(KeyboardInterrupt):
    compare.run_study(stopped, str(tmp_path), run_experiment)
  summary = pd.read_csv(tmp_path / 'leaderboard.csv').set_index('optimizer')
  assert list(summary.index) == ['pso', 'random'] and (summary.runs == 1).all()
  assert '1 of 2 seeds so far' in (tmp_path / 'leaderboard.md').read_text()


def test_a_run_finished_at_a_smaller_budget_is_extended_not_skipped(tmp_path):
  run = compare.StudyRun('pso', 0, ())
  config = experiments.get_config('pso_synthetic', 'smoke')
  (tmp_path / compare.FINISHED).write_text(json.dumps(
      {'overrides': [], 'config': json.loads(config.to_json())}))
  assert compare._finished(str(tmp_path), run, config)
  config.search.budget += 4
  assert not compare._finished(str(tmp_path), run, config)
  config.search.budget -= 8
  with pytest.raises(errors.UserError, match='finished with another config'):
    compare._finished(str(tmp_path), run, config)


def test_an_unreadable_finished_marker_resumes_the_run(tmp_path):
  run = compare.StudyRun('pso', 0, ())
  (tmp_path / compare.FINISHED).write_text('{"overrides": [')  # as if cut off
  assert not compare._finished(str(tmp_path), run, experiments.get_config('pso_synthetic',
                                                                          'smoke'))


def test_a_study_and_a_single_search_keep_out_of_each_others_workdir(study, tmp_path):
  workdir, env = study
  single = _launch('--experiment=pso_synthetic', '--preset=smoke', f'--workdir={workdir}',
                   env=env)
  assert single.returncode == 2 and single.stderr.strip().endswith(
      'holds an optimizer study, whose report the search would overwrite; choose a new '
      '--workdir')
  (tmp_path / 'trials.sqlite').write_bytes(b'')
  study_there = _launch(*_STUDY, f'--workdir={tmp_path}', env=env)
  assert study_there.returncode == 2 and 'holds a single search' in study_there.stderr
  assert not list(tmp_path.glob('*-seed*'))


def test_unknown_optimizer_on_the_command_line_is_one_line():
  result = _launch('--study=compare_optimizers_synthetic', '--optimizers=pso,bogus',
                   env=dict(os.environ))
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  errors_seen = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors_seen) == 1 and "unknown optimizer 'bogus'" in errors_seen[0]
