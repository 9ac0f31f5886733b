"""glibc malloc settings under which XLA's compiled CPU steps stop page-faulting.

Every execution of a compiled step allocates one temporary buffer for the batch's
activations (tens to hundreds of MiB) and frees it at the end. glibc serves a block that
big with a fresh mmap, also from the per-thread arenas of XLA's worker threads, and returns
it with munmap, so each step touched its whole working set as new pages: 47,000 minor page
faults (184 MiB zeroed by the kernel) per step of benchmarks' sep network at 32 px, which
made the step 1.6-2x slower (benchmarks/RESULTS.md). With one heap that keeps freed memory,
steps reuse the same pages. The cost: while a candidate trains, the process keeps its peak
heap instead of handing it back between steps; `release_free_memory` hands the free part
back between candidates.

`nas/__init__.py` applies them when the package is imported, before JAX starts its CPU
client: a thread picks its arena on its first allocation, so they must come first.
They are for CPU training: where an accelerator plugin for JAX is installed (the step's
activations then live in device memory) and JAX_PLATFORMS does not ask for the CPU, glibc's
defaults stay, but for executor workers told to use the CPU (`executors.prepare_worker`).
MEDNAS_KEEP_FREED_MEMORY=0 leaves them everywhere (to measure the difference).
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
import sys

# mallopt parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_SETTINGS = (
    (_M_ARENA_MAX, 1),  # every thread allocates from the main heap, which never mmaps...
    (_M_MMAP_MAX, 0),  # ...not even for big blocks,
    (_M_TRIM_THRESHOLD, 2**31 - 1),  # and keeps up to 2 GiB freed at its top.
)


# JAX's accelerator plugins, by module name.
_ACCELERATOR_PLUGINS = ('jax_cuda12_plugin', 'jax_cuda13_plugin', 'jax_rocm60_plugin',
                        'jax_rocm7_plugin', 'libtpu')


def _trains_on_cpu() -> bool:
  platforms = os.environ.get('JAX_PLATFORMS', '')
  if platforms:
    return platforms.split(',')[0].strip() == 'cpu'
  return not any(importlib.util.find_spec(name) for name in _ACCELERATOR_PLUGINS)


def _libc_function(name: str):
  """A glibc function, or None where the C library is not glibc (musl has no mallopt)."""
  if not sys.platform.startswith('linux'):
    return None
  return getattr(ctypes.CDLL(None), name, None)


def keep_freed_memory() -> bool:
  """Applies the settings; False where they are off, JAX trains on an accelerator, or the C
  library is not glibc."""
  choice = os.environ.get('MEDNAS_KEEP_FREED_MEMORY', '1')
  if choice not in ('0', '1'):
    raise ValueError(f'MEDNAS_KEEP_FREED_MEMORY={choice!r}: set it to 1 (the default) or 0')
  mallopt = _libc_function('mallopt')
  if choice == '0' or mallopt is None or not _trains_on_cpu():
    return False
  return all(mallopt(parameter, value) == 1 for parameter, value in _SETTINGS)


def release_free_memory() -> None:
  """Returns the heap's free pages to the system (between candidates, whose steps differ)."""
  malloc_trim = _libc_function('malloc_trim')
  if malloc_trim is not None:
    malloc_trim(0)
