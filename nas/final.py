"""The final stage: retrain the best genotypes at full fidelity with several seeds, test once.

This is the only code that receives the test split. Each (genotype, seed) is tested exactly
once and stored; a resumed final stage skips the pairs already in the store and continues
a training it was killed in from its last checkpoint (`final.checkpoint_every_epochs`).
Each network is tested at its last epoch, or with `final.patience` at its best validation one.
"""
from __future__ import annotations

import dataclasses
import os
import shutil

from absl import logging
import ml_collections

import datasets
import models
from datasets import augment as augment_lib
from models import genotype as genotype_lib
from models.genotype import Genotype, SegGenotype
from nas import distributed
from nas import ensemble
from nas import explain
from nas import overlays
from nas import records
from nas import train as train_lib
from nas.store import TrialStore

# Genotype kind -> the figure of the winner on the test split, and its file under explain/:
# where a classifier looks (Grad-CAM), or a segmenter's best and worst masks.
_FIGURES = {
    Genotype: (explain.grad_cam_figure, 'grad_cam.png'),
    SegGenotype: (overlays.overlay_figure, 'overlays.png'),
}


def ranking(trials: list[records.Trial]) -> list[records.Trial]:
  """One trial per scored genotype, best first: highest fidelity reached, then lowest loss.

  Successive halving only promotes the best, so a genotype that reached a higher rung beat
  every one that did not; losses are compared within a fidelity, never across. Of equal
  losses the smaller network ranks first, as on the leaderboard (`nas.report.leaderboard`),
  so the genotype retrained as rank 1 is the one the leaderboard shows as rank 1.
  """
  best: dict[str, records.Trial] = {}
  for trial in trials:
    if not trial.metrics:
      continue
    held = best.get(trial.genotype_hash)
    if held is None or (trial.fidelity, -trial.loss) > (held.fidelity, -held.loss):
      best[trial.genotype_hash] = trial
  return sorted(best.values(), key=lambda t: (-t.fidelity, t.loss, t.params, t.ask_index))


def run_final(config: ml_collections.ConfigDict, data: datasets.Spec, store: TrialStore,
              workdir: str) -> list[records.FinalResult]:
  """Retrains the top `final.top_k` genotypes with `final.seeds` seeds; tests each once.

  Every retrained network is saved under `workdir/final/` (by every JAX process together,
  into process 0's workdir); the winner (the search's best genotype, at its seed with the
  best validation metric) is copied to `workdir/best/`. The seeds of each genotype are also
  tested together, as one ensemble (`_test_ensembles`).
  With `final.dedup_test`, each is also scored on the test images that have no near
  duplicate in the training split (stored under test_metrics['deduplicated']).
  """
  splits = data.load()
  deduplicated = (dataclasses.replace(data, dedup=True).load().test
                  if config.final.dedup_test else None)
  top = ranking(store.trials())[:config.final.top_k]
  aug_config = augment_lib.AugmentConfig(**config.augment)
  num_classes = len(splits.class_names)
  train_cfg = config.train.copy_and_resolve_references()
  train_cfg.checkpoint_every_epochs = config.final.get('checkpoint_every_epochs', 0)
  train_cfg.patience = config.final.get('patience', 0)
  for rank, trial in enumerate(top, start=1):
    genotype = genotype_lib.from_json(trial.genotype)
    for offset in range(config.final.seeds):
      seed = config.seed + offset
      if store.final_at(genotype.hash, seed):
        continue
      logging.info('final: rank %d %s, seed %d, %d epochs', rank, genotype.hash, seed,
                   config.final.epochs)
      # Every process passes the same directory: orbax saves and restores collectively.
      training = train_lib.checkpoint_dir(workdir, 'final', f'{genotype.hash}-seed{seed}')
      trained = train_lib.train_and_evaluate(
          genotype, splits.train, splits.val, num_classes, config.final.epochs, seed,
          train_cfg, aug_config, config.search.metric, checkpoint_dir=training)
      if trained.result.status != records.OK:
        logging.warning('final training of %s (seed %d) failed: %s', genotype.hash, seed,
                        trained.result.error)
        continue
      test_metrics = train_lib.evaluate(trained.state, trained.steps, splits.test,
                                        config.train.eval_batch_size)
      if deduplicated is not None:
        test_metrics[records.DEDUPLICATED] = train_lib.evaluate(
            trained.state, trained.steps, deduplicated, config.train.eval_batch_size)
      checkpoint = os.path.join('final', f'{genotype.hash}-seed{seed}')
      if distributed.is_main():  # left by a kill before it was stored
        shutil.rmtree(os.path.join(workdir, checkpoint), ignore_errors=True)
      models.save(os.path.join(workdir, checkpoint), genotype,
                  {'params': trained.state.params, 'batch_stats': trained.state.batch_stats},
                  splits.class_names, config.data.image_size, config.data.channels,
                  dataset=config.data.name, data_options=config.data.options.to_dict(),
                  experiment=config.experiment, seed=seed,
                  val_metrics=trained.result.metrics)
      store.add_final(records.FinalResult(
          genotype_hash=genotype.hash, genotype=trial.genotype,
          description=trial.description, seed=seed, epochs=trained.result.epochs_run,
          val_metrics=trained.result.metrics, test_metrics=test_metrics,
          params=trial.params, flops=trial.flops,
          train_seconds=trained.result.train_seconds, checkpoint=checkpoint))
      if distributed.is_main():  # stored, so its training checkpoints are no longer needed
        shutil.rmtree(training, ignore_errors=True)
  finals = store.finals()
  _test_ensembles(config, splits.test, deduplicated, top, finals, store, workdir)
  winner = _winner(top, finals, config.search.metric)
  if winner is None:
    return finals
  # Stores written before checkpoints were relative hold absolute paths, which join keeps.
  checkpoint = os.path.join(workdir, winner.checkpoint)
  model = models.load(checkpoint)  # on every process: orbax restores collectively
  if distributed.is_main():  # process 0 owns the workdir
    _copy(checkpoint, os.path.join(workdir, 'best'))
    logging.info('winner %s (seed %d) saved to %s', winner.genotype_hash, winner.seed,
                 os.path.join(workdir, 'best'))
    draw, name = _FIGURES[type(model.genotype)]
    draw(model, splits.test, os.path.join(workdir, 'explain', name))
  return finals


def _test_ensembles(config: ml_collections.ConfigDict, test: datasets.Split,
                    deduplicated: datasets.Split | None, top: list[records.Trial],
                    finals: list[records.FinalResult], store: TrialStore, workdir: str) -> None:
  """Tests each top genotype's retrained seeds together, once per set of seeds.

  The ensemble averages its members' probabilities (soft voting), as
  `python -m nas.evaluate --model='WORKDIR/final/<hash>-seed*'` does. It is reported beside
  the single networks, never ranked: which networks to average is fixed before any test.
  """
  held = {e.genotype_hash: e.seeds for e in store.ensembles()}
  for trial in top:
    members = sorted(_saved(finals, trial.genotype_hash), key=lambda f: f.seed)
    seeds = tuple(f.seed for f in members)
    if len(seeds) < 2 or held.get(trial.genotype_hash) == seeds:
      continue
    # On every process: orbax restores collectively.
    saved = [models.load(os.path.join(workdir, f.checkpoint)) for f in members]
    task = train_lib.task_for(saved[0].genotype, config.train)

    def score(split: datasets.Split) -> dict:
      mean = ensemble.probabilities(saved, split.images, config.train.eval_batch_size)[1]
      return task.score(split, mean)

    test_metrics = score(test)
    if deduplicated is not None:
      test_metrics[records.DEDUPLICATED] = score(deduplicated)
    store.set_ensemble(records.EnsembleResult(trial.genotype_hash, seeds, test_metrics))
    logging.info('final: the %d seeds of %s ensembled: test %s', len(seeds),
                 trial.genotype_hash, {k: round(v, 4) for k, v in test_metrics.items()
                                       if isinstance(v, float)})


def _winner(top: list[records.Trial], finals: list[records.FinalResult],
            metric: str) -> records.FinalResult | None:
  """The best-ranked retrained genotype, at its best-validating seed."""
  for trial in top:
    candidates = _saved(finals, trial.genotype_hash)
    if candidates:
      return max(candidates, key=lambda f: (f.val_metrics.get(metric, 0.0), -f.seed))
  return None


def _saved(finals: list[records.FinalResult], genotype_hash: str) -> list[records.FinalResult]:
  """The genotype's final results whose network was saved (stores before checkpoints have none)."""
  return [f for f in finals if f.genotype_hash == genotype_hash and f.checkpoint]


def _copy(source: str, destination: str) -> None:
  """Replaces `destination` with a copy of `source`, never leaving a half-copied folder."""
  partial = destination + '.partial'
  shutil.rmtree(partial, ignore_errors=True)
  shutil.copytree(source, partial)
  shutil.rmtree(destination, ignore_errors=True)
  os.replace(partial, destination)
