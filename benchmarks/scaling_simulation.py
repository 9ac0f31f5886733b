r"""Worker utilisation of synchronous against asynchronous search, simulated from real trials.

  python -m benchmarks.scaling_simulation --workdir=runs/pso-cpu [--workers=8,64,512]

Draws candidate training times from the trials a real search stored (their `train_seconds`)
and simulates N workers evaluating `--generations` x N candidates: synchronously (a batch of
N starts together and the next waits for the slowest) and asynchronously (a worker takes a
new candidate the moment it finishes). Utilisation = busy worker-seconds / (N x makespan).
Writes scaling_simulation.json and .md.
"""
from __future__ import annotations

import heapq
import sqlite3

from absl import app
from absl import flags
import numpy as np

from benchmarks import results as bench_results

_WORKDIR = flags.DEFINE_string('workdir', None, 'A search workdir whose trials give the times.')
_WORKERS = flags.DEFINE_list('workers', ['8', '64', '512'], 'Worker counts to simulate.')
_GENERATIONS = flags.DEFINE_integer('generations', 10, 'Candidates per worker.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seeds the draws.')
_OUT_DIR = flags.DEFINE_string('out_dir', 'benchmarks/out', 'Where results are written.')


def candidate_seconds(workdir: str) -> np.ndarray:
  """Training seconds of every candidate the search trained (ok or failed)."""
  with sqlite3.connect(f'file:{workdir}/trials.sqlite?mode=ro', uri=True) as db:
    rows = db.execute("SELECT train_seconds FROM trials WHERE status IN ('ok', 'failed')")
    return np.array([r[0] for r in rows], dtype=float)


def synchronous(durations: np.ndarray, workers: int) -> float:
  """Makespan when each batch of `workers` waits for its slowest candidate."""
  return float(sum(batch.max() for batch in np.split(durations, len(durations) // workers)))


def asynchronous(durations: np.ndarray, workers: int) -> float:
  """Makespan when a free worker takes the next candidate at once."""
  free_at = [0.0] * workers
  for duration in durations:
    heapq.heappush(free_at, heapq.heappop(free_at) + duration)
  return max(free_at)


def simulate(samples: np.ndarray, workers: int, generations: int, seed: int) -> dict:
  durations = np.random.default_rng(seed).choice(samples, size=workers * generations)
  busy = durations.sum()
  result = {'workers': workers, 'candidates': len(durations)}
  for mode, makespan in (('sync', synchronous(durations, workers)),
                         ('async', asynchronous(durations, workers))):
    result[f'{mode}_hours'] = makespan / 3600
    result[f'{mode}_utilisation'] = busy / (workers * makespan)
  result['async_speedup'] = result['sync_hours'] / result['async_hours']
  return result


def main(argv: list[str]) -> None:
  del argv
  samples = candidate_seconds(_WORKDIR.value)
  rows = [simulate(samples, int(n), _GENERATIONS.value, _SEED.value) for n in _WORKERS.value]
  summary = {'workdir': _WORKDIR.value, 'trained_candidates': len(samples),
             'seconds_median': float(np.median(samples)),
             'seconds_p90': float(np.percentile(samples, 90)),
             'seconds_max': float(samples.max()), 'rows': rows}
  lines = [f'Candidate times from {len(samples)} trained candidates of {_WORKDIR.value}: '
           f'median {summary["seconds_median"]:.0f} s, p90 {summary["seconds_p90"]:.0f} s, '
           f'max {summary["seconds_max"]:.0f} s.', '',
           '| workers | candidates | sync hours | sync utilisation | async hours | '
           'async utilisation | async speed-up |', '|---|---|---|---|---|---|---|']
  lines += [f'| {r["workers"]} | {r["candidates"]} | {r["sync_hours"]:.2f} | '
            f'{r["sync_utilisation"]:.0%} | {r["async_hours"]:.2f} | '
            f'{r["async_utilisation"]:.0%} | {r["async_speedup"]:.2f}x |' for r in rows]
  bench_results.write(_OUT_DIR.value, 'scaling_simulation', summary, '\n'.join(lines))


if __name__ == '__main__':
  app.run(main)
