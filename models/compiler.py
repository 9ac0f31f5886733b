"""XLA compiler options for every jitted function of the project.

On CPU, jaxlib 0.10's default sends convolutions to YNNPACK, which trains a 3x3 convolution
2-2.5x slower than XLA's own (Eigen) convolution: forward, input and kernel gradients alike
(benchmarks/conv_layers.py). An empty YNN fusion list turns that off. LLVM optimisation
level 1 compiles a training step 30-40% faster than the default 2 and runs it as fast,
because convolutions and matmuls are library calls (benchmarks/compile_time.py); one-off
initialisation needs no optimisation at all. Accelerators keep their defaults.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax

PURPOSES = ('step', 'init')


def compiler_options(purpose: str = 'step', cpu_optimization_level: int = 1
                     ) -> dict[str, Any] | None:
  """`jax.jit(..., compiler_options=...)` for a function run many times ('step') or once
  ('init'); None off CPU."""
  if purpose not in PURPOSES:
    raise ValueError(f'unknown purpose {purpose!r}; choose one of {", ".join(PURPOSES)}')
  if jax.default_backend() != 'cpu':
    return None
  return {'xla_cpu_experimental_ynn_fusion_type': '',
          'xla_backend_optimization_level': 0 if purpose == 'init' else cpu_optimization_level}


def jit_on_first_call(fun: Callable, purpose: str = 'step', **jit_kwargs) -> Callable:
  """`jax.jit(fun, **jit_kwargs)` with `compiler_options(purpose)`, built at its first call.

  The options depend on the backend, which must not start at import: jax.distributed.initialize
  and the platform flags come first.
  """
  @functools.cache
  def jitted():
    return jax.jit(fun, compiler_options=compiler_options(purpose), **jit_kwargs)

  @functools.wraps(fun)
  def call(*args, **kwargs):
    return jitted()(*args, **kwargs)
  return call
