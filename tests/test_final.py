"""The final stage: a genotype's retrained seeds tested together, once; a killed final
training resumed; the epoch that is tested."""
import json
import shutil

import ml_collections
import numpy as np
import pytest

import datasets
import models
from datasets import augment as augment_lib
from datasets import pipeline
from models import genotype as genotype_lib
from nas import final
from nas import metrics
from nas import records
from nas import report
from nas import train as train_lib
from nas.store import TrialStore


@pytest.fixture(scope='module')
def two_seeds(small_search, tmp_path_factory):
  """A copy of the small search's workdir (its winner retrained with 2 seeds), its config, data."""
  workdir = tmp_path_factory.mktemp('two_seeds') / 'run'
  shutil.copytree(small_search.workdir, workdir)
  with TrialStore(str(workdir)) as store:
    config = ml_collections.ConfigDict(json.loads(store.meta()['config']))
  assert config.final.seeds == 2
  return workdir, config, datasets.Spec.from_config(config.data, None, config.seed)


def test_the_seeds_ensemble_scores_the_mean_of_their_probabilities(two_seeds):
  workdir, _, data = two_seeds
  with TrialStore(str(workdir)) as store:
    (ensembled,), finals = store.ensembles(), store.finals()
  members = sorted((f for f in finals if f.genotype_hash == ensembled.genotype_hash),
                   key=lambda f: f.seed)
  assert ensembled.seeds == tuple(f.seed for f in members) == (0, 1)
  test = data.load().test
  probs = [models.load(str(workdir / f.checkpoint)).predict(test.images) for f in members]
  assert np.abs(probs[0] - probs[1]).max() > 0.01  # two different networks
  expected = metrics.classification_metrics(test.labels, (probs[0] + probs[1]) / 2)
  assert ensembled.test_metrics['accuracy'] == pytest.approx(expected['accuracy'])
  assert ensembled.test_metrics['auc'] == pytest.approx(expected['auc'], abs=1e-6)
  for member, p in zip(members, probs):  # each member as the final stage tested it
    assert member.test_metrics['accuracy'] == pytest.approx(
        metrics.classification_metrics(test.labels, p)['accuracy'])


def test_a_rerun_final_stage_keeps_the_ensemble_of_the_same_seeds(two_seeds):
  workdir, config, data = two_seeds
  with TrialStore(str(workdir)) as store:
    before = store.ensembles()
    final.run_final(config, data, store, str(workdir))
    assert store.ensembles() == before


def _final_of_three_epochs(two_seeds, workdir):
  """The small search's workdir copied to `workdir` with its final stage undone, as one
  seed trained for 3 epochs; returns its config."""
  shutil.copytree(two_seeds[0], workdir)
  with TrialStore(str(workdir)) as store:
    store._db.execute('DELETE FROM final')
    store._db.execute('DELETE FROM ensembles')
  shutil.rmtree(workdir / 'final')
  config = two_seeds[1].copy_and_resolve_references()
  config.final.update(seeds=1, epochs=3, checkpoint_every_epochs=1)
  return config


def test_a_final_training_killed_mid_way_resumes_from_its_checkpoint(two_seeds, tmp_path,
                                                                      monkeypatch):
  data = two_seeds[2]
  config = _final_of_three_epochs(two_seeds, tmp_path / 'unbroken')
  with TrialStore(str(tmp_path / 'unbroken')) as store:
    (unbroken,) = final.run_final(config, data, store, str(tmp_path / 'unbroken'))

  workdir = tmp_path / 'killed'
  _final_of_three_epochs(two_seeds, workdir)
  real_batches = pipeline.train_batches
  epochs_trained = []

  def killed_in_epoch_three(split, batch_size, seed, epoch):
    epochs_trained.append(epoch)
    if epoch == 2 and kill:
      raise KeyboardInterrupt
    yield from real_batches(split, batch_size, seed, epoch)

  monkeypatch.setattr(pipeline, 'train_batches', killed_in_epoch_three)
  kill = True
  with TrialStore(str(workdir)) as store, pytest.raises(KeyboardInterrupt):
    final.run_final(config, data, store, str(workdir))
  kill, epochs_trained[:] = False, []
  with TrialStore(str(workdir)) as store:
    (resumed,) = final.run_final(config, data, store, str(workdir))
  assert epochs_trained == [2]  # epochs 1 and 2 came from the checkpoint
  for split in ('val_metrics', 'test_metrics'):
    for metric in ('accuracy', 'auc', 'loss'):
      assert getattr(resumed, split)[metric] == pytest.approx(getattr(unbroken, split)[metric])
  assert not (workdir / 'checkpoints' / 'final' / f'{resumed.genotype_hash}-seed0').exists()


def test_final_patience_tests_the_best_validation_epoch_not_the_last(two_seeds, tmp_path):
  data, epochs = two_seeds[2], 6
  config = _final_of_three_epochs(two_seeds, tmp_path / 'run')
  config.final.update(epochs=epochs, patience=epochs, checkpoint_every_epochs=0)
  with TrialStore(str(tmp_path / 'run')) as store:
    (kept,) = final.run_final(config, data, store, str(tmp_path / 'run'))
    winner = final.ranking(store.trials())[0]
  splits, metric = data.load(), config.search.metric
  last_epoch = train_lib.train_and_evaluate(  # the same training, tested at its last epoch
      genotype_lib.from_json(winner.genotype), splits.train, splits.val,
      len(splits.class_names), epochs, kept.seed, config.train,
      augment_lib.AugmentConfig(**config.augment), metric).result
  per_epoch = [epoch[metric] for epoch in last_epoch.history]
  assert per_epoch[-1] < max(per_epoch), per_epoch  # else the two could not be told apart
  assert kept.val_metrics[metric] == pytest.approx(max(per_epoch))
  assert last_epoch.metrics[metric] == pytest.approx(per_epoch[-1])
  assert kept.epochs == epochs  # patience of `epochs` never stops early


def test_the_report_shows_the_winners_ensemble(two_seeds):
  workdir, _, _ = two_seeds
  run = report.load_run(str(workdir))
  (ensembled,) = run.ensembles
  with open(report.write_report([str(workdir)])['leaderboard.md']) as f:
    markdown = f.read()
  accuracy = f'accuracy {ensembled.test_metrics["accuracy"]:.4f}'
  assert f"Final test of the winner's 2 seeds ensembled:** {accuracy}" in markdown
  assert f"--model='{workdir}/final/{ensembled.genotype_hash}-seed*'" in markdown


def test_a_store_from_before_ensembles_reads_none_and_takes_one(tmp_path):
  store = TrialStore.create(str(tmp_path), experiment='x')
  store._db.execute('DROP TABLE ensembles')  # as written before the table existed
  assert store.ensembles() == []
  result = records.EnsembleResult('abc', (0, 1), {'accuracy': 0.5})
  store.set_ensemble(result)
  store.set_ensemble(records.EnsembleResult('abc', (0, 1, 2), {'accuracy': 0.75}))
  (held,) = store.ensembles()
  assert (held.seeds, held.test_metrics) == ((0, 1, 2), {'accuracy': 0.75})
  store.close()
