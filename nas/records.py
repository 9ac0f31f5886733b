"""Records that cross module boundaries: what training returns and what the store keeps."""
from __future__ import annotations

import dataclasses
from typing import Any

# Trial statuses. `rejected` and `duplicate` trials cost no training.
OK = 'ok'
FAILED = 'failed'
REJECTED = 'rejected'
DUPLICATE = 'duplicate'
STATUSES = (OK, FAILED, REJECTED, DUPLICATE)

# Key, in a final result's test metrics, of the metrics on the test images that have no near
# duplicate in the training split.
DEDUPLICATED = 'deduplicated'


@dataclasses.dataclass(frozen=True)
class TrainResult:
  """What `nas.train.train_and_evaluate` returns for one genotype at one fidelity."""
  status: str                       # OK or FAILED
  metrics: dict[str, Any]           # validation metrics of the final (or best) epoch
  history: tuple[dict[str, float], ...]  # per-epoch train loss and validation metrics
  epochs_run: int
  train_seconds: float
  compile_seconds: float
  error: str = ''


@dataclasses.dataclass(frozen=True)
class Trial:
  """One row of the trial store: one candidate at one fidelity."""
  ask_index: int          # position in the optimizer's ask sequence (replay key)
  fidelity: int           # epochs
  genotype_hash: str
  genotype: str           # JSON
  description: str
  status: str
  loss: float             # what the optimizer was told for this trial
  metrics: dict[str, Any]
  history: tuple[dict[str, float], ...] = ()
  params: int = 0
  flops: int = 0
  seed: int = 0
  generation: int = 0
  train_seconds: float = 0.0
  compile_seconds: float = 0.0
  error: str = ''
  source_trial: int | None = None   # for duplicates: the id of the trial that was trained
  id: int | None = None             # assigned by the store
  created: float = 0.0              # unix time, assigned by the store


@dataclasses.dataclass(frozen=True)
class FinalResult:
  """A top genotype retrained at full fidelity with one seed and tested once."""
  genotype_hash: str
  genotype: str
  description: str
  seed: int
  epochs: int
  val_metrics: dict[str, Any]
  test_metrics: dict[str, Any]
  params: int = 0
  flops: int = 0
  train_seconds: float = 0.0
  checkpoint: str = ''  # relative to the workdir, so that a workdir can be moved or copied
  id: int | None = None
  created: float = 0.0


@dataclasses.dataclass(frozen=True)
class EnsembleResult:
  """A retrained genotype's final seeds tested together: the mean of their probabilities."""
  genotype_hash: str
  seeds: tuple[int, ...]
  test_metrics: dict[str, Any]
  id: int | None = None
  created: float = 0.0
