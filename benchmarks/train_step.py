r"""Training-step cost of fixed networks: MedNAS (JAX) against the same network in PyTorch.

  python -m benchmarks.train_step [--sizes=32,64,128] [--networks=plain,sep] [--steps=5]
      [--repeats=2]

For every network and image size (batch 64, 3 channels) it measures, each in a fresh process
so that peak memory and compilation are the network's own: compile seconds (JAX), the median
step seconds, images per second and peak resident memory; then the JAX/PyTorch step-time
ratio, and by default the same JAX step with XLA's own convolutions instead of oneDNN's
(models.onednn). JAX runs `nas.train`'s real train step (augmentation, AdamW, BatchNorm
state); PyTorch runs the twin network of `benchmarks.torch_reference` with AdamW,
channels-last, as it comes, and with the malloc settings that MedNAS applies to itself
(nas/host_memory.py), which speed PyTorch up too. Needs `pip install -r
benchmarks/requirements.txt`. Writes train_step.json and train_step.md.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time

from absl import app
from absl import flags

from benchmarks import results as bench_results
from benchmarks import networks
from benchmarks.networks import BATCH, CHANNELS, CLASSES, NETWORKS
from models.genotype import Genotype

_SIZES = flags.DEFINE_list('sizes', ['32', '64', '128'], 'Image sizes in pixels.')
_NETWORKS = flags.DEFINE_list('networks', None, 'Subset of NETWORKS (default: all).')
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed steps per measurement.')
_REPEATS = flags.DEFINE_integer('repeats', 1, 'Measure every row this many times, the '
                                'columns alternating, and keep each column\'s fastest run: '
                                'this machine has slow spells of a minute or more.')
_OUT_DIR = flags.DEFINE_string('out_dir', 'benchmarks/out', 'Where results are written.')
_WORKER = flags.DEFINE_string('worker', None, 'Internal: jax or torch, in a child process.')
_NETWORK = flags.DEFINE_string('network', None, 'Internal: the network of a worker.')
_SIZE = flags.DEFINE_integer('size', None, 'Internal: the image size of a worker.')
_XLA_CONVS = flags.DEFINE_bool('xla_convs', True, 'Also time JAX with XLA\'s own CPU '
                               'convolutions (MEDNAS_CPU_CONV=xla) beside oneDNN\'s.')
_TORCH_MALLOC = flags.DEFINE_bool('torch_malloc', True, 'Also time PyTorch with MedNAS\'s '
                                  'malloc settings (MEDNAS_KEEP_FREED_MEMORY=1).')

def _peak_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _jax_worker(genotype: Genotype, size: int, steps: int) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from datasets import augment  # pylint: disable=g-import-not-at-top
  from models import counting  # pylint: disable=g-import-not-at-top
  from models import onednn  # pylint: disable=g-import-not-at-top
  from nas import train  # pylint: disable=g-import-not-at-top
  compiled = train.compiled_steps(genotype, CLASSES, 'float32', 'adamw', 0.9,
                             augment.AugmentConfig())
  batch, hparams = networks.random_batch(size), networks.step_hparams()
  start = time.perf_counter()
  state = compiled.init(jax.random.key(0, impl='rbg'), (1, size, size, CHANNELS))
  state, loss = compiled.train(state, batch, jax.random.key(0), hparams)
  jax.block_until_ready(loss)
  compile_seconds = time.perf_counter() - start
  state, step_seconds = networks.median_step_seconds(compiled, state, batch, hparams, steps)
  return {'compile_s': compile_seconds, 'step_s': step_seconds,
          'params': counting.param_count(state.params),
          'convs': 'onednn' if onednn.usable(jnp.float32) else 'xla'}


def _torch_worker(genotype: Genotype, size: int, steps: int) -> dict:
  # Importing nas applies its malloc settings unless MEDNAS_KEEP_FREED_MEMORY=0.
  import nas  # pylint: disable=g-import-not-at-top,unused-import
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_reference  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  model = torch_reference.Network(genotype, CLASSES, CHANNELS).to(
      memory_format=torch.channels_last)
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
  images = torch.randint(0, 256, (BATCH, CHANNELS, size, size), dtype=torch.uint8)
  labels = torch.randint(0, CLASSES, (BATCH,))

  def step():
    x = (images.float() / 255).contiguous(memory_format=torch.channels_last)
    x = torch.where(torch.rand(BATCH, 1, 1, 1) < 0.5, x.flip(3), x)  # the flip of augment
    loss = torch.nn.functional.cross_entropy(model(x), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

  step()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  params = sum(p.numel() for p in model.parameters())
  return {'step_s': float(np.median(times)), 'params': params}


def _measure(framework: str, network: str, size: int, steps: int, **env: str) -> dict:
  """One worker process; `env` overrides e.g. MEDNAS_CPU_CONV."""
  command = [sys.executable, '-m', 'benchmarks.train_step', f'--worker={framework}',
             f'--network={network}', f'--size={size}', f'--steps={steps}']
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run(command, cwd=root, capture_output=True, text=True,
                       env={**os.environ, **env})
  if out.returncode:
    return {'error': out.stderr.strip().splitlines()[-1]}
  return json.loads(out.stdout.strip().splitlines()[-1])


def _step(m: dict | None) -> str:
  """A worker's step seconds; '-' where not measured."""
  if not m:
    return '-'
  return f'error: {m["error"]}' if 'error' in m else f'{m["step_s"]:.3f}'


def _ratio(top: dict | None, bottom: dict | None) -> str:
  if not top or not bottom or 'error' in top or 'error' in bottom:
    return '-'
  return f'{top["step_s"] / bottom["step_s"]:.2f}'


def _table(rows: list[dict]) -> str:
  lines = ['| network | px | params | JAX compile s | JAX step s | JAX img/s | JAX peak MiB | '
           'PyTorch step s | PyTorch img/s | PyTorch peak MiB | JAX/PyTorch | '
           'JAX convs | JAX, XLA convs step s | XLA convs/PyTorch | '
           'PyTorch, MedNAS malloc step s | JAX/PyTorch, both MedNAS malloc |',
           '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    j, t = r['jax'], r['torch']
    if 'error' in j or 'error' in t:
      lines.append(f'| {r["network"]} | {r["size"]} | error: {j.get("error") or t.get("error")} |')
      continue
    params = (f'{t["params"]:,}' if t['params'] == j['params']
              else f'JAX {j["params"]:,} / PyTorch {t["params"]:,}')
    lines.append(
        f'| {r["network"]} | {r["size"]} | {params} | {j["compile_s"]:.1f} | '
        f'{j["step_s"]:.3f} | {BATCH / j["step_s"]:.0f} | {j["peak_mib"]:.0f} | '
        f'{t["step_s"]:.3f} | {BATCH / t["step_s"]:.0f} | {t["peak_mib"]:.0f} | '
        f'{j["step_s"] / t["step_s"]:.2f} | {j["convs"]} | '
        f'{_step(r.get("jax_xla"))} | {_ratio(r.get("jax_xla"), t)} | '
        f'{_step(r.get("torch_malloc"))} | {_ratio(j, r.get("torch_malloc"))} |')
  return '\n'.join(lines)


def main(argv: list[str]) -> None:
  del argv
  if _WORKER.value:
    worker = {'jax': _jax_worker, 'torch': _torch_worker}[_WORKER.value]
    result = worker(NETWORKS[_NETWORK.value](), _SIZE.value, _STEPS.value)
    print(json.dumps({**result, 'peak_mib': _peak_mib()}))
    return
  columns = {'jax': ('jax', {}),
             'torch': ('torch', {'MEDNAS_KEEP_FREED_MEMORY': '0'})}
  if _XLA_CONVS.value:
    columns['jax_xla'] = ('jax', {'MEDNAS_CPU_CONV': 'xla'})
  if _TORCH_MALLOC.value:
    columns['torch_malloc'] = ('torch', {'MEDNAS_KEEP_FREED_MEMORY': '1'})
  rows = []
  for network in _NETWORKS.value or list(NETWORKS):
    for size in map(int, _SIZES.value):
      row = {'network': network, 'size': size}
      for _ in range(_REPEATS.value):
        for column, (framework, env) in columns.items():
          result = _measure(framework, network, size, _STEPS.value, **env)
          best = row.get(column)
          if not best or 'error' in best or result.get('step_s', float('inf')) < best['step_s']:
            row[column] = result
      rows.append(row)
      print(_table([row]).splitlines()[-1], flush=True)
  meta = {'machine': platform.machine(), 'cpus': os.cpu_count(), 'batch': BATCH,
          'channels': CHANNELS, 'steps': _STEPS.value, 'repeats': _REPEATS.value}
  bench_results.write(_OUT_DIR.value, 'train_step', {'meta': meta, 'rows': rows}, _table(rows))


if __name__ == '__main__':
  app.run(main)
