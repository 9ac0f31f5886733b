"""The reference networks of models/zoo.py on brain MRI, trained and tested like a search's.

Each network (VGG-16, ResNet-18, MobileNetV2, DRSN-CW, a psoCNN-style plain CNN) is one
candidate of a search that asks exactly these five: a 'grid' over declared points, in a space
holding just their genes. So they are trained by the same trainer for the epochs of
pso_brain_mri's last rung, ranked on the same validation split, and all five retrained and
tested once by the same final stage, which puts their test numbers beside a search's.
Assumed: widths at 1/8 below the full preset (see networks) and the zoo's default
training genes (AdamW 1e-3, batch 64, augmentation 0.5); no ImageNet pretraining.
Networks with fewer stages than the deepest are padded with stages that have no cells and
keep the width, which build nothing, so the leaderboard shows them with trailing `wN` stages.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from experiments import common
from experiments import pso_brain_mri
from models import zoo
from models.genotype import Genotype, Stage
from nas import space as space_lib


def networks(preset: str) -> dict[str, Genotype]:
  """The zoo at the preset's width, every network padded to the same number of stages."""
  # The papers' widths (VGG-16: 14.7M parameters) are for GPUs; at 1/8, ResNet-18 costs
  # 80 MFLOPs at 64px, about what pso_brain_mri's cpu preset allows a candidate.
  multiplier = 1.0 if preset == 'full' else 0.125
  nets = {name: make(multiplier) for name, make in zoo.ZOO.items()}
  depth = max(len(g.stages) for g in nets.values())
  return {name: _pad(g, depth) for name, g in nets.items()}


def _pad(genotype: Genotype, depth: int) -> Genotype:
  # A stage without cells at the current width has no layer (models/network.py).
  empty = Stage(0, width=genotype.stages[-1].width)
  return dataclasses.replace(
      genotype, stages=genotype.stages + (empty,) * (depth - len(genotype.stages)))


def _genes(genotype: Genotype) -> dict[str, Any]:
  """Gene name -> value, as nas.space names genes: field names, stage genes as 's<i>.<field>'."""
  genes = {f.name: getattr(genotype, f.name) for f in dataclasses.fields(genotype)
           if f.name not in ('stages', 'train')}
  genes.update(dataclasses.asdict(genotype.train))
  for i, stage in enumerate(genotype.stages):
    genes.update({f's{i}.{name}': value for name, value in dataclasses.asdict(stage).items()})
  return genes


def get_config(preset: str = 'quick') -> ml_collections.ConfigDict:
  c = pso_brain_mri.get_config(preset)
  c.experiment = 'zoo_brain_mri'
  nets = list(networks(preset).values())
  stages = [s for g in nets for s in g.stages]
  c.space.update(
      num_stages=len(stages) // len(nets),
      **common.stage_values(stages),
      downsample=common.values(s.downsample for s in stages),
      stem_widths=common.values(g.stem_width for g in nets),
      stem_strides=common.values(g.stem_stride for g in nets),
      norms=common.values(g.norm for g in nets),
      activations=common.values(g.activation for g in nets),
      dropouts=common.values(g.dropout for g in nets),
      learning_rates=common.values(g.train.learning_rate for g in nets),
      weight_decays=common.values(g.train.weight_decay for g in nets),
      batch_sizes=common.values(g.train.batch_size for g in nets),
      augments=common.values(g.train.augment for g in nets),
      label_smoothings=common.values(g.train.label_smoothing for g in nets),
      max_params=0, max_flops=0)  # the reference networks are trained whatever they cost
  # Encoding does not depend on the number of classes.
  space = space_lib.SearchSpace(c.space, c.data.image_size, c.data.channels, num_classes=4)
  common.train_fixed_networks(c, [space.encode(_genes(g)) for g in nets])
  return c
