r"""Soak test of crash safety: SIGKILL a search at random moments, resume it, count losses.

  python -m benchmarks.soak_resume [--kills=20] [--seed=0] [--budget=16] [--out_dir=benchmarks/out]

Runs the `pso_synthetic` smoke search (`--budget` candidates) once uninterrupted (the
reference), then again while killing it with SIGKILL `--kills` times at seeded random
moments, each time resuming with `--resume`. Prints and writes (JSON and Markdown) how many
reference trials and final evaluations were lost, duplicated or changed in the
killed-and-resumed search: all must be 0.
"""
from __future__ import annotations

import os
import tempfile
import time

from absl import app
from absl import flags

from benchmarks import kill_resume
from benchmarks import results as bench_results

_KILLS = flags.DEFINE_integer('kills', 20, 'How many times to SIGKILL the search.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seeds the kill moments.')
_BUDGET = flags.DEFINE_integer('budget', 16, 'Candidates of the smoke search.')
_OUT_DIR = flags.DEFINE_string('out_dir', 'benchmarks/out', 'Where results are written.')


def main(argv: list[str]) -> None:
  del argv
  args = kill_resume.SEARCH_ARGS + (f'--config.search.budget={_BUDGET.value}',)
  with tempfile.TemporaryDirectory() as tmp:
    env = dict(os.environ, MEDNAS_CACHE_DIR=os.path.join(tmp, 'cache'))
    start, reference_start = time.monotonic(), time.time()
    kill_resume.run_search(os.path.join(tmp, 'reference'), env, args)
    reference_seconds = time.monotonic() - start
    reference = kill_resume.outcome(os.path.join(tmp, 'reference'))
    rows = len(reference['trials']) + len(reference['final'])
    # Kills paced, by rows and by time, so that well under half of the reference's work
    # (resumed runs compile less: the cache is warm) happens between them: they all land,
    # spread over the search, many between rows.
    startup = kill_resume.startup_seconds(os.path.join(tmp, 'reference'), reference_start)
    work = (reference_seconds - startup) / (2.5 * _KILLS.value)
    start = time.monotonic()
    landed = kill_resume.kill_and_resume(
        os.path.join(tmp, 'killed'), env, _KILLS.value, _SEED.value,
        rows_per_kill=rows / (2.5 * _KILLS.value), args=args, seconds_per_kill=(startup, work))
    result = {'kills_requested': _KILLS.value, 'kills_landed': landed,
              'reference_trials': len(reference['trials']),
              'reference_finals': len(reference['final']),
              'reference_seconds': round(reference_seconds, 1),
              'killed_and_resumed_seconds': round(time.monotonic() - start, 1),
              **kill_resume.compare(reference,
                                    kill_resume.outcome(os.path.join(tmp, 'killed')))}
  table = ['| measure | value |', '|---|---|'] + [f'| {k} | {v} |' for k, v in result.items()]
  bench_results.write(_OUT_DIR.value, 'soak_resume', result, '\n'.join(table))


if __name__ == '__main__':
  app.run(main)
