"""The trial store: records round-trip, keys are unique, readers see only whole trials."""
import shutil
import sqlite3

import pytest

from nas import errors
from nas import records
from nas.store import TrialStore


def _trial(ask_index, fidelity=1, status=records.OK, loss=0.2):
  return records.Trial(
      ask_index=ask_index, fidelity=fidelity, genotype_hash=f'h{ask_index}', genotype='{}',
      description='d', status=status, loss=loss, metrics={'accuracy': 1 - loss},
      history=({'epoch': 1, 'train_loss': 0.5},), params=10, flops=20)


def test_trials_round_trip_and_lookup(tmp_path):
  with TrialStore.create(str(tmp_path)) as store:
    stored = store.add_trial(_trial(0))
    store.add_trial(_trial(1, status=records.FAILED, loss=1.0))
    assert stored.id == 1 and stored.created > 0
    assert store.trial_at(0, 1) == stored
    assert store.trial_at(0, 3) is None
    assert store.trained('h1', 1).status == records.FAILED
    assert [t.ask_index for t in store.trials()] == [0, 1]
  with TrialStore(str(tmp_path)) as reopened:
    assert reopened.trials()[0] == stored


def test_a_trial_key_is_stored_once(tmp_path):
  with TrialStore.create(str(tmp_path)) as store:
    store.add_trial(_trial(0))
    with pytest.raises(sqlite3.IntegrityError):
      store.add_trial(_trial(0))
    assert len(store.trials()) == 1


def test_a_reader_sees_the_store_while_it_is_written(tmp_path):
  with TrialStore.create(str(tmp_path)) as writer, TrialStore(str(tmp_path)) as reader:
    writer.add_trial(_trial(0))
    assert len(reader.trials()) == 1
    writer.add_trial(_trial(1))
    assert len(reader.trials()) == 2


def test_opening_a_directory_that_is_not_a_search(tmp_path):
  with pytest.raises(errors.UserError, match='not a search workdir'):
    TrialStore(str(tmp_path))


def test_creation_is_atomic_and_holds_the_meta(tmp_path):
  # A kill during an earlier creation leaves only a partial file, which does not count.
  (tmp_path / 'trials.sqlite.partial').write_bytes(b'half written')
  with pytest.raises(errors.UserError):
    TrialStore(str(tmp_path))
  with TrialStore.create(str(tmp_path), experiment='e', config='{}') as store:
    assert store.meta() == {'experiment': 'e', 'config': '{}'}
  assert not (tmp_path / 'trials.sqlite.partial').exists()


def test_a_copy_replaces_a_killed_process_store_whole(tmp_path):
  source_dir, host_dir = tmp_path / 'main', tmp_path / 'host'
  with TrialStore.create(str(source_dir), experiment='e') as source:
    source.add_trial(_trial(0))
    # The host's store as a killed process leaves it: its last trial only in the WAL.
    with TrialStore.create(str(host_dir), experiment='e') as host:
      host.add_trial(_trial(0))
      host.add_trial(_trial(1))
      killed = tmp_path / 'killed'
      killed.mkdir()
      for name in ('trials.sqlite', 'trials.sqlite-wal'):
        shutil.copy(host_dir / name, killed / name)
    assert (killed / 'trials.sqlite-wal').stat().st_size > 0
    source.copy_to(str(killed))
    with TrialStore(str(killed)) as copy:
      assert copy.trials() == source.trials() and copy.meta() == source.meta()
