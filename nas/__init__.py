"""The search: space, optimizers, trainer, executors, store, report."""
import sys

from nas import host_memory

# Before anything starts JAX's CPU client (nas/host_memory.py says why).
try:
  host_memory.keep_freed_memory()
except ValueError as e:
  # Every entry point (launch.py, executors' workers, benchmarks) stops with one line.
  print(f'error: {e}', file=sys.stderr)
  sys.exit(2)
