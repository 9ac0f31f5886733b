"""The shared shape of every experiment config, and the presets they scale by.

An experiment file builds on `search_config(...)` and changes what its protocol needs. Every
field here is overridable from the command line (`--config.search.budget=20`).
"""
from __future__ import annotations

from typing import Any, Iterable

import ml_collections

PRESETS = ('smoke', 'quick', 'cpu', 'full')


def search_config(experiment: str, preset: str) -> ml_collections.ConfigDict:
  """Defaults for a classification search; experiments override what their protocol fixes."""
  if preset not in PRESETS:
    raise ValueError(f'unknown preset {preset!r}; choose one of {", ".join(PRESETS)}')
  c = ml_collections.ConfigDict()
  c.experiment = experiment
  c.preset = preset
  c.seed = 0

  # Which data, at which size. `options` go to the dataset's loader (e.g. synthetic sizes).
  c.data = ml_collections.ConfigDict(dict(
      name='synthetic', image_size=32, channels=1, val_fraction=0.1, dedup=False,
      on_corrupt='skip', options=ml_collections.ConfigDict()))

  # The search space: each tuple lists the values a gene may take; one value = not searched.
  c.space = ml_collections.ConfigDict(dict(
      num_stages=3,
      num_cells=(0, 1, 2),
      cells=('conv', 'sep', 'residual', 'mbconv', 'shrinkage', 'esp'),
      kernels=(3, 5),
      widths=(16, 32, 64),
      # Optional per-stage width lists (one per encoder stage) that override `widths`, as a
      # U-Net widens where the resolution falls; a decoder stage takes its encoder level's.
      stage_widths=(),
      dilations=(1, 2),
      attention=('none', 'se', 'cbam'),
      downsample=('max', 'avg', 'conv'),
      stem_widths=(16, 32),
      stem_strides=(1,),
      norms=('batch',),
      activations=('relu', 'swish'),
      dropouts=(0.0, 0.2),
      learning_rates=(1e-3,),
      weight_decays=(1e-4,),
      batch_sizes=(64,),
      augments=(0.5,),
      label_smoothings=(0.0,),
      # Budgets checked before anything compiles; 0 = no limit.
      max_params=0,
      max_flops=0,
      min_feature_size=1,
  ))

  # Augmentation maxima at strength 1; each genotype's `augment` gene scales them.
  c.augment = ml_collections.ConfigDict(dict(
      flip_lr=True, flip_ud=False, max_rotate_deg=10.0, max_scale=0.1, max_translate=0.1,
      max_brightness=0.1, max_contrast=0.1))

  # How each candidate is trained.
  c.train = ml_collections.ConfigDict(dict(
      optimizer='adamw',        # adamw | sgd
      momentum=0.9,             # sgd only
      schedule='cosine',        # cosine | onecycle | constant
      warmup_epochs=0.0,
      epochs=10,                # the fidelity when search.fidelity.rungs is empty
      eval_batch_size=256,
      patience=0,               # early stopping on the validation metric; 0 = off
      # Classification: weight each image's loss by n / (classes * n_class) of the training
      # labels, so that every class weighs the same whatever its share of the data.
      class_balanced=False,
      dtype='float32',          # float32 | bfloat16 (GPU/TPU)
      time_limit_s=0.0,         # per training of a candidate; 0 = none
      checkpoint_every_epochs=0,  # orbax checkpoints of long candidates; 0 = none
  ))

  # How candidates are proposed and scored.
  c.search = ml_collections.ConfigDict(dict(
      optimizer='pso',
      mode='sync',              # sync: ask, train and tell a population at a time (papers);
                                # async: keep executor.slots training, tell each as it ends
      options=ml_collections.ConfigDict(),  # optimizer settings, e.g. popsize, omega, phip, phig
      population=8,             # candidates asked per batch (the swarm / population size)
      shared_start=True,        # first population drawn from the seed alone, the same for
                                # every optimizer (nas.space.SearchSpace.first_generation)
      budget=32,                # candidates asked in all, duplicates included (untrainable ones are redrawn)
      new_networks=False,       # an optimizer about to repeat a network is told its loss and
                                # asks anew: the budget buys distinct networks (NewNetworks)
      time_budget_s=0.0,        # stop asking after this much wall time; 0 = none
      metric='accuracy',        # fitness = 1 - this validation metric
      training_seeds=1,         # trainings per candidate (seeds seed, seed+1, ...), fitness
                                # their mean metric: a noisy fitness at that multiple of the cost
      objectives=(),            # extra objectives to minimise too: 'params', 'flops'
      penalty=1.0,              # loss told for failed and rejected candidates
      max_consecutive_failures=10,
      fidelity=ml_collections.ConfigDict(dict(rungs=(), eta=3)),
  ))

  # The final stage: retrain the best genotypes and test each once.
  # dedup_test: also score the test images that have no near duplicate in training.
  # checkpoint_every_epochs: orbax checkpoints of each final training, so that a killed run
  # loses at most this many epochs of a network that may train for hours; 0 = none.
  # patience: the final trainings' own early stopping on the validation metric (train.patience
  # is the search's): stop after this many epochs without a better one and test the best
  # epoch; epochs or more keeps the best epoch without stopping; 0 tests the last epoch.
  c.final = ml_collections.ConfigDict(dict(top_k=3, seeds=3, epochs=10, dedup_test=False,
                                           checkpoint_every_epochs=1, patience=0))

  # Where candidates train: local | process | dask | slurm (see nas/executors.py).
  c.executor = ml_collections.ConfigDict(dict(
      kind='local',
      compile_ahead=1,          # local: threads compiling the next candidates while one trains
      workers=2,                # process and dask: worker processes (process: one per GPU)
      accelerator='cpu',        # process: cpu | gpu, gpu pins each worker to its own GPU,
                                # cpu keeps process and dask LocalCluster workers off GPUs
      address='',               # dask: scheduler address; empty = a LocalCluster
      slurm=ml_collections.ConfigDict(dict(
          cluster='',           # empty = SLURM if sbatch exists, 'local' = local processes
          partition='', timeout_min=120, gpus_per_node=0, cpus_per_task=4,
          array_parallelism=64, additional_parameters=ml_collections.ConfigDict())),
  ))
  # Several hosts training each candidate together (see nas/distributed.py); every host
  # runs the same command. On SLURM and Cloud TPU only `enabled` is needed.
  c.distributed = ml_collections.ConfigDict(dict(
      enabled=False, coordinator_address='', num_processes=0, process_id=-1))
  return c


def plain_cnn(space: ml_collections.ConfigDict, **genes) -> None:
  """Makes `space` one of plain conv layers (conv-norm-ReLU) and max pooling, then sets `genes`.

  The GA, grid and psoCNN papers search such networks: no separable, residual or attention
  blocks, no dilation. `genes` are the space fields their protocol searches.
  """
  space.update(cells=('conv',), dilations=(1,), attention=('none',), downsample=('max',),
               norms=('batch',), activations=('relu',), dropouts=(0.0,))
  space.update(genes)


def segmentation_config(experiment: str, preset: str) -> ml_collections.ConfigDict:
  """Defaults for a segmentation search: encoder-decoder space, Dice + BCE, ranked by Dice.

  The space is nas.space.SegmentationSpace's: the classifier's stage and cell genes for the
  encoder and the decoder, plus how the decoder upsamples and merges the skip connections.
  Stem strides and dropout are classifier genes, so the space has no such fields.
  """
  c = search_config(experiment, preset)
  c.data.name = 'synthetic_seg'
  del c.space['stem_strides'], c.space['dropouts']
  c.space.upsamples = ('transpose', 'resize')
  c.space.skips = ('concat', 'add')
  # nas.train.Segmentation's loss: bce_weight * BCE + dice_weight * (1 - soft Dice).
  c.train.dice_weight = 1.0
  c.train.bce_weight = 1.0
  c.search.metric = 'dice'
  return c


def values(genes: Iterable[Any]) -> tuple[Any, ...]:
  """The distinct values of a gene, sorted: a space's list that allows exactly these."""
  return tuple(sorted(set(genes)))


def stage_values(stages: list[Any]) -> dict[str, tuple[Any, ...]]:
  """The space's per-stage lists that allow exactly the genes of `stages` (models Stages)."""
  return dict(num_cells=values(s.num_cells for s in stages), cells=values(s.cell for s in stages),
              kernels=values(s.kernel for s in stages), widths=values(s.width for s in stages),
              stage_widths=(),
              dilations=values(s.dilation for s in stages),
              attention=values(s.attention for s in stages))


def train_fixed_networks(c: ml_collections.ConfigDict, points: list[list[float]]) -> None:
  """Makes the search train exactly the networks at `points` of its space, then test all.

  The grid optimizer asks the declared points once each, at the last rung's epochs, so the
  reference networks go through the same trainer, store, final stage and report.
  """
  c.search.optimizer = 'grid'
  c.search.options = ml_collections.ConfigDict(dict(
      points=tuple(tuple(float(x) for x in point) for point in points)))
  c.search.budget = c.search.population = len(points)
  c.train.epochs = max(c.search.fidelity.rungs, default=c.train.epochs)
  c.search.fidelity.rungs = ()
  c.final.top_k = len(points)


def smoke_search(c: ml_collections.ConfigDict) -> None:
  """The smoke preset of a classification search: a handful of tiny one-epoch candidates."""
  c.space.update(num_stages=2, num_cells=(0, 1), cells=('conv', 'sep', 'residual'),
                 widths=(8, 16), stem_widths=(8,), kernels=(3,), dilations=(1,),
                 attention=('none', 'se'), activations=('relu',))
  c.search.update(population=4, budget=4)
  c.train.epochs = 1
  c.final.update(top_k=1, seeds=1, epochs=1)
