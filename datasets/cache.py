"""On-disk cache of decoded arrays: where it lives, how entries are keyed, atomic writes."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator

from absl import logging
import numpy as np


def cache_dir(path: str | None = None) -> str:
  """`path`, else env MEDNAS_CACHE_DIR, else ~/.cache/mednas."""
  return os.path.abspath(os.path.expanduser(
      path or os.environ.get('MEDNAS_CACHE_DIR') or '~/.cache/mednas'))


def digest(parts: Iterable[str | bytes]) -> str:
  """A short hex key over `parts` (order matters)."""
  h = hashlib.sha256()
  for part in parts:
    h.update(part.encode() if isinstance(part, str) else part)
    h.update(b'\0')
  return h.hexdigest()[:20]


def load_npz(path: str) -> dict[str, np.ndarray] | None:
  """The arrays stored at `path`, or None when there is no entry."""
  try:
    with np.load(path, allow_pickle=False) as f:
      return {k: f[k] for k in f.files}
  except FileNotFoundError:
    return None


def save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
  """Writes atomically: a kill at any moment leaves the old entry or the new one.

  A cache that cannot be written (read-only home, full disk) only costs speed,
  so failures are logged, not raised.
  """
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix='.tmp')
    try:
      with os.fdopen(fd, 'wb') as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, path)
    except BaseException:
      os.unlink(tmp)
      raise
  except OSError as e:
    logging.warning('Could not write cache %s: %s', path, e)


@contextlib.contextmanager
def exclusive(path: str) -> Iterator[None]:
  """Holds an exclusive lock on the file `path` (created if needed).

  Worker processes that start on a cold cache then build an entry once, in turn,
  instead of racing (TFDS fails when two builds finish into one directory).
  """
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'a') as f:
    fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
    yield
