r"""Single convolution layers, forward + backward: XLA, MedNAS's conv, and PyTorch, side by side.

  python -m benchmarks.conv_layers [--out_dir=benchmarks/out] [--repeats=7]

For each layer (regular and depthwise 3x3 and 5x5, dilated, at batch 64) it times one jitted
forward and backward pass of `lax.conv_general_dilated` compiled with XLA's default options
and with MedNAS's (`models.compiler`: YNNPACK off), of `models.layers.conv` (which takes
the shifted-slices path for depthwise convolutions on CPU) and of `torch.nn.Conv2d` in
channels-last layout, alternating them within one run because this machine is noisy. It also
times MedNAS's conv and PyTorch's pass by pass (forward, input gradient, kernel gradient), to
show where a gap lies. PyTorch is a benchmark-only dependency: `pip install -r
benchmarks/requirements.txt`. Writes conv_layers.json and conv_layers.md with the median
seconds and the ratios to PyTorch.
"""
from __future__ import annotations

import os
import platform
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import results as bench_results
from models import compiler
from models import layers

_OUT_DIR = flags.DEFINE_string('out_dir', 'benchmarks/out', 'Where results are written.')
_REPEATS = flags.DEFINE_integer('repeats', 7, 'Timed repetitions of each layer.')

# (name, image size, in channels, out channels, kernel, dilation, depthwise)
LAYERS = (
    ('conv3x3 16->16', 64, 16, 16, 3, 1, False),
    ('conv3x3 32->32', 64, 32, 32, 3, 1, False),
    ('conv3x3 64->64', 32, 64, 64, 3, 1, False),
    ('conv3x3 128->128', 16, 128, 128, 3, 1, False),
    ('conv3x3 d2 32->32', 32, 32, 32, 3, 2, False),
    ('depthwise3x3 32', 64, 32, 32, 3, 1, True),
    ('depthwise3x3 64', 32, 64, 64, 3, 1, True),
    ('depthwise5x5 d2 64', 32, 64, 64, 5, 2, True),
)
BATCH = 64
PASSES = ('forward', 'input_grad', 'kernel_grad')


def _seconds(run) -> float:
  start = time.perf_counter()
  run()
  return time.perf_counter() - start


def _jax_runner(apply, x, kernel, options):
  step = jax.jit(jax.grad(lambda x, k: jnp.sum(apply(x, k) ** 2), argnums=(0, 1)),
                 compiler_options=options)
  return _blocking(step, x, kernel)


def _blocking(step, *args):
  return lambda: jax.block_until_ready(step(*args))


def _jax_pass_runners(apply, x, kernel, options) -> dict:
  """Forward, input gradient and kernel gradient, each jitted alone; the convolution is
  linear, so XLA drops the forward from the gradients' programs."""
  cotangent = jnp.ones_like(apply(x, kernel))
  steps = {
      'forward': jax.jit(lambda x, k, g: apply(x, k), compiler_options=options),
      'input_grad': jax.jit(lambda x, k, g: jax.vjp(lambda x: apply(x, k), x)[1](g)[0],
                            compiler_options=options),
      'kernel_grad': jax.jit(lambda x, k, g: jax.vjp(lambda k: apply(x, k), k)[1](g)[0],
                             compiler_options=options),
  }
  return {name: _blocking(step, x, kernel, cotangent) for name, step in steps.items()}


def _torch_runners(size, cin, cout, k, dilation, depthwise) -> dict:
  """Forward + backward as `torch.nn.Conv2d` trains, and each pass alone."""
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  conv = dict(padding=dilation * (k // 2), dilation=dilation, groups=cin if depthwise else 1)
  layer = torch.nn.Conv2d(cin, cout, k, bias=False, **conv)
  layer = layer.to(memory_format=torch.channels_last)
  x = torch.randn(BATCH, cin, size, size).to(memory_format=torch.channels_last)
  x.requires_grad_()
  cotangent = torch.ones(BATCH, cout, size, size).to(memory_format=torch.channels_last)
  weight = layer.weight.detach()

  def train():
    layer.zero_grad()
    layer(x).pow(2).sum().backward()

  def forward():
    with torch.no_grad():
      layer(x)
  return {
      'torch': train,
      'torch_forward': forward,
      'torch_input_grad': lambda: torch.nn.grad.conv2d_input(x.shape, weight, cotangent, **conv),
      'torch_kernel_grad': lambda: torch.nn.grad.conv2d_weight(x.detach(), weight.shape,
                                                               cotangent, **conv),
  }


def measure(repeats: int) -> list[dict]:
  rows = []
  options = compiler.compiler_options()
  for name, size, cin, cout, k, dilation, depthwise in LAYERS:
    x = jax.random.normal(jax.random.key(0), (BATCH, size, size, cin))
    groups = cin if depthwise else 1
    kernel = jax.random.normal(jax.random.key(1), (k, k, cin // groups, cout)) * 0.1
    module = layers.conv(cout, k, dilation=dilation, groups=groups)

    def xla(x, w):
      return jax.lax.conv_general_dilated(
          x, w, (1, 1), 'SAME', rhs_dilation=(dilation, dilation),
          dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=groups)

    def mednas(x, w):
      return module.apply({'params': {'kernel': w}}, x)

    passes = _jax_pass_runners(mednas, x, kernel, options)
    runners = {
        'xla_default': _jax_runner(xla, x, kernel, None),
        'xla_conv': _jax_runner(xla, x, kernel, options),
        'mednas_conv': _jax_runner(mednas, x, kernel, options),
        **{f'mednas_{name}': run for name, run in passes.items()},
        **_torch_runners(size, cin, cout, k, dilation, depthwise),
    }
    for run in runners.values():
      run()  # compile and warm up
    times = {key: [] for key in runners}
    for _ in range(repeats):  # alternate, so that machine noise hits all alike
      for key, run in runners.items():
        times[key].append(_seconds(run))
    row = {'layer': name, 'size': size, **{k: float(np.median(v)) for k, v in times.items()}}
    row['xla_default/torch'] = row['xla_default'] / row['torch']
    row['xla/torch'] = row['xla_conv'] / row['torch']
    row['mednas/torch'] = row['mednas_conv'] / row['torch']
    for name in PASSES:
      row[f'{name} mednas/torch'] = row[f'mednas_{name}'] / row[f'torch_{name}']
    rows.append(row)
    print(row)
  return rows


def main(argv: list[str]) -> None:
  del argv
  rows = measure(_REPEATS.value)
  meta = {'machine': platform.processor() or platform.machine(), 'cpus': os.cpu_count(),
          'jax': jax.__version__, 'backend': jax.default_backend(), 'batch': BATCH}
  lines = ['| layer | px | XLA default s | XLA, MedNAS options s | MedNAS conv s | PyTorch s | '
           'XLA default/PyTorch | XLA options/PyTorch | MedNAS/PyTorch |',
           '|---|---|---|---|---|---|---|---|---|']
  lines += [f'| {r["layer"]} | {r["size"]} | {r["xla_default"]:.4f} | {r["xla_conv"]:.4f} | '
            f'{r["mednas_conv"]:.4f} | {r["torch"]:.4f} | {r["xla_default/torch"]:.2f} | '
            f'{r["xla/torch"]:.2f} | {r["mednas/torch"]:.2f} |' for r in rows]
  lines += ['', 'By pass, MedNAS conv / PyTorch seconds (ratio):', '',
            '| layer | px | ' + ' | '.join(PASSES) + ' |', '|---|---|---|---|---|']
  lines += [f'| {r["layer"]} | {r["size"]} | ' + ' | '.join(
      f'{r[f"mednas_{p}"]:.4f} / {r[f"torch_{p}"]:.4f} ({r[f"{p} mednas/torch"]:.2f})'
      for p in PASSES) + ' |' for r in rows]
  bench_results.write(_OUT_DIR.value, 'conv_layers', {'meta': meta, 'rows': rows},
                      '\n'.join(lines))


if __name__ == '__main__':
  app.run(main)
