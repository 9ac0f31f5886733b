"""The reference U-Net of models/zoo.py on Kvasir-SEG, trained and tested like a search's winner.

As zoo_brain_mri: each network of models.zoo.SEG_ZOO is one candidate of a search that asks
exactly these, a 'grid' over declared points in a space holding just their genes, so it is
trained by the same trainer (Dice + BCE, the epochs of pso_kvasir_seg's last rung), ranked on
the same validation split and retrained and tested once by the same final stage. Its row
then stands beside the searches' winners and the published numbers (the hand-written
1.9M-parameter U-Net is width 0.25 here). Assumed: width 1/16 at smoke, 1/8 at quick and cpu
(0.25 costs 1.5 GFLOPs an image at 128px, about 5 minutes an epoch on 2 cores), the paper's
width at full; the training genes of pso_kvasir_seg's candidates (the first value of each);
no pretraining.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from experiments import common
from experiments import _kvasir_seg
from models import zoo
from models.genotype import SegGenotype, TrainGenes
from nas import space as space_lib

_WIDTH_MULTIPLIER = {'smoke': 0.0625, 'quick': 0.125, 'cpu': 0.125, 'full': 1.0}
_DEPTH = {'smoke': 1, 'quick': 3, 'cpu': 4, 'full': 4}  # downsamplings: 2x2 at 32px smoke


def networks(preset: str, train: TrainGenes) -> dict[str, SegGenotype]:
  """The segmentation zoo at the preset's width and depth, trained with `train`."""
  return {name: dataclasses.replace(make(_WIDTH_MULTIPLIER[preset], _DEPTH[preset]), train=train)
          for name, make in zoo.SEG_ZOO.items()}


def _genes(genotype: SegGenotype) -> dict[str, Any]:
  """Gene name -> value, as nas.space.SegmentationSpace names them ('e<i>.', 'd<i>.')."""
  genes = {name: getattr(genotype, name) for name in ('stem_width', 'norm', 'activation')}
  genes.update(dataclasses.asdict(genotype.train))
  for i, stage in enumerate(genotype.encoder):
    genes.update({f'e{i}.{name}': value for name, value in dataclasses.asdict(stage).items()})
  for i, stage in enumerate(genotype.decoder):
    cells = dataclasses.asdict(stage.cells)
    del cells['downsample']  # a decoder stage never downsamples: not a gene
    genes.update({f'd{i}.{name}': value for name, value in cells.items()})
    genes.update({f'd{i}.upsample': stage.upsample, f'd{i}.skip': stage.skip})
  return genes


def get_config(preset: str = 'quick') -> ml_collections.ConfigDict:
  c = _kvasir_seg.search_config('zoo_kvasir_seg', 'grid', preset)
  train = TrainGenes(**{gene: c.space[field][0] for gene, field in (
      ('learning_rate', 'learning_rates'), ('weight_decay', 'weight_decays'),
      ('batch_size', 'batch_sizes'), ('augment', 'augments'),
      ('label_smoothing', 'label_smoothings'))})
  nets = list(networks(preset, train).values())
  depths = {len(g.encoder) for g in nets}
  if len(depths) > 1:
    raise ValueError(f'the segmentation zoo must share one depth to share a space, got {depths}')
  stages = [s for g in nets for s in g.encoder + tuple(d.cells for d in g.decoder)]
  c.space.update(
      num_stages=depths.pop(),
      **common.stage_values(stages),
      downsample=common.values(s.downsample for g in nets for s in g.encoder[1:]),
      upsamples=common.values(d.upsample for g in nets for d in g.decoder),
      skips=common.values(d.skip for g in nets for d in g.decoder),
      stem_widths=common.values(g.stem_width for g in nets),
      norms=common.values(g.norm for g in nets),
      activations=common.values(g.activation for g in nets),
      max_params=0, max_flops=0)  # the reference networks are trained whatever they cost
  # Encoding depends on the genes' allowed values only, not on the data.
  space = space_lib.SegmentationSpace(c.space, c.data.image_size, c.data.channels, num_classes=2)
  common.train_fixed_networks(c, [space.encode(_genes(g)) for g in nets])
  return c
