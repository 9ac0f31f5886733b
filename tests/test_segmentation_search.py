"""Segmentation searches end to end: launch.py, final overlays, the report and experiments."""
import json
import os
import pathlib
import sqlite3
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import datasets
import experiments
import models
from models import zoo
from models.genotype import SegGenotype
from nas import errors
from nas import executors
from nas import optimizers
from nas import overlays
from nas import records
from nas import report
from nas import search as search_lib
from nas import seg_metrics
from nas import space as space_lib
from nas.store import TrialStore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.environ.get('MEDNAS_DATA_DIR', os.path.join(ROOT, 'data'))
OVERLAY = 'alt="predicted and true masks: overlays.png" src="data:image/png;base64,'


def _launch(*args, env=None):
  result = subprocess.run([sys.executable, 'launch.py', *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


@pytest.fixture(scope='module')
def seg_search(tmp_path_factory):
  """pso_synthetic_seg at smoke: 4 candidates of 2 epochs at 32px, one final seed."""
  workdir = tmp_path_factory.mktemp('seg') / 'run'
  cache = tmp_path_factory.mktemp('seg_cache')
  _launch('--experiment=pso_synthetic_seg', '--preset=smoke', f'--workdir={workdir}',
          env=dict(os.environ, MEDNAS_CACHE_DIR=str(cache)))
  return workdir


def test_search_writes_store_leaderboard_and_report_with_overlays(seg_search):
  for name in ('trials.sqlite', 'leaderboard.md', 'leaderboard.csv', 'report.html',
               'explain/overlays.png', 'best/genotype.json'):
    assert (seg_search / name).exists(), name
  assert not (seg_search / 'explain' / 'grad_cam.png').exists()  # Grad-CAM is for classifiers
  board = pd.read_csv(seg_search / 'leaderboard.csv')
  assert {'val_dice', 'val_iou', 'val_hd95', 'test_dice_mean', 'test_iou_mean',
          'test_hd95_mean', 'params'} <= set(board.columns)
  assert 'val_accuracy' not in board.columns
  assert board.test_dice_mean.notna().sum() == 1  # top 1 x 1 seed, tested once
  markdown = (seg_search / 'leaderboard.md').read_text()
  assert '| test Dice | test IoU |' in markdown and 'HD95' in markdown
  page = (seg_search / 'report.html').read_text()
  assert OVERLAY in page
  assert 'confusion matrix' not in page and 'Grad-CAM' not in page
  with sqlite3.connect(seg_search / 'trials.sqlite') as db:
    genotypes = [json.loads(g) for (g,) in db.execute('SELECT genotype FROM trials')]
  assert genotypes and all('encoder' in g for g in genotypes)


def test_search_beats_a_trivial_predictor_and_its_winner_predicts_masks(seg_search):
  config = experiments.get_config('pso_synthetic_seg', 'smoke')
  splits = datasets.Spec.from_config(config.data, None, config.seed).load()
  # Every synthetic image has foreground, so all-background scores Dice 0 on each; predicting
  # foreground everywhere scores the mean of 2f / (1 + f), f the foreground fraction.
  trivial = max(seg_metrics.segmentation_metrics(splits.val.masks, np.full(shape, p))['dice']
                for shape in [splits.val.masks.shape] for p in (0.0, 1.0))
  best = pd.read_csv(seg_search / 'leaderboard.csv').val_dice.max()
  assert best > trivial + 0.3, (best, trivial)
  model = models.load(str(seg_search / 'best'))
  assert isinstance(model.genotype, SegGenotype)
  probs = model.predict(splits.test.images[:5])
  assert probs.shape == (5, 32, 32, 1) and 0.0 <= probs.min() <= probs.max() <= 1.0


def test_saved_segmenter_scores_as_the_final_stage_did(seg_search):
  result = subprocess.run([sys.executable, '-m', 'nas.evaluate', f'--model={seg_search / "best"}'],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  with sqlite3.connect(seg_search / 'trials.sqlite') as db:
    (stored,), = db.execute('SELECT test_metrics FROM final').fetchall()
  scored, stored = json.loads(result.stdout), json.loads(stored)
  assert scored['num_examples'] == stored['num_examples'] > 0
  assert scored['dice'] == pytest.approx(stored['dice'], abs=1e-5)


@pytest.mark.skipif(not os.path.isdir(os.path.join(DATA_DIR, 'kvasir_seg')),
                    reason=f'Kvasir-SEG is not in {DATA_DIR}/kvasir_seg (see README, Data)')
def test_kvasir_smoke_search_reports_beside_the_published_numbers(tmp_path):
  workdir = tmp_path / 'kvasir'
  _launch('--experiment=pso_kvasir_seg', '--preset=smoke', f'--workdir={workdir}',
          f'--data_dir={DATA_DIR}')
  board = pd.read_csv(workdir / 'leaderboard.csv')
  assert board.val_dice.notna().all() and board.test_dice_mean.notna().sum() == 1
  page = (workdir / 'report.html').read_text()
  for expected in ('ColonSegNet', '0.8206', '0.794', 'official 880/120 split', OVERLAY):
    assert expected in page, expected


# The pieces, without training.


def test_search_space_follows_the_task(tmp_path):
  config = experiments.get_config('pso_synthetic_seg', 'smoke')
  unused = datasets.Spec('synthetic_seg', '/nonexistent', 32, 1)
  with TrialStore.create(str(tmp_path)) as store:
    search = search_lib.Search(config, unused, 2, store, executors.LocalExecutor(),
                               datasets.SEGMENTATION)
    assert isinstance(search.space, space_lib.SegmentationSpace)
    classifier = experiments.get_config('pso_synthetic', 'smoke')
    with pytest.raises(errors.UserError, match="no field 'upsamples'.*segmentation experiment"):
      search_lib.Search(classifier, unused, 2, store, executors.LocalExecutor(),
                        datasets.SEGMENTATION)
    with pytest.raises(errors.UserError, match='no search space for task'):
      search_lib.Search(config, unused, 2, store, executors.LocalExecutor(), 'detection')


def test_zoo_experiment_trains_the_reference_unet():
  for preset in ('smoke', 'cpu'):
    config = experiments.get_config('zoo_kvasir_seg', preset)
    space = space_lib.SegmentationSpace(config.space, config.data.image_size, 3, num_classes=2)
    optimizer = optimizers.make('grid', space, 0, config.search.budget,
                                config.search.population, config.search.options.to_dict())
    genotype = space.decode(optimizer.ask().value)
    assert not space.violation(genotype)
    expected = zoo.unet(*{'smoke': (0.0625, 1), 'cpu': (0.125, 4)}[preset])
    assert genotype.canonical().encoder == expected.canonical().encoder
    assert genotype.canonical().decoder == expected.canonical().decoder
    assert config.search.budget == config.final.top_k == len(zoo.SEG_ZOO)
    assert config.search.metric == 'dice'
    with pytest.raises(StopIteration):
      optimizer.ask()


def test_kvasir_presets_fit_their_time():
  """The same space and budget for PSO and random search; image sizes as documented."""
  for preset, size in (('smoke', 32), ('quick', 64), ('cpu', 128), ('full', 256)):
    pso = experiments.get_config('pso_kvasir_seg', preset)
    assert (pso.data.name, pso.data.image_size, pso.search.metric) == ('kvasir_seg', size, 'dice')
  assert experiments.get_config('pso_kvasir_seg', 'cpu').space.max_flops > 0


def test_report_metric_lists_match_the_metrics_modules():
  assert report.SEG_TEST_METRICS == seg_metrics.SEG_FITNESS_METRICS + ('hd95',)


def test_overlays_pick_the_best_then_the_worst():
  dice = np.array([0.5, 0.9, 0.1, 0.7, 0.3, 0.8, 0.2])
  assert overlays.pick_examples(dice, per_kind=2) == [1, 5, 6, 2]
  assert overlays.pick_examples(dice[:3], per_kind=2) == [1, 0, 2]


def _seg_search(workdir, seed: int, test_dice: tuple[float, ...]) -> str:
  """A Kvasir-SEG search store: two ok segmenters, the first tested with each seed's Dice."""
  genotypes = [zoo.unet(w, 2) for w in (0.125, 0.25)]

  def scores(dice):
    return {'dice': dice, 'iou': dice - 0.1, 'precision': dice + 0.05, 'recall': dice - 0.05,
            'hd95': 12.345, 'loss': 0.5, 'num_examples': 120}
  config = {'experiment': 'pso_kvasir_seg', 'seed': seed,
            'data': {'name': 'kvasir_seg', 'image_size': 128},
            'search': {'optimizer': 'pso', 'metric': 'dice'}}
  with TrialStore.create(str(workdir), experiment='pso_kvasir_seg', config=json.dumps(config),
                         class_names=json.dumps(['background', '<b>polyp</b>'])) as store:
    for i, (genotype, dice) in enumerate(zip(genotypes, (0.7, 0.6))):
      store.add_trial(records.Trial(
          ask_index=i, fidelity=3, genotype_hash=genotype.hash, genotype=genotype.to_json(),
          description=genotype.describe() + ' <i>', status=records.OK, loss=1 - dice,
          metrics=scores(dice), params=120_000 * (i + 1), flops=10**8, train_seconds=5.0))
    for s, dice in enumerate(test_dice):
      store.add_final(records.FinalResult(
          genotype_hash=genotypes[0].hash, genotype=genotypes[0].to_json(),
          description=genotypes[0].describe(), seed=s, epochs=9, val_metrics=scores(0.7),
          test_metrics=scores(dice)))
  return str(workdir)


def test_report_of_a_segmentation_search(tmp_path):
  first = _seg_search(tmp_path / 'a', 0, (0.80, 0.78))
  second = _seg_search(tmp_path / 'b', 1, (0.70,))
  written = report.write_report([first, second])
  page = pathlib.Path(written['pso_kvasir_seg pso seed 0/report.html']).read_text()
  assert '&lt;i&gt;' in page and '<i>' not in page  # strings are escaped
  for expected in ('test Dice', 'test IoU', 'HD95 px ↓', '12.35', '0.7900 ± 0.0141',
                   'ColonSegNet (Jha et al., IEEE Access 2021)', '0.8206', '0.794',
                   '0.790 ± 0.014', '120k parameters', '2|P ∩ T| / (|P| + |T|)'):
    assert expected in page, expected
  for absent in ('test acc', 'test AUC', 'confusion matrix', 'Reliability'):
    assert absent not in page, absent
  comparison = pathlib.Path(written['comparison/report.html']).read_text()
  assert 'winner test Dice' in comparison and 'winner test IoU' in comparison
  board = pd.read_csv(written['pso_kvasir_seg pso seed 1/leaderboard.csv'])
  assert list(board.val_dice) == [0.7, 0.6]  # ranked by validation Dice
