r"""Compile time: XLA CPU optimisation levels side by side, and the compile share of searches.

  python -m benchmarks.compile_time [--networks=plain,sep] [--size=64] [--levels=1,2]
  python -m benchmarks.compile_time --stores=runs/quick,runs/cpu

Without --stores, for each network of benchmarks.networks and each LLVM optimisation level of
the training step (MedNAS uses 1 on CPU, XLA's default is 2) it measures, in a fresh process
each so that no cache helps: the seconds to compile the initialisation, the augmentation
(`step_inputs`, which a search compiles once per image shape) and the training step (ahead of
time, so that no step runs inside the timing) and the median step seconds; a level is only
worth having if the step stays as fast. With --stores it reads finished searches and reports
compile seconds against the candidates' whole training time (issue 7's target: at most 10% at
the quick preset). Writes compile_time.json and .md.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

from absl import app
from absl import flags

from benchmarks import results as bench_results
from benchmarks import networks

_NETWORKS = flags.DEFINE_list('networks', None, 'Subset of benchmarks.networks (default: all).')
_SIZE = flags.DEFINE_integer('size', 64, 'Image size in pixels.')
_LEVELS = flags.DEFINE_list('levels', ['1', '2'], 'LLVM optimisation levels of the step.')
_STEPS = flags.DEFINE_integer('steps', 3, 'Timed steps per measurement.')
_STORES = flags.DEFINE_list('stores', None, 'Search workdirs to report the compile share of.')
_OUT_DIR = flags.DEFINE_string('out_dir', 'benchmarks/out', 'Where results are written.')
_WORKER = flags.DEFINE_string('worker', None, 'Internal: network,level of a child process.')


def _worker(network: str, level: int, size: int, steps: int) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from datasets import augment  # pylint: disable=g-import-not-at-top
  from nas import train  # pylint: disable=g-import-not-at-top
  compiled = train.compiled_steps(networks.NETWORKS[network](), networks.CLASSES,
                                  'float32', 'adamw', 0.9, augment.AugmentConfig(),
                                  cpu_optimization_level=level)
  batch, hparams = networks.random_batch(size), networks.step_hparams()
  start = time.perf_counter()
  state = jax.block_until_ready(
      compiled.init(jax.random.key(0, impl='rbg'), (1, size, size, networks.CHANNELS)))
  init_seconds = time.perf_counter() - start
  start = time.perf_counter()
  inputs = compiled.step_inputs.lower(batch, jax.random.key(0), hparams).compile()
  inputs_compile_seconds = time.perf_counter() - start
  images, targets = inputs(batch, jax.random.key(0), hparams)
  start = time.perf_counter()
  compiled.train_step.lower(state, images, targets, jax.random.key(0), hparams).compile()
  step_compile_seconds = time.perf_counter() - start
  # Both compiles above fill jit's caches, so the steps below compile nothing.
  state, _ = compiled.train(state, batch, jax.random.key(0), hparams)  # warm up
  _, step_seconds = networks.median_step_seconds(compiled, state, batch, hparams, steps)
  return {'init_s': init_seconds, 'inputs_compile_s': inputs_compile_seconds,
          'step_compile_s': step_compile_seconds, 'step_s': step_seconds}


def _measure(network: str, level: int) -> dict:
  command = [sys.executable, '-m', 'benchmarks.compile_time', f'--worker={network},{level}',
             f'--size={_SIZE.value}', f'--steps={_STEPS.value}']
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run(command, cwd=root, capture_output=True, text=True)
  if out.returncode:
    return {'error': out.stderr.strip().splitlines()[-1]}
  return json.loads(out.stdout.strip().splitlines()[-1])


def _levels_table(rows: list[dict]) -> str:
  levels = sorted({level for r in rows for level in r['levels']})
  head = ' | '.join(f'L{v} init s | L{v} augment compile s | L{v} step compile s | L{v} step s'
                    for v in levels)
  lines = [f'| network | px | {head} |', '|---|---|' + '---|' * (4 * len(levels))]
  for r in rows:
    cells = []
    for v in levels:
      m = r['levels'][v]
      cells += (['error'] * 4 if 'error' in m else
                [f'{m["init_s"]:.1f}', f'{m["inputs_compile_s"]:.1f}',
                 f'{m["step_compile_s"]:.1f}', f'{m["step_s"]:.3f}'])
    lines.append(f'| {r["network"]} | {r["size"]} | {" | ".join(cells)} |')
  return '\n'.join(lines)


def _store_rows(workdirs: list[str]) -> list[dict]:
  from nas import records  # pylint: disable=g-import-not-at-top
  from nas import report  # pylint: disable=g-import-not-at-top
  rows = []
  for workdir in workdirs:
    trained = [t for t in report.load_run(workdir).trials if t.status == records.OK]
    compile_s = sum(t.compile_seconds for t in trained)
    train_s = sum(t.train_seconds for t in trained)  # compiling included
    rows.append({'workdir': workdir, 'trained': len(trained), 'compile_s': compile_s,
                 'train_s': train_s, 'share': compile_s / train_s if train_s else 0.0,
                 'per_candidate_s': compile_s / len(trained) if trained else 0.0})
  return rows


def _stores_table(rows: list[dict]) -> str:
  lines = ['| search | trained | compile s | train s (compile included) | compile share | '
           'per candidate |', '|---|---|---|---|---|---|']
  lines += [f'| `{r["workdir"]}` | {r["trained"]} | {r["compile_s"]:.1f} | {r["train_s"]:.1f} | '
            f'{r["share"]:.1%} | {r["per_candidate_s"]:.1f} s |' for r in rows]
  return '\n'.join(lines)


def main(argv: list[str]) -> None:
  del argv
  if _WORKER.value:
    network, level = _WORKER.value.split(',')
    print(json.dumps(_worker(network, int(level), _SIZE.value, _STEPS.value)))
    return
  meta = {'machine': platform.machine(), 'cpus': os.cpu_count(), 'size': _SIZE.value,
          'batch': networks.BATCH}
  if _STORES.value:
    rows = _store_rows(_STORES.value)
    bench_results.write(_OUT_DIR.value, 'compile_share', {'meta': meta, 'rows': rows},
                        _stores_table(rows))
    return
  rows = []
  for network in _NETWORKS.value or list(networks.NETWORKS):
    levels = {int(v): _measure(network, int(v)) for v in _LEVELS.value}
    rows.append({'network': network, 'size': _SIZE.value, 'levels': levels})
    print(_levels_table(rows[-1:]).splitlines()[-1], flush=True)
  bench_results.write(_OUT_DIR.value, 'compile_time', {'meta': meta, 'rows': rows},
                      _levels_table(rows))


if __name__ == '__main__':
  app.run(main)
