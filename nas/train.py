"""Training and evaluation of one genotype: optax, a pure jitted train step, data parallel.

One loop for every task: a Task (Classification or Segmentation, chosen by the genotype's
kind) supplies the step's inputs and targets, its loss, the probabilities the evaluation
step returns and the metrics computed from them on the host; the loop, checkpoints and
early stopping are shared.

Modelled on Flax's examples/imagenet/train.py. The batch is sharded over every device
along the `data` axis of a mesh and the state is replicated, so one device is plain jit and
many devices, of one host or of several (`nas.distributed`), are data parallel with the
same code. Learning rate, weight decay, label
smoothing and augmentation strength enter the step as traced scalars: genotypes that differ
only in training hyperparameters share one compiled step. The augmentation is jitted apart
from the step, so it compiles once per image shape rather than once per architecture.
"""
from __future__ import annotations

import dataclasses
import functools
import gc
import math
import os
import time
import traceback
from typing import Any, Callable, ClassVar, Protocol

from absl import logging
from flax.training import train_state
import jax
from jax.sharding import NamedSharding, PartitionSpec
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

import datasets
from datasets import augment as augment_lib
from datasets import pipeline
import models
from models import compiler
from models import saved
from models.genotype import AnyGenotype, Genotype, SegGenotype, TrainGenes
from nas import distributed
from nas import host_memory
from nas import losses
from nas import metrics as metrics_lib
from nas import records
from nas import seg_metrics

Variables = dict[str, Any]


class TrainState(train_state.TrainState):
  batch_stats: Any


class CandidateTimeout(Exception):
  """The candidate ran past `train.time_limit_s`."""


class NonFiniteLoss(Exception):
  """The training loss became NaN or infinite."""


class Task(Protocol):
  """What a task trains and scores differently. Frozen dataclasses: a jit static argument."""
  fitness_metrics: ClassVar[tuple[str, ...]]  # may be search.metric: fitness = 1 - metric
  history_metrics: ClassVar[tuple[str, ...]]  # validation metrics kept for every epoch

  def inputs(self, key: jax.Array, batch: dict[str, jax.Array], hparams: dict[str, jax.Array],
             aug_config: augment_lib.AugmentConfig, num_classes: int
             ) -> tuple[jax.Array, jax.Array]:
    """(augmented float images, targets) of a training batch, inside the step."""

  def loss(self, logits: jax.Array, targets: jax.Array,
           hparams: dict[str, jax.Array]) -> jax.Array:
    """The mean training loss of a batch, from float32 logits."""

  def probabilities(self, logits: jax.Array) -> jax.Array:
    """What the evaluation step returns to the host."""

  def score(self, split: datasets.Split, probs: np.ndarray) -> dict[str, Any]:
    """Validation metrics of a whole split, 'loss' included, on the host."""


@dataclasses.dataclass(frozen=True)
class Classification:
  """One label per image: softmax cross-entropy with label smoothing and class weights."""
  fitness_metrics: ClassVar[tuple[str, ...]] = metrics_lib.FITNESS_METRICS
  history_metrics: ClassVar[tuple[str, ...]] = metrics_lib.FITNESS_METRICS

  def inputs(self, key, batch, hparams, aug_config, num_classes):
    images = augment_lib.augment(key, models.preprocess(batch['image']), hparams['augment'],
                                 aug_config)
    targets = optax.smooth_labels(jax.nn.one_hot(batch['label'], num_classes),
                                  hparams['label_smoothing'])
    return images, targets

  def loss(self, logits, targets, hparams):
    # Mean weighted by each target's class weight, as torch's CrossEntropyLoss(weight=...);
    # a smoothed target mixes the weights of the classes it spreads over.
    weights = targets @ hparams['class_weights']
    return jnp.sum(optax.softmax_cross_entropy(logits, targets) * weights) / jnp.sum(weights)

  def probabilities(self, logits):
    return jax.nn.softmax(logits)

  def score(self, split, probs):
    result = metrics_lib.classification_metrics(split.labels, probs)
    picked = probs[np.arange(len(probs)), split.labels]
    result['loss'] = float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))
    return result


@dataclasses.dataclass(frozen=True)
class Segmentation:
  """A binary mask per image (batches carry 'seg_mask'): Dice + BCE, one logit per pixel.

  Label smoothing softens the BCE targets only. The weights are set by `train.dice_weight`
  and `train.bce_weight` where an experiment's config has them.
  """
  dice_weight: float = 1.0
  bce_weight: float = 1.0
  fitness_metrics: ClassVar[tuple[str, ...]] = seg_metrics.SEG_FITNESS_METRICS
  history_metrics: ClassVar[tuple[str, ...]] = seg_metrics.SEG_FITNESS_METRICS + ('hd95',)

  def inputs(self, key, batch, hparams, aug_config, num_classes):
    if num_classes != 2:
      raise ValueError(f'segmentation trains binary masks (2 mask values), got {num_classes}')
    images, masks = augment_lib.augment_with_masks(
        key, models.preprocess(batch['image']), batch['seg_mask'], hparams['augment'],
        aug_config)
    return images, masks.astype(jnp.float32)

  def loss(self, logits, targets, hparams):
    return losses.dice_bce_loss(logits, targets, self.dice_weight, self.bce_weight,
                                hparams['label_smoothing'])

  def probabilities(self, logits):
    return jax.nn.sigmoid(logits)

  def score(self, split, probs):
    result = seg_metrics.segmentation_metrics(split.masks, probs)
    # The training loss without smoothing, from the logits that give these probabilities.
    p = np.clip(probs, 1e-7, 1.0 - 1e-7)
    result['loss'] = float(_jitted_dice_bce_loss(
        np.log(p) - np.log1p(-p), split.masks, self.dice_weight, self.bce_weight))
    return result


# A whole split's loss: one compiled program per split shape, where op by op it took seconds.
_jitted_dice_bce_loss = compiler.jit_on_first_call(losses.dice_bce_loss)


# Genotype kind -> the task its network solves.
TASKS: dict[type, type[Task]] = {
    Genotype: Classification,
    SegGenotype: Segmentation,
}


def task_for(genotype: AnyGenotype, train_cfg: ml_collections.ConfigDict) -> Task:
  """The genotype's task, with the settings (e.g. loss weights) that `train_cfg` overrides."""
  task = TASKS[type(genotype)]
  return task(**{f.name: train_cfg[f.name] for f in dataclasses.fields(task)
                 if f.name in train_cfg})


@dataclasses.dataclass(frozen=True)
class Steps:
  """The compiled functions of one architecture; shared by genotypes that differ in TrainGenes.

  `step_inputs` is shared by every architecture of the same task and augmentation.
  """
  model: Any
  task: Task
  batch_sharding: jax.sharding.Sharding
  init: Callable
  step_inputs: Callable
  train_step: Callable
  eval_step: Callable

  def train(self, state: TrainState, batch: dict[str, jax.Array], key: jax.Array,
            hparams: dict[str, jax.Array]) -> tuple[TrainState, jax.Array]:
    """One optimisation step on a (globally sharded) batch of stored images and labels."""
    images, targets = self.step_inputs(batch, key, hparams)
    return self.train_step(state, images, targets, key, hparams)


def _decay_mask(params):
  """Decay kernels only: biases and normalisation scales are not regularised."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


# train.optimizer -> the update direction, given train.momentum, before the learning rate
# and decoupled weight decay are applied.
DIRECTIONS: dict[str, Callable[[float], optax.GradientTransformation]] = {
    'adamw': lambda momentum: optax.scale_by_adam(),
    'sgd': lambda momentum: optax.trace(decay=momentum, nesterov=True),
}

# train.schedule -> the learning rate schedule of (peak, warmup steps, total steps).
SCHEDULES: dict[str, Callable[[float, int, int], optax.Schedule]] = {
    'cosine': lambda peak, warmup, total: (
        optax.warmup_cosine_decay_schedule(0.0, peak, warmup, total) if warmup
        else optax.cosine_decay_schedule(peak, total)),
    'onecycle': lambda peak, warmup, total: optax.cosine_onecycle_schedule(total, peak),
    'constant': lambda peak, warmup, total: optax.constant_schedule(peak),
}


def check_config(train_cfg: ml_collections.ConfigDict, genotype: AnyGenotype,
                 metric: str) -> None:
  """Raises ValueError for what every training of `genotype`'s kind would fail on."""
  for field, known in (('optimizer', DIRECTIONS), ('schedule', SCHEDULES)):
    if train_cfg[field] not in known:
      raise ValueError(f'unknown train.{field} {train_cfg[field]!r}; choose one of '
                       f'{", ".join(known)}')
  try:
    floating = jnp.issubdtype(jnp.dtype(train_cfg.dtype), jnp.floating)
  except TypeError:
    floating = False
  if not floating:
    raise ValueError(f'train.dtype {train_cfg.dtype!r} is not a float type; use float32 or '
                     'bfloat16')
  task = task_for(genotype, train_cfg)
  if metric not in task.fitness_metrics:
    raise ValueError(f'{type(task).__name__} has no fitness metric {metric!r}; choose one of '
                     f'{", ".join(task.fitness_metrics)}')


def step_inputs(batch: dict[str, jax.Array], key: jax.Array, hparams: dict[str, jax.Array],
                *, task: Task, aug_config: augment_lib.AugmentConfig,
                num_classes: int) -> tuple[jax.Array, jax.Array]:
  """The augmented images and the targets that train_step with the same `key` trains on."""
  return task.inputs(jax.random.split(key)[0], batch, hparams, aug_config, num_classes)


def train_step(state: TrainState, images: jax.Array, targets: jax.Array, key: jax.Array,
               hparams: dict[str, jax.Array], *, task: Task) -> tuple[TrainState, jax.Array]:
  """One optimisation step on one (globally sharded) batch of step_inputs. Pure: same inputs,
  same outputs."""
  dropout_key = jax.random.split(key)[1]

  def loss_fn(params):
    logits, updates = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats}, images, train=True,
        rngs={'dropout': dropout_key}, mutable=['batch_stats'])
    return task.loss(logits.astype(jnp.float32), targets, hparams), updates['batch_stats']

  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  direction, opt_state = state.tx.update(grads, state.opt_state, state.params)
  updates = jax.tree.map(
      lambda d, p, decay: -hparams['learning_rate'] * (d + decay * hparams['weight_decay'] * p),
      direction, state.params, _decay_mask(state.params))
  state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                        opt_state=opt_state, batch_stats=batch_stats)
  return state, loss


def eval_step(state: TrainState, images: jax.Array, *, task: Task) -> jax.Array:
  logits = state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats},
                          models.preprocess(images), train=False)
  return task.probabilities(logits.astype(jnp.float32))


def enable_compilation_cache(directory: str) -> None:
  """Persists compiled steps on disk: a repeated architecture never compiles again, in any
  process of any search that shares `directory`."""
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


def _mesh() -> jax.sharding.Mesh:
  # Auto axes: the compiler propagates the batch sharding through the step, as pmap did;
  # explicit sharding-in-types would reject the per-example vmaps of the augmentation.
  return jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))


def _shardings() -> tuple[NamedSharding, NamedSharding]:
  """(replicated, split along the batch): the state's and the batch's shardings."""
  mesh = _mesh()
  return NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec('data'))


@functools.lru_cache(maxsize=16)
def _jitted_step_inputs(task: Task, aug_config: augment_lib.AugmentConfig, num_classes: int,
                        cpu_optimization_level: int) -> Callable:
  replicated, batch_sharded = _shardings()
  return jax.jit(
      functools.partial(step_inputs, task=task, aug_config=aug_config, num_classes=num_classes),
      in_shardings=(batch_sharded, replicated, replicated),
      out_shardings=(batch_sharded, batch_sharded),
      compiler_options=compiler.compiler_options('step', cpu_optimization_level))


# Large enough that the candidates compiled ahead (nas.executors) are still cached when
# their turn to train comes.
@functools.lru_cache(maxsize=64)
def compiled_steps(architecture: AnyGenotype, num_classes: int, dtype: str, optimizer: str,
                   momentum: float, aug_config: augment_lib.AugmentConfig,
                   task: Task | None = None, cpu_optimization_level: int = 1) -> Steps:
  """jit-wrapped steps per architecture; jax caches the executables per input shape.

  `task` defaults to the architecture kind's task with its default settings;
  `cpu_optimization_level` is XLA's LLVM level for the steps on CPU (XLA's default: 2).
  """
  step_options = compiler.compiler_options('step', cpu_optimization_level)
  task = TASKS[type(architecture)]() if task is None else task
  model = models.build(architecture, num_classes, dtype=jnp.dtype(dtype))
  tx = DIRECTIONS[optimizer](momentum)
  replicated, batch_sharded = _shardings()

  def init(key, image_shape):
    variables = model.init({'params': key, 'dropout': key}, jnp.zeros(image_shape), train=False)
    return TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx,
                             batch_stats=variables.get('batch_stats', {}))

  return Steps(
      model=model,
      task=task,
      batch_sharding=batch_sharded,
      init=jax.jit(init, static_argnums=1, out_shardings=replicated,
                   compiler_options=compiler.compiler_options('init', cpu_optimization_level)),
      step_inputs=_jitted_step_inputs(task, aug_config, num_classes, cpu_optimization_level),
      train_step=jax.jit(functools.partial(train_step, task=task),
                         in_shardings=(replicated, batch_sharded, batch_sharded, replicated,
                                       replicated),
                         out_shardings=(replicated, replicated), donate_argnums=0,
                         compiler_options=step_options),
      eval_step=jax.jit(functools.partial(eval_step, task=task),
                        in_shardings=(replicated, batch_sharded), out_shardings=replicated,
                        compiler_options=step_options))


def drop_compiled_steps() -> None:
  """Drops every architecture's compiled steps, executables included.

  For a new generation of a search and its end (`nas.search.hold_generation`,
  `release_generation`). JAX's own caches stay, so that each generation does not trace
  again what every network shares (benchmarks/RESULTS.md).
  """
  compiled_steps.cache_clear()
  gc.collect()  # frees what the cache held before the heap is trimmed
  host_memory.release_free_memory()


def forget_compiled_steps() -> None:
  """Drops every architecture's compiled steps and what JAX traced for them.

  For the end of a search and its final stage: nothing of it trains again, and kept, the
  steps and traces slowed the next search in the process (another study run). After a
  search of 36 architectures the process held 3.5 GB and dropping them took it to 0.75 GB;
  the next search's first 24 trials then trained in 4.0 min, against 5.2 with them kept
  and 3.6 in a fresh process (docs/results.md).
  """
  _jitted_step_inputs.cache_clear()
  jax.clear_caches()
  drop_compiled_steps()


def _learning_rates(train_cfg: ml_collections.ConfigDict, peak: float,
                    steps_per_epoch: int, epochs: int) -> np.ndarray:
  """The learning rate of every step, computed once on the host."""
  total = max(1, steps_per_epoch * epochs)
  warmup = int(train_cfg.warmup_epochs * steps_per_epoch)
  schedule = SCHEDULES[train_cfg.schedule](peak, warmup, total)
  return np.asarray(jax.vmap(schedule)(jnp.arange(total)), np.float32)


def _batch_size(genes: TrainGenes, num_train: int) -> int:
  """The genotype's batch size, shrunk to fit a small training set, a multiple of the devices."""
  devices = jax.device_count()
  size = min(genes.batch_size, num_train)
  size -= size % devices
  if size < devices:
    raise ValueError(f'{num_train} training images cannot fill one batch on {devices} devices')
  return size


def evaluate(state: TrainState, steps: Steps, split: datasets.Split,
             batch_size: int) -> dict[str, Any]:
  """The task's metrics of the state on a whole split."""
  batch_size = _eval_batch_size(batch_size)
  probs = [np.asarray(steps.eval_step(
               state, distributed.global_batch(batch['image'], steps.batch_sharding)))
           for batch in pipeline.eval_batches(split, batch_size)]
  # Only the last batch is padded, at its end.
  return steps.task.score(split, np.concatenate(probs)[:len(split)])


def step_hparams(genes: TrainGenes, weights: np.ndarray) -> dict[str, jax.Array]:
  """train_step's hyperparameters but the learning rate, which the loop sets every step.

  Traced, not static: genotypes that differ only in these share one compiled step.
  """
  return {'weight_decay': jnp.float32(genes.weight_decay),
          'label_smoothing': jnp.float32(genes.label_smoothing),
          'augment': jnp.float32(genes.augment),
          'class_weights': jnp.asarray(weights, jnp.float32)}


def class_weights(labels: np.ndarray, num_classes: int, balanced: bool) -> np.ndarray:
  """Per-class loss weights: n / (classes * n_class) when `balanced` (a class absent from
  `labels` weighs 0), else ones."""
  if not balanced:
    return np.ones(num_classes, np.float32)
  counts = np.bincount(labels, minlength=num_classes).astype(np.float32)
  return np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0
                  ).astype(np.float32)


def _eval_batch_size(batch_size: int) -> int:
  """`batch_size` rounded down to a multiple of the device count, at least one per device."""
  return max(jax.device_count(), batch_size - batch_size % jax.device_count())


@dataclasses.dataclass(frozen=True)
class Trained:
  """A trained network: its result, and what is needed to evaluate or save it."""
  result: records.TrainResult
  state: TrainState | None
  steps: Steps | None


def train_and_evaluate(genotype: AnyGenotype, train: datasets.Split, val: datasets.Split,
                       num_classes: int, epochs: int, seed: int,
                       train_cfg: ml_collections.ConfigDict,
                       aug_config: augment_lib.AugmentConfig,
                       metric: str | None = None, checkpoint_dir: str | None = None) -> Trained:
  """Trains `genotype` for `epochs` on `train`, scoring `val` after every epoch.

  A Genotype classifies `num_classes` classes, its fitness metric by default 'accuracy'; a
  SegGenotype segments splits with masks (num_classes = 2 mask values), by default 'dice'.

  Never raises for a bad candidate: exceptions, non-finite losses, out-of-memory and time
  limits become a failed result carrying the error, because failures are data. With a
  `checkpoint_dir` and `train_cfg.checkpoint_every_epochs`, training state is saved there
  and a killed run continues from its last checkpoint, with the same result.
  """
  host_memory.release_free_memory()  # what the previous candidate's steps left free
  start = time.monotonic()
  history: list[dict[str, float]] = []
  timing = {'compile': 0.0, 'compiled': False}
  try:
    state, steps, best = _fit(genotype, train, val, num_classes, epochs, seed, train_cfg,
                              aug_config, metric, history, timing, start, checkpoint_dir)
  except Exception as e:  # pylint: disable=broad-except
    logging.warning('candidate %s failed: %s', genotype.hash, e)
    logging.debug('%s', traceback.format_exc())
    return Trained(records.TrainResult(
        status=records.FAILED, metrics={}, history=tuple(history), epochs_run=len(history),
        train_seconds=time.monotonic() - start, compile_seconds=timing['compile'],
        error=f'{type(e).__name__}: {e}'[:2000]), None, None)
  return Trained(records.TrainResult(
      status=records.OK, metrics=best, history=tuple(history), epochs_run=len(history),
      train_seconds=time.monotonic() - start, compile_seconds=timing['compile']), state, steps)


def checkpoint_dir(workdir: str, *names: str) -> str:
  """Where a run's training checkpoints live: `names` pick one training's folder."""
  return os.path.join(workdir, 'checkpoints', *names)


class _EpochCheckpoints:
  """Orbax checkpoints of a candidate's training every few epochs; the last one is kept.

  A checkpoint holds the state, the best epoch's state when early stopping keeps it, and
  the progress (history, best metrics), so that a resumed run ends as an unbroken one.
  """

  def __init__(self, directory: str, every: int, keep_best: bool):
    self._keep_best = keep_best
    self._manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, save_interval_steps=every,
                                             enable_async_checkpointing=False))

  def restore(self, state: TrainState) -> tuple[TrainState, TrainState | None, dict] | None:
    """(state, best state, progress) after the last saved epoch, or None before the first."""
    epoch = self._manager.latest_step()
    if epoch is None:
      return None
    items = {'state': ocp.args.StandardRestore(_arrays(state)),
             'progress': ocp.args.JsonRestore()}
    if self._keep_best:
      items['best_state'] = ocp.args.StandardRestore(_arrays(state))
    restored = self._manager.restore(epoch, args=ocp.args.Composite(**items))
    best = _with_arrays(state, restored['best_state']) if self._keep_best else None
    return _with_arrays(state, restored['state']), best, restored['progress']

  def save(self, epoch: int, state: TrainState, best_state: TrainState | None,
           progress: dict[str, Any]) -> None:
    items = {'state': ocp.args.StandardSave(_arrays(state)),
             'progress': ocp.args.JsonSave(progress)}
    if self._keep_best:
      items['best_state'] = ocp.args.StandardSave(_arrays(best_state))
    with saved.uninterrupted():
      self._manager.save(epoch, args=ocp.args.Composite(**items))

  def close(self) -> None:
    self._manager.close()


def _arrays(state: TrainState) -> dict[str, Any]:
  return {'step': state.step, 'params': state.params, 'opt_state': state.opt_state,
          'batch_stats': state.batch_stats}


def _with_arrays(state: TrainState, arrays: dict[str, Any]) -> TrainState:
  state = state.replace(**arrays)
  return jax.device_put(state, NamedSharding(_mesh(), PartitionSpec()))


def _steps_for(genotype: AnyGenotype, num_classes: int, train_cfg: ml_collections.ConfigDict,
               aug_config: augment_lib.AugmentConfig) -> Steps:
  architecture = dataclasses.replace(genotype, train=TrainGenes())
  return compiled_steps(architecture, num_classes, train_cfg.dtype, train_cfg.optimizer,
                        float(train_cfg.momentum), aug_config, task_for(genotype, train_cfg))


def _init_key(seed: int) -> jax.Array:
  # Threefry initialisation compiles 4x slower on CPU than RBG, and an init is computed
  # whole on every device, so RBG's stream cannot depend on the device count. Steps keep
  # threefry, whose bits are the same however the batch is sharded.
  return jax.random.key(seed, impl='rbg')


def _init_shape(train: datasets.Split) -> tuple[int, ...]:
  return (1,) + train.images.shape[1:]


def _eval_images(val: datasets.Split, train_cfg: ml_collections.ConfigDict,
                 steps: Steps) -> jax.ShapeDtypeStruct:
  """The shape of the images of every evaluation batch (the last one is padded)."""
  return jax.ShapeDtypeStruct(
      (_eval_batch_size(train_cfg.eval_batch_size),) + val.images.shape[1:], val.images.dtype,
      sharding=steps.batch_sharding)


def compile_steps(genotype: AnyGenotype, train: datasets.Split, val: datasets.Split,
                  num_classes: int, train_cfg: ml_collections.ConfigDict,
                  aug_config: augment_lib.AugmentConfig) -> None:
  """Compiles every step that train_and_evaluate would run for `genotype`, running none.

  jit's caches keep them, so its training then starts at once. Safe in a thread while
  another candidate trains, which is how the local executor hides compile time.
  """
  steps = _steps_for(genotype, num_classes, train_cfg, aug_config)
  state = jax.eval_shape(steps.init, _init_key(0), _init_shape(train))
  steps.init.lower(_init_key(0), _init_shape(train)).compile()
  steps.eval_step.lower(state, _eval_images(val, train_cfg, steps)).compile()
  batch = jax.tree.map(
      lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=steps.batch_sharding),
      next(pipeline.train_batches(train, _batch_size(genotype.train, len(train.labels)), 0, 0)))
  hparams = {**step_hparams(genotype.train, np.ones(num_classes)),
             'learning_rate': jnp.float32(0.0)}
  key = jax.random.key(0)
  images, targets = jax.eval_shape(steps.step_inputs, batch, key, hparams)
  steps.step_inputs.lower(batch, key, hparams).compile()
  steps.train_step.lower(state, images, targets, key, hparams).compile()


def _fit(genotype, train, val, num_classes, epochs, seed, train_cfg, aug_config, metric,
         history, timing, start, checkpoint_dir):
  """The training loop; raises on failure. Fills `history` and `timing` as it goes."""
  metric = metric or task_for(genotype, train_cfg).fitness_metrics[0]  # accuracy, dice
  check_config(train_cfg, genotype, metric)
  steps = _steps_for(genotype, num_classes, train_cfg, aug_config)
  genes = genotype.train
  batch_size = _batch_size(genes, len(train.labels))
  steps_per_epoch = len(train.labels) // batch_size
  learning_rates = _learning_rates(train_cfg, genes.learning_rate, steps_per_epoch, epochs)
  hparams = step_hparams(genes, class_weights(train.labels, num_classes,
                                              train_cfg.get('class_balanced', False)))
  init_key = _init_key(seed)
  step_key = jax.random.key(seed)

  compile_start = time.monotonic()
  state = steps.init(init_key, _init_shape(train))
  # Ahead of time, so that the compile share counts it; the first evaluate() then reuses it.
  steps.eval_step.lower(state, _eval_images(val, train_cfg, steps)).compile()
  timing['compile'] += time.monotonic() - compile_start

  # Early stopping returns the best epoch's state; without it, the last epoch's.
  keep_best = bool(train_cfg.patience)
  best_state, progress = None, {'best': None, 'since_best': 0}
  checkpoints = None
  if checkpoint_dir and train_cfg.checkpoint_every_epochs:
    checkpoints = _EpochCheckpoints(checkpoint_dir, train_cfg.checkpoint_every_epochs,
                                    keep_best)
    restored = checkpoints.restore(state)
    if restored:
      state, best_state, progress = restored
      history.extend(progress.pop('history'))
      logging.info('%s: resumed after epoch %d', genotype.hash, len(history))
  # Restored from a training that had stopped early: it stays stopped, as it ended unbroken.
  stopped = keep_best and progress['since_best'] >= train_cfg.patience
  try:
    for epoch in range(epochs if stopped else len(history), epochs):
      state, train_loss = _train_epoch(
          state, steps, train, batch_size, seed, epoch, epoch * steps_per_epoch, step_key,
          hparams, learning_rates, timing, train_cfg, start)
      scores = evaluate(state, steps, val, train_cfg.eval_batch_size)
      history.append({'epoch': epoch + 1, 'train_loss': train_loss, 'val_loss': scores['loss'],
                      **{m: scores[m] for m in steps.task.history_metrics}})
      logging.info('%s epoch %d: train loss %.4f, val %s %.4f', genotype.hash, epoch + 1,
                   train_loss, metric, scores[metric])
      if not keep_best or progress['best'] is None or scores[metric] > progress['best'][metric]:
        progress.update(best=scores, since_best=0)
        # A host copy: the next step donates (and so frees) the state's device buffers.
        best_state = jax.device_get(state) if keep_best else None
      else:
        progress['since_best'] += 1
      if checkpoints:
        checkpoints.save(epoch + 1, state, best_state, dict(progress, history=history))
      if keep_best and progress['since_best'] >= train_cfg.patience:
        logging.info('%s: early stop after epoch %d', genotype.hash, epoch + 1)
        break
  finally:
    if checkpoints:
      checkpoints.close()
  if keep_best:
    state = jax.device_put(best_state, NamedSharding(_mesh(), PartitionSpec()))
  return state, steps, progress['best']


def _train_epoch(state, steps, train, batch_size, seed, epoch, first_step, step_key, hparams,
                 learning_rates, timing, train_cfg, start) -> tuple[TrainState, float]:
  """One pass over `train` in the (seed, epoch) order; returns the state and mean loss."""
  batch_losses = []
  compiling = not timing['compiled']
  first_step_seconds, rest_start = 0.0, time.monotonic()
  for i, batch in enumerate(pipeline.train_batches(train, batch_size, seed, epoch)):
    step_start = time.monotonic()
    state, loss = steps.train(
        state, distributed.global_batch(batch, steps.batch_sharding),
        jax.random.fold_in(step_key, first_step + i),
        {**hparams, 'learning_rate': jnp.float32(learning_rates[first_step + i])})
    batch_losses.append(loss)
    if not timing['compiled']:
      jax.block_until_ready(loss)
      first_step_seconds = time.monotonic() - step_start
      rest_start = time.monotonic()
      timing['compiled'] = True
    if (i + 1) % 20 == 0:
      _check_finite(batch_losses[-1], first_step + i + 1)
    _check_time(train_cfg, start)
  train_loss = float(np.mean(jax.device_get(batch_losses)))
  _check_finite(train_loss, first_step + len(batch_losses))
  if compiling:
    # The first step compiled and then ran once: count its run at the epoch's mean step.
    mean_step = (time.monotonic() - rest_start) / max(1, len(batch_losses) - 1)
    timing['compile'] += max(0.0, first_step_seconds - mean_step)
  return state, train_loss


def _check_finite(loss, step: int) -> None:
  if not math.isfinite(float(loss)):
    raise NonFiniteLoss(f'loss became {float(loss)} by step {step}; '
                        'lower the learning rate or check the data')


def _check_time(train_cfg: ml_collections.ConfigDict, start: float) -> None:
  if train_cfg.time_limit_s and time.monotonic() - start > train_cfg.time_limit_s:
    raise CandidateTimeout(f'ran past the time limit of {train_cfg.time_limit_s:g}s')
