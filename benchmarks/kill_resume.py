"""Kill a search with SIGKILL at seeded moments, resume it, and compare with an unbroken one.

Used by the crash-safety test and by `benchmarks.soak_resume`.
"""
from __future__ import annotations

import collections
import math
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from typing import IO


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEARCH_ARGS = ('--experiment=pso_synthetic', '--preset=smoke')


def _launch(workdir: str, resume: bool, env: dict[str, str], args=SEARCH_ARGS, root=ROOT
            ) -> tuple[subprocess.Popen, IO[str]]:
  """The started search and the file its log goes to."""
  command = [sys.executable, 'launch.py', f'--workdir={workdir}']
  command += ['--resume'] if resume else list(args)
  # A file, not a pipe: nothing reads while waiting for rows to kill at, and a search that
  # filled a pipe would block on its next log line and never store another row.
  log = tempfile.TemporaryFile('w+')
  return subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.DEVNULL,
                          stderr=log, text=True), log


def _wait(process: subprocess.Popen, log: IO[str], what: str) -> None:
  """Waits for the search to end; raises with its log's end when it failed."""
  with log:
    if process.wait():
      log.seek(0)
      raise RuntimeError(f'{what} failed: {log.read()[-3000:]}')


def read_only(workdir: str) -> sqlite3.Connection:
  """The search's store, opened so that reading it never changes it."""
  return sqlite3.connect(f'file:{workdir}/trials.sqlite?mode=ro', uri=True)


def count_rows(workdir: str) -> int:
  try:
    with read_only(workdir) as db:
      return sum(db.execute(f'SELECT count(*) FROM {t}').fetchone()[0]
                 for t in ('trials', 'final'))
  except sqlite3.Error:
    return 0


def outcome(workdir: str) -> dict[str, list]:
  """Every trial, final evaluation and ensemble of a search, as comparable rows."""
  with read_only(workdir) as db:
    has_ensembles = db.execute(
        "SELECT 1 FROM sqlite_master WHERE name = 'ensembles'").fetchone()
    return {
        'trials': db.execute('SELECT ask_index, fidelity, genotype_hash, status, loss '
                             'FROM trials ORDER BY ask_index, fidelity').fetchall(),
        'final': db.execute('SELECT genotype_hash, seed, test_metrics FROM final '
                            'ORDER BY genotype_hash, seed').fetchall(),
        'ensembles': db.execute('SELECT genotype_hash, seeds, test_metrics FROM ensembles '
                                'ORDER BY genotype_hash').fetchall() if has_ensembles else [],
    }


def startup_seconds(workdir: str, started: float) -> float:
  """Seconds from `started` (unix time) to the store's creation: imports and data loading."""
  with read_only(workdir) as db:
    started_store = db.execute("SELECT value FROM meta WHERE key = 'started'").fetchone()[0]
  return float(started_store) - started


def run_search(workdir: str, env: dict[str, str], args=SEARCH_ARGS, root: str = ROOT) -> float:
  """Runs a search to its end with the launch.py of the source tree `root`; returns its
  peak resident memory in MB."""
  process, log = _launch(workdir, False, env, args, root)
  _, status, usage = os.wait4(process.pid, 0)  # Popen.wait gives no resource usage
  process.returncode = os.waitstatus_to_exitcode(status)
  _wait(process, log, 'search')
  return usage.ru_maxrss / 1024


def kill_and_resume(workdir: str, env: dict[str, str], kills: int, seed: int,
                    rows_per_kill: float, args=SEARCH_ARGS,
                    seconds_per_kill: tuple[float, float] | None = None) -> int:
  """Runs the search, SIGKILLs it `kills` times at seeded moments, resumes until it ends.

  A kill comes once the store has grown by about `rows_per_kill` rows since the last one,
  plus a random delay of up to a second, so that it lands in training, in the final stage
  or while writing. With `seconds_per_kill=(startup, mean)` it comes at the latest
  `startup` plus up to 2 x `mean` seconds after the (re)start, so that kills also land
  between rows: more kills than rows, in compiling and in the middle of training.
  Returns how many kills landed before the search ended.
  """
  rng = random.Random(seed)
  landed = 0
  for attempt in range(kills + 1):
    started = os.path.exists(os.path.join(workdir, 'trials.sqlite'))
    process, log = _launch(workdir, started, env, args)
    if attempt < kills:
      target = count_rows(workdir) + rng.uniform(0.5, 2 * rows_per_kill)
      deadline = math.inf
      if seconds_per_kill:
        startup, mean = seconds_per_kill
        deadline = time.monotonic() + startup + rng.uniform(0.0, 2 * mean)
      while (process.poll() is None and count_rows(workdir) < target and
             time.monotonic() < deadline):
        time.sleep(0.05)
      time.sleep(rng.uniform(0.0, 1.0))
      if process.poll() is None:
        process.kill()
        process.wait()
        log.close()
        landed += 1
        continue
    _wait(process, log, 'resumed search')
    return landed
  return landed


def compare(reference: dict[str, list], resumed: dict[str, list]) -> dict[str, int]:
  """Lost, duplicated and changed rows of the resumed search against the reference."""
  counts = {}
  for table, key_width in (('trials', 2), ('final', 2), ('ensembles', 1)):
    ref = {row[:key_width]: row for row in reference[table]}
    seen = collections.Counter(row[:key_width] for row in resumed[table])
    got = {row[:key_width]: row for row in resumed[table]}
    counts[f'{table}_lost'] = sum(1 for key in ref if key not in got)
    counts[f'{table}_duplicated'] = sum(n - 1 for n in seen.values() if n > 1)
    counts[f'{table}_changed'] = sum(1 for key, row in ref.items()
                                     if key in got and got[key] != row)
    counts[f'{table}_extra'] = sum(1 for key in got if key not in ref)
  return counts
