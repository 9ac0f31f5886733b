"""The search loop with a fast stand-in for training: dedup, rejection, rungs, replay."""
import collections
import itertools

import numpy as np
import pytest

import datasets
from datasets import augment as augment_lib
import experiments
from experiments.common import PRESETS
from models.genotype import Genotype, Stage
from nas import errors
from nas import executors
from nas import optimizers
from nas import records
from nas import search as search_lib
from nas import train as train_lib
from nas.store import TrialStore


def _fake_train(calls):
  """Accuracy that depends on the genotype and grows with epochs; counts every training."""
  def evaluate(genotype: Genotype, fidelity: int, ctx, generation) -> records.TrainResult:
    del ctx, generation
    calls.append((genotype.hash, fidelity))
    size = sum(s.num_cells * s.width for s in genotype.canonical().stages)
    accuracy = min(0.99, 0.3 + 0.4 * (size % 97) / 97 + 0.05 * fidelity)
    metrics = {'accuracy': accuracy, 'balanced_accuracy': accuracy, 'macro_f1': accuracy,
               'auc': accuracy}
    return records.TrainResult(records.OK, metrics, ({'epoch': fidelity},), fidelity, 0.1, 0.0)
  return evaluate


def _config(**search):
  config = experiments.get_config('pso_synthetic', 'smoke')
  config.search.update(search)
  return config


# The stand-in training never loads data.
_UNUSED_DATA = datasets.Spec('synthetic', '/nonexistent', 16, 1)


def _run(config, workdir, calls, executor=None):
  with TrialStore.create(str(workdir)) as store:
    search = search_lib.Search(config, _UNUSED_DATA, 4, store,
                               executor or executors.LocalExecutor())
    return search.run()


@pytest.fixture
def calls(monkeypatch):
  made = []
  monkeypatch.setattr(search_lib, 'evaluate_candidate', _fake_train(made))
  return made


def test_duplicates_are_never_trained_again(tmp_path, calls):
  config = _config(optimizer='grid', budget=1000, population=4)
  config.space.update(num_stages=1, num_cells=(0, 1), cells=('conv', 'sep', 'identity'),
                      widths=(8,), stem_widths=(8,), attention=('none',),
                      downsample=('max',), activations=('relu',), dropouts=(0.0,))
  config.search.fidelity.rungs = ()
  trials = _run(config, tmp_path, calls)
  assert len(trials) == 6  # the whole grid: 2 x 3 points
  statuses = collections.Counter(t.status for t in trials)
  # (0, conv), (0, sep), (0, identity) and (1, identity) are one network: 3 copies.
  assert statuses == {records.OK: 3, records.DUPLICATE: 3}
  assert len(calls) == len(set(calls)) == 3
  for trial in trials:
    if trial.status == records.DUPLICATE:
      source = next(t for t in trials if t.id == trial.source_trial)
      assert source.genotype_hash == trial.genotype_hash and source.loss == trial.loss


def test_untrainable_candidates_are_redrawn_or_rejected_untrained(tmp_path, calls):
  config = _config(optimizer='random', budget=24, population=4)
  config.data.image_size = 2  # two downsampling stages can shrink 2px below 1px
  config.space.update(num_cells=(1,), downsample=('max', 'none'))
  config.search.fidelity.rungs = ()
  trials = _run(config, tmp_path / 'random', calls)
  # Nevergrad redraws them, so the whole budget goes to networks that train.
  assert len(trials) == 24 and {t.status for t in trials} <= {records.OK, records.DUPLICATE}
  # A grid asks every point in turn, so it meets them: stored as rejected, never trained.
  config.search.optimizer = 'grid'
  trials = _run(config, tmp_path / 'grid', calls)
  rejected = [t for t in trials if t.status == records.REJECTED]
  assert rejected and all('feature map' in t.error for t in rejected)
  assert all(t.loss == config.search.penalty for t in rejected)
  assert {t.genotype_hash for t in rejected}.isdisjoint(h for h, _ in calls)


def test_optimizers_start_from_the_seeds_first_generation(tmp_path, calls):
  """At one seed PSO, DE and random search train the same first population, then part ways."""
  def asked(optimizer, seed):
    config = _config(optimizer=optimizer, budget=12, population=4)
    config.seed = seed
    config.data.image_size = 2  # a space where some points cannot train, as the redraws meet
    config.space.update(num_cells=(1,), downsample=('max', 'none'))
    config.search.fidelity.rungs = ()
    trials = _run(config, tmp_path / f'{optimizer}-{seed}', calls)
    return [t.genotype_hash for t in sorted(trials, key=lambda t: t.ask_index)]

  runs = {optimizer: asked(optimizer, seed=0) for optimizer in ('pso', 'de', 'random')}
  assert runs['pso'][:4] == runs['de'][:4] == runs['random'][:4]
  assert len({tuple(hashes[4:]) for hashes in runs.values()}) == 3
  assert asked('pso', seed=1)[:4] != runs['pso'][:4]


def test_successive_halving_promotes_the_best(tmp_path, calls):
  config = _config(optimizer='random', budget=8, population=4)
  config.search.fidelity.update(rungs=(1, 3), eta=2)
  trials = _run(config, tmp_path, calls)
  for generation in (0, 1):
    first = [t for t in trials if t.generation == generation and t.fidelity == 1]
    second = [t for t in trials if t.generation == generation and t.fidelity == 3]
    assert len(first) == 4 and len(second) == 2
    best_two = sorted(first, key=lambda t: (t.loss, t.ask_index))[:2]
    assert {t.ask_index for t in second} == {t.ask_index for t in best_two}


@pytest.mark.parametrize('mode, compile_ahead', [('sync', 0), ('sync', 2), ('async', 0)])
def test_a_search_holds_one_generations_compiled_steps(tmp_path, monkeypatch, mode,
                                                       compile_ahead):
  held = []  # architectures with compiled steps in the process, at each training
  compiled = []  # the steps of every call, kept alive so that their ids stay theirs
  def compile_steps(genotype, *args, **kwargs):
    del args, kwargs
    compiled.append(train_lib.compiled_steps(genotype, 4, 'float32', 'adamw', 0.9,
                                             augment_lib.AugmentConfig()))
  def train(genotype, *args, **kwargs):
    compile_steps(genotype)
    held.append(train_lib.compiled_steps.cache_info().currsize)
    return train_lib.Trained(records.TrainResult(
        records.OK, {'accuracy': 0.5 + 0.01 * len(held)}, (), 1, 0.1, 0.0), None, None)
  # The real evaluate_candidate and compile_candidate, which executors' workers and
  # compile-ahead threads run too, around stand-ins.
  monkeypatch.setattr(train_lib, 'train_and_evaluate', train)
  monkeypatch.setattr(train_lib, 'compile_steps', compile_steps)
  monkeypatch.setattr(datasets.Spec, 'train_val', lambda self: (None, None))
  train_lib.drop_compiled_steps()
  config = _config(optimizer='random', budget=12, population=4, new_networks=True, mode=mode)
  config.search.fidelity.update(rungs=(1, 3) if mode == 'sync' else (), eta=2)
  executor = executors.LocalExecutor(compile_ahead)
  try:
    trials = _run(config, tmp_path, [], executor)
  finally:
    executor.shutdown()
  assert len({t.genotype_hash for t in trials}) == 12
  # Each architecture compiled once: no drop lost steps that a training or promotion needed.
  assert len({id(steps) for steps in compiled}) == 12
  if mode == 'async':  # with one slot, every candidate is a generation
    assert held == [1] * 12
  elif compile_ahead:  # the generation's next candidates may be compiled already
    assert len(held) == 18 and max(held) == 4
  else:
    # A promotion finds its network's steps (4 held, not 5); the next generation does not.
    assert held == [1, 2, 3, 4, 4, 4] * 3
  assert train_lib.compiled_steps.cache_info().currsize == 0  # the final stage starts afresh


def test_a_process_drops_its_steps_when_another_generation_or_search_arrives():
  def context(workdir):
    return search_lib.EvalContext(_UNUSED_DATA, 4, 0, None, None, 'accuracy', workdir)
  def compile_and_count(genotype):
    train_lib.compiled_steps(genotype, 4, 'float32', 'adamw', 0.9, augment_lib.AugmentConfig())
    return train_lib.compiled_steps.cache_info().currsize
  one, two = (Genotype((Stage(1, 'conv', 3, width, 1, 'none', 'max'),), stem_width=8)
              for width in (8, 16))
  held = []
  for workdir, generation, genotype in [('a', 0, one), ('a', 0, two), ('a', 1, one),
                                        ('b', 1, two), ('b', 1, one)]:
    search_lib.hold_generation(context(workdir), generation)
    held.append(compile_and_count(genotype))
  assert held == [1, 2, 1, 1, 2]  # generation 1 of search a, then search b, start afresh
  search_lib.release_generation()
  assert train_lib.compiled_steps.cache_info().currsize == 0


class _DiesAfter(executors.LocalExecutor):
  """Simulates a kill: the training after the first `n` raises KeyboardInterrupt."""

  def __init__(self, n):
    super().__init__()
    self.left = n

  def submit(self, fn, *args, **kwargs):
    def run():
      if self.left == 0:
        raise KeyboardInterrupt
      self.left -= 1
      return fn(*args, **kwargs)
    return super().submit(run)


def _key(trials):
  return sorted((t.ask_index, t.fidelity, t.genotype_hash, t.status, t.loss) for t in trials)


@pytest.mark.parametrize('optimizer, new_networks', [
    ('pso', False), ('de', False), ('ga', False), ('tpevo', False), ('pso', True), ('de', True)])
def test_resumed_search_equals_uninterrupted(tmp_path, calls, optimizer, new_networks):
  config = _config(optimizer=optimizer, budget=16, population=4, new_networks=new_networks)
  reference = _run(config, tmp_path / 'reference', calls)
  trained_once = len(calls)
  with pytest.raises(KeyboardInterrupt):
    _run(config, tmp_path / 'killed', calls, executor=_DiesAfter(5))
  calls.clear()
  with TrialStore(str(tmp_path / 'killed')) as store:
    resumed = search_lib.Search(config, _UNUSED_DATA, 4, store,
                                executors.LocalExecutor()).run()
  assert _key(resumed) == _key(reference)
  assert len(calls) == trained_once - 5  # the 5 finished trainings were not repeated


@pytest.mark.parametrize('optimizer', sorted(optimizers.EXTENSIBLE))
def test_search_extended_to_a_larger_budget_equals_one_run_at_that_budget(tmp_path, calls,
                                                                        optimizer):
  reference = _run(_config(optimizer=optimizer, budget=16, population=4),
                   tmp_path / 'reference', calls)
  calls.clear()
  _run(_config(optimizer=optimizer, budget=8, population=4), tmp_path / 'extended', calls)
  trained_first = len(calls)
  with TrialStore(str(tmp_path / 'extended')) as store:
    extended = search_lib.Search(_config(optimizer=optimizer, budget=16, population=4),
                                 _UNUSED_DATA, 4, store, executors.LocalExecutor()).run()
  assert _key(extended) == _key(reference)
  # Over both runs, each genotype trained once per rung: the first 8 replayed, not retrained.
  assert len(calls) == len({(t.genotype_hash, t.fidelity) for t in reference
                            if t.status == records.OK})
  assert 0 < trained_first < len(calls)


def test_tpevo_cannot_be_extended_to_a_larger_budget(tmp_path, calls):
  # Its phases split the budget, so the same seed asks other candidates at another budget.
  _run(_config(optimizer='tpevo', budget=8, population=4), tmp_path, calls)
  with TrialStore(str(tmp_path)) as store, pytest.raises(errors.UserError,
                                                         match='does not replay'):
    search_lib.Search(_config(optimizer='tpevo', budget=16, population=4), _UNUSED_DATA, 4,
                      store, executors.LocalExecutor()).run()


def test_too_many_failures_stop_the_search(tmp_path, monkeypatch):
  def failing(genotype, fidelity, ctx, generation):
    return records.TrainResult(records.FAILED, {}, (), 0, 0.1, 0.0,
                               'XlaRuntimeError: RESOURCE_EXHAUSTED: out of memory')
  monkeypatch.setattr(search_lib, 'evaluate_candidate', failing)
  config = _config(optimizer='random', budget=16, population=4, max_consecutive_failures=3)
  with pytest.raises(search_lib.TooManyFailures, match='out of memory'):
    _run(config, tmp_path, [])
  with TrialStore(str(tmp_path)) as store:
    assert [t.status for t in store.trials()].count(records.FAILED) == 3


def test_multi_objective_search_tells_error_and_size(tmp_path, calls):
  config = _config(optimizer='de', budget=12, population=4, objectives=('params',))
  search = search_lib.Search(config, _UNUSED_DATA, 4,
                             TrialStore.create(str(tmp_path)), executors.LocalExecutor())
  trials = search.run()
  ok = next(t for t in trials if t.status == records.OK)
  assert search._objectives(ok) == [ok.loss, pytest.approx(np.log10(ok.params))]
  assert len(trials) >= 12


def test_several_trainings_average_their_real_metrics_and_keep_each():
  def result(accuracy, confusion):
    metrics = {'accuracy': np.float32(accuracy), 'num_examples': 10,
               'confusion_matrix': confusion, 'calibration': {'count': [1, 9]}}
    return records.TrainResult(records.OK, metrics, ({'epoch': 1, 'train_loss': accuracy},),
                               1, 2.0, 1.0)
  results = [result(0.5, [[5, 0], [5, 0]]), result(0.75, [[4, 1], [1, 4]])]
  mean = search_lib.mean_result(results)
  assert mean.metrics['accuracy'] == pytest.approx(0.625)  # a float32 is averaged too
  assert mean.metrics['num_examples'] == 10 and mean.metrics['calibration'] == {'count': [1, 9]}
  assert 'confusion_matrix' not in mean.metrics  # they differ: only under per_seed
  assert mean.metrics['per_seed'] == [r.metrics for r in results]
  assert mean.history == ({'epoch': 1, 'train_loss': pytest.approx(0.625)},)
  assert (mean.epochs_run, mean.train_seconds, mean.compile_seconds) == (2, 4.0, 2.0)


def test_a_failing_training_fails_the_candidate_with_every_trainings_cost(monkeypatch):
  outcomes = iter([records.OK, records.FAILED])
  def train(*args, **kwargs):
    del args, kwargs
    status = next(outcomes)
    return train_lib.Trained(records.TrainResult(
        status, {'accuracy': 0.5} if status == records.OK else {}, (), 1, 3.0, 1.0,
        error='' if status == records.OK else 'NaN loss'), None, None)
  monkeypatch.setattr(train_lib, 'train_and_evaluate', train)
  monkeypatch.setattr(datasets.Spec, 'train_val', lambda self: (None, None))
  ctx = search_lib.EvalContext(_UNUSED_DATA, 4, 0, None, None, 'accuracy', '/nonexistent',
                               training_seeds=3)
  failed = search_lib.evaluate_candidate(
      Genotype((Stage(1, 'conv', 3, 8, 1, 'none', 'max'),), stem_width=8), 2, ctx, 0)
  assert failed.status == records.FAILED and failed.error == 'NaN loss'
  assert (failed.train_seconds, failed.compile_seconds) == (6.0, 2.0)
  assert next(outcomes, None) is None  # the third training never ran


@pytest.mark.parametrize('override, message', [
    ('search.optimizer=psoo', "unknown optimizer 'psoo'"),
    ('search.population=0', 'search.population must be at least 1, got 0'),
    ('search.budget=-3', 'search.budget must be at least 1'),
    ('search.training_seeds=0', 'search.training_seeds must be at least 1, got 0'),
    ('final.seeds=0', 'final.seeds must be at least 1'),
    ('final.top_k=-1', 'final.top_k must be at least 0'),
    ("space.attention=('none', 'cbamm')", "space.attention has unknown 'cbamm'"),
    ("space.activations=('gelux',)", "space.activations has unknown 'gelux'"),
    ('space.widths=()', "gene 's0.width' has no allowed values"),
    ('train.optimizer=adam', "unknown train.optimizer 'adam'; choose one of adamw, sgd"),
    ('train.schedule=linear', "unknown train.schedule 'linear'"),
    ('train.dtype=float16x', "train.dtype 'float16x' is not a float type"),
    ('train.dtype=int32', "train.dtype 'int32' is not a float type"),
    ('search.metric=dice', "Classification has no fitness metric 'dice'"),
    ('search.mode=asap', "unknown search.mode 'asap'"),
])
def test_a_bad_config_is_refused_before_the_search_starts(override, message):
  config = experiments.get_config('pso_synthetic', 'smoke', [override])
  with pytest.raises(errors.UserError, match=message):
    search_lib.check_config(config, datasets.CLASSIFICATION, 3)


def test_check_config_accepts_every_experiment_at_every_preset():
  for name, preset in itertools.product(experiments.names(), PRESETS):
    config = experiments.get_config(name, preset)
    task = (datasets.SEGMENTATION if config.data.name in ('kvasir_seg', 'synthetic_seg')
            else datasets.CLASSIFICATION)
    search_lib.check_config(config, task, 2 if task == datasets.SEGMENTATION else 4)
