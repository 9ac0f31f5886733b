"""The trial store: one SQLite file per search, every change in a transaction.

SQLite in WAL mode lets a report read while a search writes, and a transaction either lands
whole or not at all, so killing a search at any moment loses at most the trials in flight.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import time
from typing import Any, Callable, Iterator

from nas import errors
from nas import records

FILENAME = 'trials.sqlite'

# Added after stores were first written: created on first use in stores that lack it.
_ENSEMBLES_SCHEMA = """
CREATE TABLE IF NOT EXISTS ensembles (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  genotype_hash TEXT NOT NULL UNIQUE,
  seeds TEXT NOT NULL,
  test_metrics TEXT NOT NULL,
  created REAL NOT NULL
);
"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  ask_index INTEGER NOT NULL,
  fidelity INTEGER NOT NULL,
  genotype_hash TEXT NOT NULL,
  genotype TEXT NOT NULL,
  description TEXT NOT NULL,
  status TEXT NOT NULL,
  loss REAL NOT NULL,
  metrics TEXT NOT NULL,
  history TEXT NOT NULL,
  params INTEGER NOT NULL,
  flops INTEGER NOT NULL,
  seed INTEGER NOT NULL,
  generation INTEGER NOT NULL,
  train_seconds REAL NOT NULL,
  compile_seconds REAL NOT NULL,
  error TEXT NOT NULL,
  source_trial INTEGER,
  created REAL NOT NULL,
  UNIQUE (ask_index, fidelity)
);
CREATE INDEX IF NOT EXISTS trials_by_hash ON trials (genotype_hash, fidelity);
CREATE TABLE IF NOT EXISTS final (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  genotype_hash TEXT NOT NULL,
  genotype TEXT NOT NULL,
  description TEXT NOT NULL,
  seed INTEGER NOT NULL,
  epochs INTEGER NOT NULL,
  val_metrics TEXT NOT NULL,
  test_metrics TEXT NOT NULL,
  params INTEGER NOT NULL,
  flops INTEGER NOT NULL,
  train_seconds REAL NOT NULL,
  checkpoint TEXT NOT NULL,
  created REAL NOT NULL,
  UNIQUE (genotype_hash, seed)
);
""" + _ENSEMBLES_SCHEMA

_JSON_FIELDS = {'metrics', 'history', 'val_metrics', 'test_metrics', 'seeds'}


def _encode(record) -> dict[str, Any]:
  row = dataclasses.asdict(record)
  for key in _JSON_FIELDS & row.keys():
    row[key] = json.dumps(row[key], sort_keys=True)
  row.pop('id')
  row['created'] = time.time()
  return row


def _decode(cls, row: sqlite3.Row):
  values = dict(row)
  for key in _JSON_FIELDS & values.keys():
    values[key] = json.loads(values[key])
  for key in ('history', 'seeds'):
    if key in values:
      values[key] = tuple(values[key])
  return cls(**values)


def _sidecars(path: str) -> tuple[str, str]:
  """An SQLite file's write-ahead log and shared memory index."""
  return path + '-wal', path + '-shm'


def _remove(*paths: str) -> None:
  for path in paths:
    if os.path.exists(path):
      os.remove(path)


def _write_whole(workdir: str, fill: Callable[[sqlite3.Connection], Any]) -> None:
  """Writes `<workdir>/trials.sqlite` through `fill`, so that it appears whole or not at all.

  The file is written aside and renamed over the old one, whose write-ahead log goes first:
  SQLite would replay the old store's pages onto the new file. So no running process may
  have the old store open.
  """
  target = os.path.join(workdir, FILENAME)
  partial = target + '.partial'
  os.makedirs(workdir, exist_ok=True)
  _remove(partial, *_sidecars(partial))
  db = sqlite3.connect(partial, isolation_level=None)
  try:
    fill(db)
  finally:
    db.close()
  _remove(*_sidecars(target))
  os.replace(partial, target)


class TrialStore:
  """All trials and final evaluations of one search, in `<workdir>/trials.sqlite`."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, FILENAME)
    if not os.path.exists(self.path):
      raise errors.UserError(
          f'{workdir} is not a search workdir (no {FILENAME}); '
          'pass the workdir of an earlier search (launch.py without --resume starts a new one)')
    try:
      self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
      self._db.row_factory = sqlite3.Row
      self._db.execute('PRAGMA journal_mode=WAL')
      self._db.execute('PRAGMA synchronous=NORMAL')
      self._db.execute('SELECT count(*) FROM trials').fetchone()
    except (sqlite3.Error, OSError) as e:
      raise errors.UserError(f'cannot open the trial store {self.path}: {e}') from e

  @classmethod
  def create(cls, workdir: str, **meta: str) -> TrialStore:
    """A new store holding `meta`, which appears whole or not at all, even under a kill."""
    def fill(db: sqlite3.Connection) -> None:
      db.executescript(f'BEGIN; {_SCHEMA} COMMIT;')
      db.executemany('INSERT INTO meta (key, value) VALUES (?, ?)', meta.items())

    try:
      _write_whole(workdir, fill)
    except (sqlite3.Error, OSError) as e:
      raise errors.UserError(f'cannot create a search in {workdir}: {e}; '
                             'choose a --workdir you can write to') from e
    return cls(workdir)

  @classmethod
  def open_or_create(cls, workdir: str, **meta: str) -> TrialStore:
    """The store in `workdir`, created holding `meta` if there is none yet."""
    if os.path.exists(os.path.join(workdir, FILENAME)):
      return cls(workdir)
    return cls.create(workdir, **meta)

  @contextlib.contextmanager
  def _transaction(self) -> Iterator[None]:
    self._db.execute('BEGIN IMMEDIATE')
    try:
      yield
    except BaseException:
      self._db.execute('ROLLBACK')
      raise
    self._db.execute('COMMIT')

  def copy_to(self, workdir: str) -> None:
    """A snapshot of this store, read in one transaction, replaces the one in `workdir`.

    No running process may have `workdir`'s store open (see `_write_whole`).
    """
    _write_whole(workdir, self._db.backup)

  def close(self) -> None:
    self._db.close()

  def __enter__(self) -> TrialStore:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  # Metadata: the experiment name and the resolved config of the search (as started, or as
  # last extended to a larger budget).

  def meta(self) -> dict[str, str]:
    return {r['key']: r['value'] for r in self._db.execute('SELECT key, value FROM meta')}

  def update_meta(self, **meta: str) -> None:
    """Replaces these keys together (a search extended to a larger budget)."""
    with self._transaction():
      self._db.executemany('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)', meta.items())

  # Trials.

  def _insert(self, table: str, record, verb: str = 'INSERT'):
    row = _encode(record)
    columns = ', '.join(row)
    marks = ', '.join('?' * len(row))
    with self._transaction():
      cursor = self._db.execute(f'{verb} INTO {table} ({columns}) VALUES ({marks})',
                                tuple(row.values()))
    return dataclasses.replace(record, id=cursor.lastrowid, created=row['created'])

  def add_trial(self, trial: records.Trial) -> records.Trial:
    return self._insert('trials', trial)

  def trial_at(self, ask_index: int, fidelity: int) -> records.Trial | None:
    row = self._db.execute('SELECT * FROM trials WHERE ask_index = ? AND fidelity = ?',
                           (ask_index, fidelity)).fetchone()
    return _decode(records.Trial, row) if row else None

  def trained(self, genotype_hash: str, fidelity: int) -> records.Trial | None:
    """The trial that trained this genotype at this fidelity, if any (ok or failed)."""
    row = self._db.execute(
        'SELECT * FROM trials WHERE genotype_hash = ? AND fidelity = ? AND status IN (?, ?) '
        'ORDER BY id LIMIT 1',
        (genotype_hash, fidelity, records.OK, records.FAILED)).fetchone()
    return _decode(records.Trial, row) if row else None

  def trials(self) -> list[records.Trial]:
    return [_decode(records.Trial, r) for r in self._db.execute('SELECT * FROM trials ORDER BY id')]

  # Final evaluations: retrained top genotypes, tested once.

  def add_final(self, result: records.FinalResult) -> records.FinalResult:
    return self._insert('final', result)

  def final_at(self, genotype_hash: str, seed: int) -> records.FinalResult | None:
    row = self._db.execute('SELECT * FROM final WHERE genotype_hash = ? AND seed = ?',
                           (genotype_hash, seed)).fetchone()
    return _decode(records.FinalResult, row) if row else None

  def finals(self) -> list[records.FinalResult]:
    return [_decode(records.FinalResult, r)
            for r in self._db.execute('SELECT * FROM final ORDER BY id')]

  # Ensembles: each retrained genotype's final seeds tested together.

  def set_ensemble(self, result: records.EnsembleResult) -> records.EnsembleResult:
    """Stores `result`, replacing the genotype's ensemble of fewer seeds, if any."""
    self._db.execute(_ENSEMBLES_SCHEMA)
    return self._insert('ensembles', result, verb='INSERT OR REPLACE')

  def ensembles(self) -> list[records.EnsembleResult]:
    if not self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'ensembles'").fetchone():
      return []  # a store written before ensembles were kept
    return [_decode(records.EnsembleResult, r)
            for r in self._db.execute('SELECT * FROM ensembles ORDER BY id')]
