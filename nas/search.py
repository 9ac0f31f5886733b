"""The search loop: ask a population, evaluate it (rung by rung), tell, store, repeat.

The loop is deterministic for a fixed seed and config, and every finished trial is stored
under its `(ask_index, fidelity)` key. Resuming re-runs the loop from the start: trials found
in the store are told again without training, so the optimizer is rebuilt by replaying its
own ask/tell history, and only the trials that were in flight are trained again.

In `search.mode='async'` the loop keeps `executor.slots` candidates training and tells each
result the moment it is stored, asking a new candidate at once, so no worker waits for the
slowest of a batch. Which candidate finishes first is up to the machine, so two async runs
differ; a resumed async search still replays its own history exactly, because among the
candidates in flight the one stored first is the one that finished first (given the same
number of executor slots, which `--resume` checks).

The search sees the training and validation splits only (`Spec.train_val`), never the test split.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
import shutil
import threading
import time
import warnings
from typing import Any, Sequence

from absl import logging
import ml_collections
import nevergrad as ng
import numpy as np
import tqdm

import datasets
from datasets import augment as augment_lib
from models import counting
from models.genotype import AnyGenotype
from nas import distributed
from nas import errors
from nas import optimizers
from nas import records
from nas import space as space_lib
from nas import train as train_lib
from nas.store import TrialStore


@dataclasses.dataclass(frozen=True)
class EvalContext:
  """Everything an executor needs to train a candidate, apart from the candidate.

  Small and picklable: worker processes load the data from its spec, once each.
  """
  data: datasets.Spec
  num_classes: int
  seed: int
  train_config: ml_collections.ConfigDict
  aug_config: augment_lib.AugmentConfig
  metric: str
  checkpoint_root: str  # training checkpoints of candidates in flight live below it
  training_seeds: int = 1

  def checkpoint_dir(self, genotype: AnyGenotype, fidelity: int) -> str:
    return os.path.join(self.checkpoint_root, f'{genotype.hash}-{fidelity}')


# The (search, generation) whose compiled steps this process holds; see hold_generation.
_held_generation: tuple[str, int] | None = None
_held_generation_lock = threading.Lock()


def hold_generation(ctx: EvalContext, generation: int) -> None:
  """Drops the compiled steps of other generations when one of `generation` first arrives.

  A generation's networks train again only within it (promotions) and in the final stage
  (its few winners, compiled again from the disk cache), so every process that trains
  candidates (the search's own, an executor's worker) holds one generation's steps, not up
  to 64 architectures' (benchmarks/RESULTS.md, "A search's memory"). An async search's
  generation is `ask_index // executor.slots`. The compile-ahead threads call it too, so the
  lock lets one of them drop while the others wait to compile. A worker that trains several
  candidates at once (an external dask cluster's, with threads) may drop the steps of one
  in training: it goes on with its own reference, and only its next training seed compiles
  again.
  """
  global _held_generation
  held = (ctx.checkpoint_root, generation)  # a search's own: one worker may serve several
  with _held_generation_lock:
    if held != _held_generation:
      if train_lib.compiled_steps.cache_info().currsize:  # a fresh worker has nothing to drop
        train_lib.drop_compiled_steps()
      _held_generation = held


def release_generation() -> None:
  """Drops the compiled steps held: the search has ended."""
  global _held_generation
  with _held_generation_lock:
    train_lib.drop_compiled_steps()
    _held_generation = None


def evaluate_candidate(genotype: AnyGenotype, fidelity: int, ctx: EvalContext,
                       generation: int) -> records.TrainResult:
  """Trains one candidate for `fidelity` epochs, once per training seed; what an executor runs.

  `generation` is the candidate's generation in its search: the compiled steps of other
  generations are dropped first (`hold_generation`).
  """
  hold_generation(ctx, generation)
  train, val = ctx.data.train_val()
  results = []
  for offset in range(ctx.training_seeds):
    checkpoints = ctx.checkpoint_dir(genotype, fidelity)
    if ctx.training_seeds > 1:  # one training's folder stays where it was before the field
      checkpoints = os.path.join(checkpoints, f'seed{ctx.seed + offset}')
    results.append(train_lib.train_and_evaluate(
        genotype, train, val, ctx.num_classes, fidelity, ctx.seed + offset, ctx.train_config,
        ctx.aug_config, ctx.metric, checkpoint_dir=checkpoints).result)
    if results[-1].status != records.OK:  # the candidate failed, having cost all its trainings
      return dataclasses.replace(
          results[-1], train_seconds=sum(r.train_seconds for r in results),
          compile_seconds=sum(r.compile_seconds for r in results))
  return results[0] if len(results) == 1 else mean_result(results)


def mean_result(results: list[records.TrainResult]) -> records.TrainResult:
  """One result of several trainings of a candidate: their real-valued metrics averaged.

  Each training's own metrics, per-class ones included, are kept under metrics['per_seed'];
  the history is averaged over the epochs every training ran; times and epochs add up.
  """
  metrics = _mean_numbers([r.metrics for r in results])
  metrics['per_seed'] = [r.metrics for r in results]
  history = tuple(_mean_numbers(epochs) for epochs in zip(*(r.history for r in results)))
  return records.TrainResult(
      status=records.OK, metrics=metrics, history=history,
      epochs_run=sum(r.epochs_run for r in results),
      train_seconds=sum(r.train_seconds for r in results),
      compile_seconds=sum(r.compile_seconds for r in results))


def _mean_numbers(values: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """Each real-valued field's mean; a field all dicts agree on (a count) as it is; no other."""
  mean = {}
  for key, first in values[0].items():
    column = [v[key] for v in values]
    if isinstance(first, numbers.Real) and not isinstance(first, numbers.Integral):
      mean[key] = float(np.mean(column))
    elif all(value == first for value in column):
      mean[key] = first
  return mean


def compile_candidate(genotype: AnyGenotype, fidelity: int, ctx: EvalContext,
                      generation: int) -> None:
  """Compiles what evaluate_candidate will run, training nothing."""
  del fidelity  # epochs change no shape
  hold_generation(ctx, generation)
  train, val = ctx.data.train_val()
  train_lib.compile_steps(genotype, train, val, ctx.num_classes, ctx.train_config,
                          ctx.aug_config)


# The local executor runs it in the background ahead of the candidate's training.
evaluate_candidate.ahead = compile_candidate


class TooManyFailures(errors.UserError):
  """Candidates keep failing: most likely the configuration, not the candidates."""


_LIKELY_CAUSES = {
    'RESOURCE_EXHAUSTED': 'out of memory: lower space.widths or space.batch_sizes',
    'NonFiniteLoss': 'training diverges: lower space.learning_rates',
    'CandidateTimeout': 'train.time_limit_s is too short for these candidates',
}


def _likely_cause(error: str) -> str:
  for key, cause in _LIKELY_CAUSES.items():
    if key in error:
      return cause
  return 'see the error; it is probably not the candidates but the code or the data'


# Extra objectives are told as log10 of the cost; no candidate reaches 1e12 of either.
_COSTS = ('params', 'flops')
_WORST_LOG_COST = 12.0


def loss_of(metrics: dict, metric: str, penalty: float) -> float:
  """What the optimizer is told: 1 - metric, or the penalty when there is no valid metric."""
  value = metrics.get(metric)
  if value is None or not math.isfinite(value):
    return penalty
  return 1.0 - value


# search.mode -> the loop that runs it.
_LOOPS = {'sync': '_loop', 'async': '_loop_async'}


def check_config(config: ml_collections.ConfigDict, task: str,
                 num_classes: int) -> space_lib.SearchSpace:
  """Raises UserError for what the search or its trainings would refuse; returns the space.

  Run before a search stores anything, so that a bad value costs neither training time nor
  the workdir (a store once created holds its config, and --resume keeps it).
  """
  if task not in space_lib.SPACES:
    raise errors.UserError(f'no search space for task {task!r}; known tasks: '
                           f'{", ".join(space_lib.SPACES)}')
  try:
    space = space_lib.SPACES[task](config.space, config.data.image_size, config.data.channels,
                                   num_classes)
  except KeyError as e:  # e.g. a classification experiment pointed at segmentation data
    raise errors.UserError(f'config.space has no field {e.args[0]} that a {task} search '
                           f'needs; start from a {task} experiment (see --list_experiments)'
                           ) from e
  except ValueError as e:  # a space config that describes no network
    raise errors.UserError(f'config.space: {e}') from e
  optimizers.check_name(config.search.optimizer)
  # final.top_k=0 searches only: nothing is retrained or tested.
  at_least = {'search.budget': 1, 'search.population': 1, 'search.training_seeds': 1,
              'final.top_k': 0,
              'final.seeds': 1 if config.final.top_k else 0,
              'final.epochs': 1 if config.final.top_k else 0}
  for field, least in at_least.items():
    section, name = field.split('.')
    if config[section][name] < least:
      raise errors.UserError(f'{field} must be at least {least}, got {config[section][name]}')
  unknown = set(config.search.objectives) - set(_COSTS)
  if unknown:
    raise errors.UserError(f'unknown search.objectives {sorted(unknown)}; '
                           f'extra objectives are any of {", ".join(_COSTS)}')
  if config.search.mode not in _LOOPS:
    raise errors.UserError(f'unknown search.mode {config.search.mode!r}; choose one of '
                           f'{", ".join(_LOOPS)}')
  if config.search.mode == 'async' and len(config.search.fidelity.rungs) > 1:
    raise errors.UserError(
        'search.mode=async trains every candidate at one fidelity; set '
        'search.fidelity.rungs=() (train.epochs is then the fidelity) or use search.mode=sync')
  try:
    # Any network of the space: the checks depend on its kind (classifier or segmenter).
    train_lib.check_config(config.train, space.decode(np.zeros(space.dimension)),
                           config.search.metric)
  except ValueError as e:
    raise errors.UserError(str(e)) from e
  return space


class Search:
  """One search over one search space, writing every trial to `store`.

  `task` is the data's (`datasets.Splits.task`): it picks the space, classifiers or
  segmenters. It is an argument because a Spec says what to load, not what it holds.
  Training checkpoints go under `workdir` (by default the store's): with several JAX
  processes, each with its own replay store, it is the run's workdir, the same for every
  process, because orbax saves and restores collectively.
  """

  def __init__(self, config: ml_collections.ConfigDict, data: datasets.Spec,
               num_classes: int, store: TrialStore, executor,
               task: str = datasets.CLASSIFICATION, workdir: str | None = None):
    self.config = config
    self.store = store
    self.executor = executor
    self.space = check_config(config, task, num_classes)
    self.ctx = EvalContext(
        data=data, num_classes=num_classes, seed=config.seed,
        train_config=config.train, aug_config=augment_lib.AugmentConfig(**config.augment),
        metric=config.search.metric,
        checkpoint_root=train_lib.checkpoint_dir(workdir or store.workdir),
        training_seeds=config.search.training_seeds)
    self.rungs = tuple(config.search.fidelity.rungs) or (config.train.epochs,)
    self._failures_in_a_row = 0

  def run(self) -> list[records.Trial]:
    cfg = self.config.search
    budget = cfg.budget
    if cfg.optimizer == 'grid':
      budget = min(budget, self.space.grid_size())
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', ng.errors.InefficientSettingsWarning)
      # A point still untrainable after Nevergrad's redraws is stored as rejected, with why.
      warnings.simplefilter('ignore', ng.errors.FailedConstraintWarning)
      optimizer = optimizers.make(cfg.optimizer, self.space, self.config.seed, budget,
                                  cfg.population, cfg.options.to_dict(),
                                  shared_start=cfg.shared_start,
                                  new_networks=cfg.new_networks)
      getattr(self, _LOOPS[cfg.mode])(optimizer, budget)
    release_generation()  # the final stage compiles its few winners alone
    return self.store.trials()

  def _loop(self, optimizer, budget: int) -> None:
    cfg = self.config.search
    start = time.monotonic()
    asked, generation, best = 0, 0, math.inf
    with tqdm.tqdm(total=budget, desc=self.config.experiment, unit='cand') as bar:
      while asked < budget:
        if self._time_is_up(start):
          logging.info('time budget of %gs reached after %d candidates', cfg.time_budget_s,
                       asked)
          break
        candidates = [optimizer.ask() for _ in range(min(cfg.population, budget - asked))]
        genotypes = [self.space.decode(c.value) for c in candidates]
        trials = self._evaluate_generation(asked, generation, genotypes)
        for candidate, trial in zip(candidates, trials):
          optimizer.tell(candidate, self._objectives(trial))
        asked += len(candidates)
        generation += 1
        best = min([best, *(t.loss for t in trials)])
        bar.update(len(candidates))
        self._show_best(bar, best)

  def _loop_async(self, optimizer, budget: int) -> None:
    fidelity = self.rungs[-1]
    start = time.monotonic()
    asked, best = 0, math.inf
    finished: dict[str, records.Trial] = {}  # genotype hash -> the trial that trained it
    in_flight: dict[str, list[tuple[int, Any, AnyGenotype]]] = {}  # hash -> asks waiting on it
    futures: dict[str, Any] = {}  # hash -> its training; absent when replayed from the store
    with tqdm.tqdm(total=budget, desc=self.config.experiment, unit='cand') as bar:

      def tell(candidate, trial: records.Trial) -> None:
        nonlocal best
        optimizer.tell(candidate, self._objectives(trial))
        best = min(best, trial.loss)
        bar.update(1)
        self._show_best(bar, best)

      while True:
        while (len(in_flight) < self.executor.slots and asked < budget and
               not self._time_is_up(start)):
          candidate = optimizer.ask()
          genotype = self.space.decode(candidate.value)
          ask_index, generation = asked, asked // self.executor.slots
          asked += 1
          if genotype.hash in in_flight:
            in_flight[genotype.hash].append((ask_index, candidate, genotype))
            continue
          reason = self.space.violation(genotype)
          if reason or genotype.hash in finished:
            stored = self._stored(ask_index, fidelity, genotype)
            if stored:
              tell(candidate, stored)
            elif reason:
              tell(candidate, self._record(ask_index, fidelity, generation, genotype,
                                           status=records.REJECTED, error=reason))
            else:
              tell(candidate, self._record_duplicate(ask_index, generation, genotype,
                                                     finished[genotype.hash]))
            continue
          in_flight[genotype.hash] = [(ask_index, candidate, genotype)]
          if not self._stored(ask_index, fidelity, genotype):
            futures[genotype.hash] = self.executor.submit(evaluate_candidate, genotype, fidelity,
                                                          self.ctx, generation)
        if not in_flight:
          break
        genotype_hash = self._next_finished(in_flight, futures, fidelity)
        (ask_index, candidate, genotype), *copies = in_flight.pop(genotype_hash)
        generation = ask_index // self.executor.slots
        if genotype_hash in futures:
          source = self._record_trained(ask_index, fidelity, generation, genotype,
                                        futures.pop(genotype_hash).result())
        else:
          source = self._stored(ask_index, fidelity, genotype)
        finished[genotype_hash] = source
        tell(candidate, source)
        for copy_index, copy_candidate, copy in copies:
          tell(copy_candidate, self._stored(copy_index, fidelity, copy) or self._record_duplicate(
              copy_index, copy_index // self.executor.slots, copy, source))

  def _time_is_up(self, start: float) -> bool:
    budget = self.config.search.time_budget_s
    return bool(budget) and time.monotonic() - start > budget

  def _show_best(self, bar: tqdm.tqdm, best: float) -> None:
    """The best validation metric so far on the progress bar; none while all failed."""
    bar.set_postfix(best_val=f'{1 - best:.4f}' if best < self.config.search.penalty else 'none')

  def _next_finished(self, in_flight: dict, futures: dict, fidelity: int) -> str:
    """The hash, among those in flight, whose training finishes next.

    Replayed trainings finish first, in the order they were stored; then whichever future is
    done first. A lone future is simply waited for: that also runs the local executor's.
    """
    replayed = [h for h in in_flight if h not in futures]
    if replayed:
      return min(replayed, key=lambda h: self.store.trial_at(in_flight[h][0][0], fidelity).id)
    if len(futures) == 1:
      return next(iter(futures))
    while True:
      for genotype_hash, future in futures.items():
        if future.done():
          return genotype_hash
      time.sleep(0.05)

  def _stored(self, ask_index: int, fidelity: int,
              genotype: AnyGenotype) -> records.Trial | None:
    """The stored trial of this ask, if any; it must be of the genotype asked again now."""
    stored = self.store.trial_at(ask_index, fidelity)
    if stored and stored.genotype_hash != genotype.hash:
      raise errors.UserError(
          f'the stored search does not replay: candidate {ask_index} was '
          f'{stored.genotype_hash}, now {genotype.hash}; the code or the config changed '
          'since it was started, so start a new --workdir')
    return stored

  def _objectives(self, trial: records.Trial) -> float | list[float]:
    """What the optimizer is told: the loss, or the loss and the cost of each extra objective.

    Nevergrad optimizes several objectives by the hypervolume of their Pareto front.
    """
    extra = self.config.search.objectives
    if not extra:
      return trial.loss
    if not trial.metrics:  # rejected or failed: as bad as possible in every objective
      return [trial.loss] + [_WORST_LOG_COST] * len(extra)
    costs = {'params': trial.params, 'flops': trial.flops}
    return [trial.loss] + [math.log10(max(1, costs[name])) for name in extra]

  def _evaluate_generation(self, first_ask: int, generation: int,
                           genotypes: list[AnyGenotype]) -> list[records.Trial]:
    """Successive halving over the rungs; each candidate's trial at its highest rung."""
    eta = self.config.search.fidelity.eta
    highest: list[records.Trial | None] = [None] * len(genotypes)
    alive = list(range(len(genotypes)))
    for fidelity in self.rungs:
      trials = self._evaluate([(first_ask + i, genotypes[i]) for i in alive], fidelity,
                              generation)
      for i, trial in zip(alive, trials):
        highest[i] = trial
      scored = [i for i in alive if highest[i].metrics]
      alive = sorted(scored, key=lambda i: (highest[i].loss, i))[:math.ceil(len(alive) / eta)]
      if not alive:
        break
    return highest

  def _evaluate(self, items: list[tuple[int, AnyGenotype]], fidelity: int,
                generation: int) -> list[records.Trial]:
    """Stored, rejected, duplicate or trained: one trial per item, in item order."""
    trials: dict[int, records.Trial] = {}
    waiting: dict[str, list[tuple[int, AnyGenotype]]] = {}
    futures = {}
    with self.executor.batch():
      self._submit(items, fidelity, generation, trials, waiting, futures)
    for genotype_hash, future in futures.items():
      (ask_index, genotype), *copies = waiting[genotype_hash]
      source = self._record_trained(ask_index, fidelity, generation, genotype, future.result())
      trials[ask_index] = source
      for copy_index, copy in copies:
        trials[copy_index] = self._record_duplicate(copy_index, generation, copy, source)
    return [trials[ask_index] for ask_index, _ in items]

  def _submit(self, items, fidelity, generation, trials, waiting, futures) -> None:
    """Fills `trials` with what needs no training and submits the rest, once per genotype."""
    for ask_index, genotype in items:
      stored = self._stored(ask_index, fidelity, genotype)
      if stored:
        trials[ask_index] = stored
        continue
      reason = self.space.violation(genotype)
      if reason:
        trials[ask_index] = self._record(ask_index, fidelity, generation, genotype,
                                         status=records.REJECTED, error=reason)
        continue
      source = self.store.trained(genotype.hash, fidelity)
      if source:
        trials[ask_index] = self._record_duplicate(ask_index, generation, genotype, source)
        continue
      if genotype.hash not in waiting:
        futures[genotype.hash] = self.executor.submit(evaluate_candidate, genotype, fidelity,
                                                      self.ctx, generation)
      waiting.setdefault(genotype.hash, []).append((ask_index, genotype))

  def _record_trained(self, ask_index: int, fidelity: int, generation: int,
                      genotype: AnyGenotype, result: records.TrainResult) -> records.Trial:
    counts = counting.count(genotype, self.config.data.image_size, self.config.data.channels,
                            self.ctx.num_classes)
    trial = self._record(
        ask_index, fidelity, generation, genotype, status=result.status,
        metrics=result.metrics, history=result.history, error=result.error,
        params=counts.params, flops=counts.flops, train_seconds=result.train_seconds,
        compile_seconds=result.compile_seconds)
    if distributed.is_main():  # stored, so its training checkpoints are no longer needed
      shutil.rmtree(self.ctx.checkpoint_dir(genotype, fidelity), ignore_errors=True)
    self._count_failure(trial)
    return trial

  def _record_duplicate(self, ask_index: int, generation: int, genotype: AnyGenotype,
                        source: records.Trial) -> records.Trial:
    return self._record(
        ask_index, source.fidelity, generation, genotype, status=records.DUPLICATE,
        metrics=source.metrics, history=source.history, error=source.error,
        params=source.params, flops=source.flops, source_trial=source.id)

  def _record(self, ask_index: int, fidelity: int, generation: int, genotype: AnyGenotype,
              status: str, metrics: dict | None = None, **fields) -> records.Trial:
    metrics = metrics or {}
    return self.store.add_trial(records.Trial(
        ask_index=ask_index, fidelity=fidelity, genotype_hash=genotype.hash,
        genotype=genotype.to_json(), description=genotype.describe(), status=status,
        loss=loss_of(metrics, self.config.search.metric, self.config.search.penalty),
        metrics=metrics, seed=self.config.seed, generation=generation, **fields))

  def _count_failure(self, trial: records.Trial) -> None:
    if trial.status != records.FAILED:
      self._failures_in_a_row = 0
      return
    self._failures_in_a_row += 1
    limit = self.config.search.max_consecutive_failures
    if limit and self._failures_in_a_row >= limit:
      raise TooManyFailures(
          f'{self._failures_in_a_row} candidates failed in a row, last with '
          f'"{trial.error.splitlines()[0] if trial.error else "?"}"; likely cause: '
          f'{_likely_cause(trial.error)}; the finished trials are kept in the store (fix the '
          'config and start a new --workdir: --resume keeps the stored config)')
