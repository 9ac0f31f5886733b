"""Tests for nas.report: leaderboards, the HTML report, comparisons and the CLI."""
from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import time

import ml_collections
import numpy as np
import pandas as pd
import pytest

from models import genotype as genotype_lib
from nas import final
from nas import metrics
from nas import records
from nas import report
from nas import store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = '<script>alert(1)</script>'
# Class names come from folder names: HTML must show them as text, matplotlib must not parse
# '$...$' as math ('$_$' is a math syntax error).
CLASSES = ['glioma', SCRIPT, 'cyst $_$ (left)', 'pituitary']
WINNER_TEST_ACCURACY = [0.90, 0.92, 0.97]
PNG_URI = re.compile(r'data:image/png;base64,([A-Za-z0-9+/=]+)')


def _genotype(width: int) -> genotype_lib.Genotype:
  return genotype_lib.Genotype(stages=(
      genotype_lib.Stage(1, 'conv', 3, width, downsample='max'),
      genotype_lib.Stage(2, 'sep', 5, 2 * width, downsample='avg', attention='se')))


def _metrics(accuracy: float) -> dict:
  return {'accuracy': accuracy, 'balanced_accuracy': accuracy - 0.02,
          'macro_f1': accuracy - 0.03, 'auc': min(accuracy + 0.05, 1.0),
          'sensitivity': [0.9, 0.8, None, 0.95], 'specificity': [0.97, 0.9, 1.0, 0.99],
          'confusion_matrix': [[9, 1, 0, 0], [1, 8, 0, 1], [0, 0, 0, 0], [0, 1, 0, 19]],
          'num_examples': 40}


def _trial(ask_index: int, genotype: genotype_lib.Genotype, status: str, fidelity: int = 3,
           accuracy: float | None = None, train_seconds: float = 0.0,
           error: str = '') -> records.Trial:
  values = {} if accuracy is None else _metrics(accuracy)
  return records.Trial(
      ask_index=ask_index, fidelity=fidelity, genotype_hash=genotype.hash,
      genotype=genotype.to_json(), description=genotype.describe(), status=status,
      loss=1.0 - values.get('accuracy', 0.0), metrics=values,
      params=1000 * genotype.stem_width + 100 * genotype.stages[0].width,
      flops=10**6 * genotype.stages[0].width,
      train_seconds=train_seconds, compile_seconds=1.0, error=error)


def _final(genotype: genotype_lib.Genotype, seed: int, accuracy: float) -> records.FinalResult:
  return records.FinalResult(
      genotype_hash=genotype.hash, genotype=genotype.to_json(),
      description=genotype.describe(), seed=seed, epochs=9, val_metrics=_metrics(accuracy),
      test_metrics=_metrics(accuracy))


G1, G2, G3, G4, G5 = (_genotype(w) for w in (16, 24, 32, 48, 64))


def _config(optimizer: str, seed: int) -> str:
  config = ml_collections.ConfigDict({
      'experiment': 'pso_brain_mri', 'seed': seed,
      'data': {'name': 'brain_tumor_mri', 'image_size': 64},
      'search': {'optimizer': optimizer, 'metric': 'accuracy'}})
  return config.to_json()


def _make_search(workdir, optimizer: str = 'pso', seed: int = 0, ok: bool = True,
                 finals: bool = True, winner_test_accuracy=WINNER_TEST_ACCURACY) -> str:
  """A small search: G1 ok at 3 and 9 epochs, G2 and G3 ok, a duplicate, a failure, a rejection."""
  with store.TrialStore.create(
      str(workdir), experiment='pso_brain_mri', config=_config(optimizer, seed),
      class_names=json.dumps(CLASSES), started=str(time.time() - 3 * 3600)) as s:
    trials = [_trial(3, G4, records.FAILED, train_seconds=5.0,
                     error='RESOURCE_EXHAUSTED: out of memory\nstack...'),
              _trial(4, G5, records.REJECTED, error='too many parameters')]
    if ok:
      trials += [_trial(0, G1, records.OK, 3, 0.80, train_seconds=10.0),
                 _trial(1, G2, records.OK, 3, 0.85, train_seconds=12.0),
                 _trial(2, G3, records.OK, 3, 0.70, train_seconds=11.0),
                 # A duplicate may carry its source's numbers; it trained nothing itself.
                 _trial(5, G1, records.DUPLICATE, 3, 0.80, train_seconds=10.0),
                 _trial(0, G1, records.OK, 9, 0.90, train_seconds=30.0)]
    for trial in trials:
      s.add_trial(trial)
    if ok and finals:
      for seed_, accuracy in enumerate(winner_test_accuracy):
        s.add_final(_final(G1, seed_, accuracy))
      s.add_final(_final(G2, 0, 0.80))
  return str(workdir)


def test_leaderboard_ranks_first_the_genotype_the_final_stage_retrains(tmp_path):
  """Equal validation metrics at one fidelity: both put the smaller network first."""
  trials = [_trial(0, G3, records.OK, 3, 0.85), _trial(1, G1, records.OK, 3, 0.85),
            _trial(2, G2, records.OK, 3, 0.80)]
  assert trials[1].params < trials[0].params
  with store.TrialStore.create(str(tmp_path), experiment='pso_brain_mri',
                               config=_config('pso', 0), class_names=json.dumps(CLASSES),
                               started=str(time.time())) as s:
    for trial in trials:
      s.add_trial(trial)
  board = report.leaderboard(report.load_run(str(tmp_path)))
  assert [t.genotype_hash for t in final.ranking(trials)] == list(board.genotype_hash)
  assert board.genotype_hash[0] == G1.hash


def test_wall_time_leaves_out_the_pauses_between_sessions():
  # Started at 1000; trials land at 1100 and 1200; stopped; resumed at 5000, one more at 5050;
  # a resume that trained nothing at 6000; resumed at 7000, a trial at 7030.
  landed = (1100.0, 1200.0, 5050.0, 7030.0)
  trials = tuple(dataclasses.replace(_trial(i, G1, records.OK, 3, 0.8, train_seconds=100.0),
                                     created=t) for i, t in enumerate(landed))
  run = report.Run('w', {'started': '1000', 'resumed': '[5000, 6000, 7000]'}, {}, tuple(CLASSES),
                   trials, ())
  np.testing.assert_allclose(report._elapsed(run), [100.0, 200.0, 250.0, 280.0])
  uninterrupted = dataclasses.replace(run, meta={'started': '1000'})
  np.testing.assert_allclose(report._elapsed(uninterrupted), np.array(landed) - 1000.0)


def test_the_fitness_says_how_many_trainings_it_averages():
  run = report.Run('w', {}, {'search': {'metric': 'auc', 'training_seeds': 3}}, tuple(CLASSES),
                   (), ())
  assert run.fitness == ('validation auc, mean of 3 trainings per candidate '
                         '(seeds seed to seed + 2)')
  # A store written before the field: one training per candidate.
  assert dataclasses.replace(run, config={'search': {'metric': 'auc'}}).fitness == 'validation auc'


def _read(path: str) -> str:
  with open(path, encoding='utf-8') as f:
    return f.read()


@pytest.fixture(scope='module')
def written(tmp_path_factory):
  return report.write_report([_make_search(tmp_path_factory.mktemp('runs') / 'pso0')])


def test_writes_three_files_into_the_workdir(written):
  assert sorted(written) == ['leaderboard.csv', 'leaderboard.md', 'report.html']
  for name, path in written.items():
    assert os.path.basename(path) == name and os.path.getsize(path) > 0


def test_leaderboard_ranks_ok_genotypes_by_validation_metric(written):
  board = pd.read_csv(written['leaderboard.csv'])
  assert list(board.genotype_hash) == [G1.hash, G2.hash, G3.hash]
  assert list(board['rank']) == [1, 2, 3]
  assert list(board.val_accuracy) == [0.90, 0.85, 0.70]
  winner = board.iloc[0]
  assert winner.fidelity == 9
  assert winner.trials == 3  # two fidelities and the duplicate
  assert winner.train_seconds == 40.0  # the duplicate trained nothing
  assert winner.description == G1.describe()


def test_leaderboard_test_columns_are_mean_and_std_over_final_seeds(written):
  board = pd.read_csv(written['leaderboard.csv'])
  winner, second, third = board.iloc[0], board.iloc[1], board.iloc[2]
  assert winner.final_seeds == 3
  assert winner.test_accuracy_mean == pytest.approx(statistics.mean(WINNER_TEST_ACCURACY))
  assert winner.test_accuracy_std == pytest.approx(statistics.stdev(WINNER_TEST_ACCURACY))
  assert second.final_seeds == 1 and second.test_accuracy_mean == pytest.approx(0.80)
  assert pd.isna(second.test_accuracy_std) and pd.isna(third.test_accuracy_mean)


def test_markdown_header_and_summary(written):
  text = _read(written['leaderboard.md'])
  for expected in ('brain_tumor_mri', '64px', '**Optimizer:** pso',
                   '7 trials: 4 ok, 1 failed, 1 rejected, 1 duplicate',
                   '3 distinct genotypes trained ok', '**Wall time:** 3.0 h',
                   'accuracy 0.9300 ± 0.0361',
                   'over 3 seeds'):
    assert expected in text
  # Descriptions are full of '|': escaped, they stay inside their table cell.
  lines = text.splitlines()
  head = next(line for line in lines if line.startswith('| # |'))
  row = next(line for line in lines if line.startswith('| 1 |'))
  unescaped_bar = re.compile(r'(?<!\\)\|')
  assert len(unescaped_bar.findall(row)) == len(unescaped_bar.findall(head))


def test_html_is_self_contained_with_plots(written):
  page = _read(written['report.html'])
  images = PNG_URI.findall(page)
  assert len(images) >= 4  # progress, Pareto front, confusion matrix, per-class rates
  for image in images:
    assert base64.b64decode(image).startswith(b'\x89PNG')
  assert not re.search(r'(src|href)="(https?:|//)', page)


def test_html_escapes_class_names(written):
  page = _read(written['report.html'])
  assert '&lt;script&gt;alert(1)&lt;/script&gt;' in page
  assert SCRIPT not in page and '<script' not in page
  assert 'cyst $_$ (left)' in page


def test_html_shows_published_numbers_beside_measured(written):
  page = _read(written['report.html'])
  for expected in ('99.19%', '92.66%', 'PSO-CNN (Amoury et al. 2025)',
                   'official Testing split (1311 images)', '224x224',
                   '93.00 ± 3.61%', 'official test split', 'mean ± std over 3 seeds'):
    assert expected in page
  assert '99.19%' in _read(written['leaderboard.md'])


def test_the_winners_ensemble_stands_beside_its_seeds(tmp_path):
  workdir = _make_search(tmp_path / 'pso0')
  with store.TrialStore(workdir) as s:
    s.set_ensemble(records.EnsembleResult(G2.hash, (0, 1), _metrics(0.50)))
    s.set_ensemble(records.EnsembleResult(G1.hash, (0, 1, 2), _metrics(0.96)))
  run = report.load_run(workdir)
  board = report.leaderboard(run)
  (_, table), = report.published([run], [board])
  measured = table[table.system.str.startswith('MedNAS')]
  assert list(measured['test accuracy']) == ['93.00 ± 3.61%', '96.00%']
  assert measured.system.iloc[1] == 'MedNAS winner, its 3 seeds ensembled: pso_brain_mri pso seed 0'
  text = _read(report.write_report([workdir])['leaderboard.md'])
  assert "**Final test of the winner's 3 seeds ensembled:** accuracy 0.9600," in text
  assert list(report._runs_table([run], [board])['seeds ensembled']) == ['acc 0.9600']
  assert '0.5000' not in text  # the runner-up's ensemble is stored, not reported


def test_merging_two_workdirs_writes_a_comparison(tmp_path):
  first = _make_search(tmp_path / 'pso0')
  second = _make_search(tmp_path / 'de1', optimizer='de', seed=1, finals=False)
  written = report.write_report([first, second])
  comparison = tmp_path / 'comparison'
  assert written['comparison/report.html'] == str(comparison / 'report.html')
  assert written['pso_brain_mri de seed 1/report.html'] == os.path.join(second, 'report.html')
  merged = pd.read_csv(comparison / 'leaderboard.csv')
  assert sorted(set(merged.run)) == ['pso_brain_mri de seed 1', 'pso_brain_mri pso seed 0']
  assert len(merged) == 6
  page = _read(comparison / 'report.html')
  assert len(PNG_URI.findall(page)) >= 2
  assert 'pso_brain_mri de seed 1' in page and '../pso0/report.html' in page
  assert os.path.exists(os.path.join(second, 'report.html'))


def test_same_labels_are_told_apart(tmp_path):
  runs = [report.load_run(_make_search(tmp_path / name, ok=False)) for name in ('a', 'b')]
  assert [run.label for run in report._unique_labels(runs)] == [
      'pso_brain_mri pso seed 0 (a)', 'pso_brain_mri pso seed 0 (b)']


def test_store_without_ok_trials_renders(tmp_path):
  written = report.write_report([_make_search(tmp_path / 'w', ok=False)])
  page = _read(written['report.html'])
  assert 'No genotype has trained ok yet' in page
  assert '2 trials: 0 ok, 1 failed, 1 rejected' in page
  assert 'RESOURCE_EXHAUSTED: out of memory' in page
  board = pd.read_csv(written['leaderboard.csv'])
  assert board.empty and 'val_accuracy' in board.columns


def test_store_without_finals_uses_validation_for_the_winner(tmp_path):
  written = report.write_report([_make_search(tmp_path / 'w', finals=False)])
  page = _read(written['report.html'])
  assert 'not yet' in page and 'no final test yet' in page
  assert len(PNG_URI.findall(page)) >= 4


def test_reads_while_a_search_is_writing(tmp_path):
  workdir = _make_search(tmp_path / 'w', finals=False)
  writer = sqlite3.connect(os.path.join(workdir, store.FILENAME), isolation_level=None)
  writer.execute('BEGIN IMMEDIATE')
  writer.execute("DELETE FROM trials WHERE status = 'ok'")  # not committed: invisible
  try:
    board = report.leaderboard(report.load_run(workdir))
  finally:
    writer.execute('ROLLBACK')
    writer.close()
  assert len(board) == 3


def test_a_winner_tested_with_one_seed_is_not_a_mean(tmp_path):
  written = report.write_report([_make_search(tmp_path / 'pso0', winner_test_accuracy=(0.9,))])
  page = _read(written['report.html'])
  assert 'one seed' in page and 'mean ± std over' not in page


def test_anchors_hold_every_published_table():
  anchors = report.anchors()
  assert set(anchors['datasets']) == {
      'brain_tumor_mri', 'medmnist/pneumoniamnist', 'medmnist/breastmnist',
      'medmnist/dermamnist', 'medmnist/bloodmnist', 'medmnist/organamnist', 'kvasir_seg'}
  for entry in anchors['datasets'].values():
    keys = {key for key, _ in entry['metrics']}
    assert entry['split'] and entry['image_size'] and entry['unit'] in ('percent', 'fraction')
    for row in entry['rows']:
      assert row['results'] and set(row['results']) <= keys
  pneumonia = anchors['datasets']['medmnist/pneumoniamnist']['rows']
  assert pneumonia[-1]['results'] == {'auc': '.991', 'accuracy': '.946'}
  assert anchors['datasets']['kvasir_seg']['rows'][0]['results'] == {'dice': '0.8206'}
  assert len(anchors['nas_for_medical']['rows']) == 3
  assert len(anchors['cpu_training_cost']['rows']) == 5


def test_report_columns_are_the_fitness_metrics():
  assert report.TEST_METRICS == metrics.FITNESS_METRICS


def test_pareto_front():
  params = pd.Series([100, 200, 300, 400, 150]).to_numpy(dtype=float)
  values = pd.Series([0.5, 0.7, 0.6, 0.9, 0.5]).to_numpy()
  assert list(report._pareto_front(params, values)) == [0, 1, 3]


def _cli(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-m', 'nas.report', *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize('kind', ['missing', 'not_a_store'])
def test_cli_on_a_non_workdir_exits_2_with_one_line(tmp_path, kind):
  path = tmp_path / 'nope'
  if kind == 'not_a_store':
    path.mkdir()
    (path / store.FILENAME).write_text('not sqlite')
  result = _cli(str(path))
  assert result.returncode == 2
  assert result.stderr.startswith('error: ') and str(path) in result.stderr
  assert result.stderr.count('\n') == 1 and 'Traceback' not in result.stderr


def test_cli_writes_reports(tmp_path):
  first = _make_search(tmp_path / 'a', ok=False)
  second = _make_search(tmp_path / 'b', optimizer='de', ok=False)
  result = _cli(first, second, f'--out={tmp_path / "cmp"}')
  assert result.returncode == 0, result.stderr
  assert str(tmp_path / 'cmp' / 'report.html') in result.stdout.splitlines()


def test_header_shows_the_deduplicated_test_accuracy(tmp_path):
  workdir = _make_search(tmp_path / 'run', finals=False)
  with store.TrialStore(workdir) as s:
    for seed, accuracy in enumerate((0.90, 0.80)):
      final = _final(G1, seed, 0.95)
      final.test_metrics[records.DEDUPLICATED] = dict(_metrics(accuracy), num_examples=619)
      s.add_final(final)
  report.write_report([workdir])
  text = (tmp_path / 'run' / 'leaderboard.md').read_text()
  assert 'without leaked images' in text
  assert 'accuracy 0.8500 ± 0.0707 on the 619 test images' in text


def test_report_embeds_reliability_diagram_and_grad_cam(tmp_path):
  workdir = _make_search(tmp_path / 'run', finals=False)
  labels = np.array([0, 1, 1, 3, 3, 0])
  probs = np.eye(4)[[0, 1, 0, 3, 3, 0]] * 0.7 + 0.075
  with store.TrialStore(workdir) as s:
    for seed in (0, 1):
      final = _final(G1, seed, 0.9)
      final.test_metrics.update(metrics.calibration(labels, probs))
      s.add_final(final)
  (tmp_path / 'run' / 'explain').mkdir()
  (tmp_path / 'run' / 'explain' / 'grad_cam.png').write_bytes(b'\x89PNG\r\n\x1a\nfake')
  report.write_report([workdir])
  html_text = (tmp_path / 'run' / 'report.html').read_text()
  assert 'alt="reliability diagram of the winner" src="data:image/png;base64,' in html_text
  assert 'alt="Grad-CAM heat maps: grad_cam.png" src="data:image/png;base64,iVBORw0KGgpmYWtl"' \
      in html_text
