"""Executors run candidate evaluations; the search only sees `submit(fn, *args) -> Future`."""
from __future__ import annotations

import concurrent.futures
import functools
from typing import Any, Callable

import ml_collections

from nas import errors


class _Deferred(concurrent.futures.Future):
  """A future that runs its call when its result is first asked for."""

  def __init__(self, call: Callable[[], Any]):
    super().__init__()
    self._call = call

  def result(self, timeout: float | None = None) -> Any:
    if not self.done():
      try:
        self.set_result(self._call())
      except Exception as e:  # pylint: disable=broad-except
        self.set_exception(e)
    return super().result(timeout)


class LocalExecutor:
  """In-process, one candidate at a time, each run when the search collects its result.

  Deferring the run lets the search store every result the moment it exists, so a kill
  loses at most the one candidate in training.
  """

  def submit(self, fn: Callable[..., Any], *args, **kwargs) -> concurrent.futures.Future:
    return _Deferred(functools.partial(fn, *args, **kwargs))

  def shutdown(self) -> None:
    pass


EXECUTORS = {'local': LocalExecutor}


def make(config: ml_collections.ConfigDict):
  if config.kind not in EXECUTORS:
    raise errors.UserError(f'unknown executor.kind {config.kind!r}; '
                           f'choose one of {", ".join(EXECUTORS)}')
  return EXECUTORS[config.kind]()
