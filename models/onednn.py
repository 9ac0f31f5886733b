"""Convolutions by oneDNN on CPU, as XLA FFI custom calls (source: onednn_conv.cc).

XLA's CPU convolutions train 1.2-5x slower than oneDNN's, pass for pass, and its grouped
(depthwise) kernel gradients 8x (benchmarks/RESULTS.md). The oneDNN wheels of
requirements.txt (CPU, GNU OpenMP) bring the library and its headers; the custom calls are
compiled with g++ on first use, once per source and version, into the MedNAS cache
(MEDNAS_CACHE_DIR, default ~/.cache/mednas). Without g++ or oneDNN, `available()` is False
and models.layers.Conv keeps XLA's convolution.

`conv` computes exactly what lax.conv_general_dilated does for NHWC float32 images and HWIO
kernels, forward and both gradients (tests/test_models_fast_conv.py).
"""
from __future__ import annotations

import contextlib
import contextvars
import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from datasets import cache

_SOURCE = os.path.join(os.path.dirname(__file__), 'onednn_conv.cc')
_HEADER = os.path.join(sys.prefix, 'include', 'oneapi', 'dnnl', 'dnnl.hpp')
_LIBRARY_DIR = os.path.join(sys.prefix, 'lib')
_TARGETS = {'forward': 'MednasConvForward', 'input_grad': 'MednasConvInputGrad',
            'kernel_grad': 'MednasConvKernelGrad'}


def _build(path: str) -> None:
  """Compiles the custom calls into `path` (atomically: parallel builders may race)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with tempfile.TemporaryDirectory(dir=os.path.dirname(path)) as tmp:
    out = os.path.join(tmp, os.path.basename(path))
    subprocess.run(
        ['g++', '-O2', '-std=c++17', '-shared', '-fPIC', _SOURCE, '-o', out,
         '-isystem', os.path.join(sys.prefix, 'include'), '-isystem', jax.ffi.include_dir(),
         f'-L{_LIBRARY_DIR}', '-ldnnl', f'-Wl,-rpath,{_LIBRARY_DIR}'],
        check=True, capture_output=True, text=True)
    os.replace(out, path)


_LOCK = threading.Lock()  # executors trace candidates on background threads too


def available() -> bool:
  """Whether the oneDNN custom calls are built, loaded and registered for CPU."""
  with _LOCK:
    return _load()


@functools.cache
def _load() -> bool:
  if not (os.path.exists(_HEADER) and shutil.which('g++')):
    logging.info('oneDNN convolutions off: no oneDNN headers at %s or no g++', _HEADER)
    return False
  digest = hashlib.sha256()
  for path in (_SOURCE, _HEADER):
    with open(path, 'rb') as f:
      digest.update(f.read())
  digest.update(jax.__version__.encode())
  path = os.path.join(cache.cache_dir(), 'onednn', f'conv-{digest.hexdigest()[:16]}.so')
  # Between calls, oneDNN's OpenMP threads would spin on the cores that XLA's own threads
  # need (a resnet18 step at 64 px took 3.4 s instead of 2.6 s); libgomp reads this when it
  # loads.
  os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
  try:
    if not os.path.exists(path):
      _build(path)
    library = ctypes.CDLL(path)
  except (OSError, subprocess.CalledProcessError) as e:
    detail = getattr(e, 'stderr', '') or str(e)
    logging.warning('oneDNN convolutions off: building or loading %s failed: %s', path,
                    detail[-2000:])
    return False
  for name, symbol in _TARGETS.items():
    jax.ffi.register_ffi_target(f'mednas_onednn_{name}',
                                jax.ffi.pycapsule(getattr(library, symbol)), platform='cpu')
  return True


_OFF = contextvars.ContextVar('mednas_onednn_off', default=False)


@contextlib.contextmanager
def off() -> Iterator[None]:
  """Traces inside use XLA's convolutions: XLA's cost analysis counts no FLOPs in a custom
  call, so models.counting traces its forward pass in here."""
  token = _OFF.set(True)
  try:
    yield
  finally:
    _OFF.reset(token)


def usable(dtype) -> bool:
  """Whether `conv` serves a Conv in `dtype` now: float32, one device (a custom call cannot
  be split over a sharded batch, so XLA would gather it), built, not inside `off()`, and not
  switched off with MEDNAS_CPU_CONV=xla (to compare the two, as benchmarks/train_step.py
  does)."""
  choice = os.environ.get('MEDNAS_CPU_CONV', 'onednn')
  if choice not in ('onednn', 'xla'):
    raise ValueError(f'MEDNAS_CPU_CONV={choice!r}: set it to onednn (the default) or xla')
  return (jnp.dtype(dtype) == jnp.float32 and jax.device_count() == 1 and choice == 'onednn'
          and not _OFF.get() and available())


def _call(name: str, a: jax.Array, b: jax.Array, out_shape: Sequence[int], strides,
          dilation, padding, groups: int) -> jax.Array:
  return jax.ffi.ffi_call(f'mednas_onednn_{name}',
                          jax.ShapeDtypeStruct(tuple(out_shape), jnp.float32))(
                              a, b, strides=np.asarray(strides, np.int64),
                              dilation=np.asarray(dilation, np.int64),
                              padding=np.asarray(padding, np.int64).reshape(-1),
                              groups=np.int64(groups))


def conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
         padding: str | Sequence[tuple[int, int]], dilation: tuple[int, int],
         groups: int) -> jax.Array:
  """lax.conv_general_dilated(x, kernel, strides, padding, rhs_dilation=dilation,
  dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=groups), float32."""
  if isinstance(padding, str):
    spans = [d * (k - 1) + 1 for d, k in zip(dilation, kernel.shape[:2])]
    padding = jax.lax.padtype_to_pads(x.shape[1:3], spans, strides, padding)
  return _conv(x, kernel, tuple(strides), tuple(map(tuple, padding)), tuple(dilation), groups)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv(x, kernel, strides, padding, dilation, groups):
  out_shape = jax.eval_shape(
      functools.partial(jax.lax.conv_general_dilated, window_strides=strides, padding=padding,
                        rhs_dilation=dilation, dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                        feature_group_count=groups), x, kernel).shape
  return _call('forward', x, kernel, out_shape, strides, dilation, padding, groups)


def _conv_forward(x, kernel, strides, padding, dilation, groups):
  return _conv(x, kernel, strides, padding, dilation, groups), (x, kernel)


def _conv_backward(strides, padding, dilation, groups, residuals, grad):
  x, kernel = residuals
  attrs = (strides, dilation, padding, groups)
  return (_call('input_grad', grad, kernel, x.shape, *attrs),
          _call('kernel_grad', x, grad, kernel.shape, *attrs))


_conv.defvjp(_conv_forward, _conv_backward)
