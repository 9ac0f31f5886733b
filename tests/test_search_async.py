"""The asynchronous search loop: workers never wait for a batch, and its history replays."""
import concurrent.futures
import contextlib
import random
import threading
import time

import pytest

import datasets
import experiments
from models.genotype import Genotype
from nas import executors
from nas import records
from nas import search as search_lib
from nas.store import TrialStore

# The stand-in training never loads data.
_UNUSED_DATA = datasets.Spec('synthetic', '/nonexistent', 16, 1)


class _Threads:
  """A thread pool whose trainings take a random time: they finish out of order."""

  def __init__(self, slots: int):
    self.slots = slots
    self._pool = concurrent.futures.ThreadPoolExecutor(slots)

  def submit(self, fn, *args, **kwargs):
    return self._pool.submit(fn, *args, **kwargs)

  def batch(self):
    return contextlib.nullcontext()

  def shutdown(self):
    self._pool.shutdown()


class _FakeTraining:
  """Accuracy from the genotype; records every training and how many ran at once."""

  def __init__(self, max_delay_s: float = 0.0):
    self.calls: list[str] = []
    self.running = self.most_running = 0
    self._lock = threading.Lock()
    self._rng = random.Random(0)
    self._max_delay_s = max_delay_s

  def __call__(self, genotype: Genotype, fidelity: int, ctx, generation) -> records.TrainResult:
    del ctx, generation
    with self._lock:
      self.calls.append(genotype.hash)
      self.running += 1
      self.most_running = max(self.most_running, self.running)
      delay = self._rng.uniform(0, self._max_delay_s)
    time.sleep(delay)
    with self._lock:
      self.running -= 1
    size = sum(s.num_cells * s.width for s in genotype.canonical().stages)
    accuracy = min(0.99, 0.3 + 0.4 * (size % 97) / 97 + 0.05 * fidelity)
    return records.TrainResult(records.OK, {'accuracy': accuracy}, (), fidelity, delay, 0.0)


def _config(**search):
  config = experiments.get_config('pso_synthetic', 'smoke')
  config.search.update(search)
  config.search.fidelity.rungs = ()
  return config


def _run(config, workdir, executor):
  with TrialStore.open_or_create(str(workdir)) as store:
    return search_lib.Search(config, _UNUSED_DATA, 4, store, executor).run()


def _key(trials):
  return [(t.ask_index, t.fidelity, t.genotype_hash, t.status, t.loss) for t in trials]


def test_async_with_one_slot_is_sync_with_population_one(tmp_path, monkeypatch):
  monkeypatch.setattr(search_lib, 'evaluate_candidate', _FakeTraining())
  sync = _run(_config(optimizer='de', budget=12, population=1), tmp_path / 'sync',
              executors.LocalExecutor())
  async_ = _run(_config(optimizer='de', budget=12, population=1, mode='async'),
                tmp_path / 'async', executors.LocalExecutor())
  assert _key(async_) == _key(sync)


@pytest.mark.parametrize('optimizer', ['pso', 'de'])
def test_async_search_keeps_workers_busy_and_replays_its_history(tmp_path, monkeypatch,
                                                                  optimizer):
  training = _FakeTraining(max_delay_s=0.02)
  monkeypatch.setattr(search_lib, 'evaluate_candidate', training)
  config = _config(optimizer=optimizer, budget=24, mode='async')
  trials = _run(config, tmp_path, _Threads(slots=3))
  assert sorted(t.ask_index for t in trials) == list(range(24))
  assert training.most_running == 3
  assert len(training.calls) == len(set(training.calls))  # no genotype trained twice
  trained = [t for t in trials if t.status == records.OK]
  assert {t.genotype_hash for t in trained} == set(training.calls)

  # Resuming the finished search (with as many workers, as --resume does) replays the stored
  # completion order: it asks the same candidates again (or it would refuse: 'does not
  # replay') and trains nothing.
  training.calls.clear()
  assert _key(_run(config, tmp_path, _Threads(slots=3))) == _key(trials)
  assert not training.calls


def test_async_search_resumes_after_a_kill(tmp_path, monkeypatch):
  training = _FakeTraining(max_delay_s=0.02)
  monkeypatch.setattr(search_lib, 'evaluate_candidate', training)
  config = _config(optimizer='pso', budget=24, mode='async')
  _run(config, tmp_path, _Threads(slots=3))
  with TrialStore(str(tmp_path)) as store:
    # A kill after the tenth stored trial: the rows after it were never written.
    kept = _key(store.trials()[:10])
    store._db.execute('DELETE FROM trials WHERE id > 10')
  training.calls.clear()
  resumed = _run(config, tmp_path, _Threads(slots=3))
  assert _key(resumed)[:10] == kept
  assert sorted(t.ask_index for t in resumed) == list(range(24))
  assert len(training.calls) == len(set(training.calls))


def test_async_refuses_several_rungs(tmp_path):
  config = _config(mode='async')
  config.search.fidelity.rungs = (1, 3)
  with TrialStore.create(str(tmp_path)) as store, pytest.raises(
      search_lib.errors.UserError, match='one fidelity'):
    search_lib.Search(config, _UNUSED_DATA, 4, store, executors.LocalExecutor())
