r"""Evaluations per hour of a search, run once per executor (or mode, or source tree) side by side.

  python -m benchmarks.search_throughput [--experiment=pso_synthetic --preset=smoke]
      [--executors=local,process,dask] [--modes=sync] [--workers=2] [--config=a.b=v,...]
      [--trees=/path/to/old/checkout,.] [--variants=executor.compile_ahead=0,...] [--nowarm_up]

Runs `launch.py` once for each tree x executor x mode x variant (one extra override each, e.g.
`executor.compile_ahead=0`) in a fresh workdir, one after the other. The runs of a tree share
one compilation cache, by default warmed by an untimed first run so that no run pays for
compiles another already made; `--nowarm_up` gives every run a cold cache of its own, so that
it counts compiling, as a first search does. `--trees` compares source trees, e.g. a `git
worktree` of an older commit ("before") and this one ("after"). Evaluations per hour =
candidates trained / seconds from launch to the last stored trial, so start-up and data
loading count, as they do for a user; the final stage does not. Compile share = the trials'
compile seconds / their train seconds (compiling included); what the local executor compiled
ahead in the background (`executor.compile_ahead`) is not in it, so compare such runs by
evaluations per hour. Peak memory = the largest resident set of the search's process or of
any one of its worker processes (not their sum). Writes search_throughput.json and .md.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

from absl import app
from absl import flags

from benchmarks import kill_resume
from benchmarks import results as bench_results

_EXPERIMENT = flags.DEFINE_string('experiment', 'pso_synthetic', 'Experiment to run.')
_PRESET = flags.DEFINE_string('preset', 'smoke', 'Its preset.')
_EXECUTORS = flags.DEFINE_list('executors', ['local', 'process', 'dask'], 'executor.kind values.')
_MODES = flags.DEFINE_list('modes', ['sync'], 'search.mode values.')
_WORKERS = flags.DEFINE_integer('workers', 2, 'executor.workers of process and dask.')
_CONFIG = flags.DEFINE_list('config', [], 'Extra overrides for every run, as field=value.')
_TREES = flags.DEFINE_list('trees', ['.'], 'Source trees whose launch.py runs the searches.')
_VARIANTS = flags.DEFINE_list('variants', [''], 'One extra field=value override per variant; '
                              'empty: none.')
_WARM_UP = flags.DEFINE_boolean('warm_up', True,
                                'Warm each tree\'s compilation cache with an untimed run.')
_OUT_DIR = flags.DEFINE_string('out_dir', 'benchmarks/out', 'Where results are written.')


def _trained(workdir: str) -> tuple[int, float, float, float]:
  """(candidates trained, last trial's unix time, their summed train seconds, compiling
  included, and their summed compile seconds)."""
  with kill_resume.read_only(workdir) as db:
    return db.execute(
        "SELECT count(*), max(created), sum(train_seconds), sum(compile_seconds) FROM trials "
        "WHERE status IN ('ok', 'failed')").fetchone()


def _run(workdir: str, env: dict[str, str], overrides: list[str], tree: str) -> dict:
  args = [f'--experiment={_EXPERIMENT.value}', f'--preset={_PRESET.value}']
  args += [f'--config.{o}' for o in _CONFIG.value + overrides]
  start = time.time()
  peak_mb = kill_resume.run_search(workdir, env, tuple(args), os.path.abspath(tree))
  trained, last, busy, compiling = _trained(workdir)
  seconds = last - start
  return {'trained': trained, 'search_seconds': seconds, 'wall_seconds': time.time() - start,
          'evals_per_hour': 3600 * trained / seconds, 'busy_seconds': busy,
          'compile_seconds': compiling, 'compile_share': compiling / busy, 'peak_mb': peak_mb}


def main(argv: list[str]) -> None:
  del argv
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for t, tree in enumerate(_TREES.value):
      env = dict(os.environ, MEDNAS_CACHE_DIR=os.path.join(tmp, f'cache{t}'))
      if _WARM_UP.value:
        _run(os.path.join(tmp, f'warm-up{t}'), env, [], tree)
      for mode in _MODES.value:
        for kind in _EXECUTORS.value:
          for v, variant in enumerate(_VARIANTS.value):
            overrides = [f'executor.kind={kind}', f'executor.workers={_WORKERS.value}',
                         f'search.mode={mode}'] + ([variant] if variant else [])
            name = f'{t}-{kind}-{mode}-{v}'
            if not _WARM_UP.value:
              env = dict(env, MEDNAS_CACHE_DIR=os.path.join(tmp, f'cache-{name}'))
            row = _run(os.path.join(tmp, name), env, overrides, tree)
            row.update(tree=tree, executor=kind, mode=mode, variant=variant,
                       workers=1 if kind == 'local' else _WORKERS.value)
            rows.append(row)
            print(row, flush=True)
  base = rows[0]['evals_per_hour']
  summary = {'experiment': _EXPERIMENT.value, 'preset': _PRESET.value, 'config': _CONFIG.value,
             'warm_up': _WARM_UP.value,
             'cpus': os.cpu_count(), 'python': sys.version.split()[0], 'rows': rows}
  cache = 'warm' if _WARM_UP.value else 'cold (compiling counts)'
  lines = [f'`{_EXPERIMENT.value}` at `{_PRESET.value}` {" ".join(_CONFIG.value)} on '
           f'{os.cpu_count()} CPUs; {cache} compilation cache.', '',
           '| tree | executor | mode | variant | workers | trained | search s | evals/hour '
           '| vs first | compile share | peak memory |',
           '|---|---|---|---|---|---|---|---|---|---|---|']
  lines += [f'| `{r["tree"]}` | {r["executor"]} | {r["mode"]} | {r["variant"] or "-"} | '
            f'{r["workers"]} | {r["trained"]} | {r["search_seconds"]:.0f} | '
            f'{r["evals_per_hour"]:.0f} | '
            f'{r["evals_per_hour"] / base:.2f}x | {r["compile_share"]:.1%} | '
            f'{r["peak_mb"] / 1024:.2f} GB |' for r in rows]
  bench_results.write(_OUT_DIR.value, 'search_throughput', summary, '\n'.join(lines))


if __name__ == '__main__':
  app.run(main)
