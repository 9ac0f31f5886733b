"""The experiment registry: every module in this package with a `get_config(preset)`.

Adding an experiment is adding a file; `python launch.py --list_experiments` shows them.
`common` and modules named with a leading underscore hold what several experiments share.
"""
from __future__ import annotations

import ast
import difflib
import importlib
import pkgutil
from typing import Sequence

import ml_collections

from experiments.common import PRESETS
from nas import errors
from nas import executors


def names() -> list[str]:
  found = []
  for module in pkgutil.iter_modules(__path__):
    if module.name != 'common' and not module.name.startswith('_'):
      found.append(module.name)
  return sorted(found)


def get_config(name: str, preset: str,
               overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The config of experiment `name` at `preset`, with `a.b.c=value` overrides applied."""
  known = names()
  if name not in known:
    near = difflib.get_close_matches(name, known, n=3)
    hint = f'did you mean {" or ".join(near)}? ' if near else ''
    raise errors.UserError(f'unknown experiment {name!r}; {hint}'
                           'list them with: python launch.py --list_experiments')
  if preset not in PRESETS:
    raise errors.UserError(f'unknown preset {preset!r}; choose one of {", ".join(PRESETS)}')
  config = importlib.import_module(f'experiments.{name}').get_config(preset)
  for override in overrides:
    apply_override(config, override)
  return config


# Dicts whose keys are whatever the code they go to reads (a dataset loader, a Nevergrad
# optimizer, SLURM), so an override may add a key to them: --config.data.options.root=PATH.
_OPEN_DICTS = ('data.options', 'search.options', 'executor.slurm.additional_parameters')


def apply_override(config: ml_collections.ConfigDict, override: str) -> None:
  """Sets one `path.to.field=value`; the value must fit the field's existing type.

  A key new to one of `_OPEN_DICTS` is added, its value read as a Python literal where it
  is one (3, 0.5, True) and as a string otherwise (a path).
  """
  path, sep, text = override.partition('=')
  if not sep:
    raise errors.UserError(f'override {override!r} has no value; write --config.{path}=VALUE')
  *parents, leaf = path.split('.')
  node = config
  for depth, key in enumerate(parents + [leaf]):
    if depth == len(parents) and '.'.join(parents) in _OPEN_DICTS and key not in node:
      node[leaf] = _literal_or_string(text)
      return
    if not isinstance(node, ml_collections.ConfigDict) or key not in node:
      prefix = '.'.join(parents[:depth])
      keys = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      near = difflib.get_close_matches(key, keys, n=3)
      hint = f'; did you mean {" or ".join(near)}?' if near else ''
      raise errors.UserError(
          f'unknown config field {path!r}: {prefix or "the config"} has no {key!r}{hint}')
    if key != leaf:
      node = node[key]
  current = node[leaf]
  value = _parse(text, current)
  try:
    node[leaf] = value
  except TypeError as e:
    raise errors.UserError(
        f'--config.{path}={text}: expected {type(current).__name__}, got '
        f'{type(value).__name__}') from e


# Where and over how many processes the candidates train: the same candidates, scored alike
# but for the order of float sums (tests/test_executors.py and test_distributed.py compare
# such searches with a one-process one).
_WHERE_IT_RUNS = ('executor.', 'distributed.')

# How often training state is saved; no result depends on it.
_SAVING_ONLY = frozenset({'train.checkpoint_every_epochs', 'final.checkpoint_every_epochs'})

# Config fields added after searches were stored, each at the value that does what the code
# did before the field existed (as stored configs, JSON, hold it): a stored config without one
# reads as having that value, so such a search resumes on a later version (the search still
# checks each replayed candidate).
FIELDS_ADDED_LATER = {
    'space.stage_widths': [],
    'train.class_balanced': False,
    'search.shared_start': False,
    'search.new_networks': False,
    'search.training_seeds': 1,
    'final.patience': 0,
}


def config_differences(then: dict, now: dict, shown: int = 5) -> list[str]:
  """'field: then -> now' for the first `shown` config fields that would change the trials.

  `executor.*` and `distributed.*` say only where candidates train, which leaves the trials
  unchanged, so a search may continue on another executor or other hosts (each process
  with its own `distributed.process_id`, the coordinator at a new address); so do the
  checkpoint intervals (`_SAVING_ONLY`): a resumed training ends as an unbroken one. A larger
  `search.budget` extends the search: the stored trials are its first candidates, which the
  search checks one by one as it replays them (launch.py refuses it for an optimizer whose
  asks depend on the budget: `nas.optimizers.EXTENSIBLE`). `then` lacking a field of
  `FIELDS_ADDED_LATER` had that field's earlier value. The exception to the executor's
  freedom: an async search asks as many candidates at a time as its executor has slots
  (`nas.executors.slots`, named as 'executor slots of an async search: then -> now').
  """
  flat_then, flat_now = {**FIELDS_ADDED_LATER, **_flatten(then)}, _flatten(now)
  missing = '(absent)'
  changed = [f'{key}: {flat_then.get(key, missing)} -> {flat_now.get(key, missing)}'
             for key in sorted(flat_then.keys() | flat_now.keys())
             if not key.startswith(_WHERE_IT_RUNS) and key not in _SAVING_ONLY
             and flat_then.get(key, missing) != flat_now.get(key, missing)
             and not _extends_the_search(key, flat_then, flat_now)]
  slots_then, slots_now = executors.slots(then['executor']), executors.slots(now['executor'])
  if flat_now.get('search.mode') == 'async' and slots_then != slots_now:
    changed.append(f'executor slots of an async search: {slots_then} -> {slots_now}')
  return changed[:shown] + ([f'{len(changed) - shown} more'] if len(changed) > shown else [])


def _extends_the_search(key: str, flat_then: dict, flat_now: dict) -> bool:
  return (key == 'search.budget' and key in flat_then and key in flat_now
          and flat_now[key] > flat_then[key])


def _flatten(config: dict, prefix: str = '') -> dict[str, object]:
  flat = {}
  for key, value in config.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def _literal_or_string(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _parse(text: str, current):
  """Strings stay strings; everything else is a Python literal (numbers, tuples, bools)."""
  if isinstance(current, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    raise errors.UserError(
        f'cannot read {text!r} as {type(current).__name__}; write a Python literal '
        'such as 3, 0.5, True or (16, 32)') from None
  if isinstance(current, tuple) and isinstance(value, list):
    value = tuple(value)
  if isinstance(current, tuple) and not isinstance(value, tuple):
    value = (value,)
  return value
