"""Segmentation: the encoder-decoder genotype, its network, space, loss, metrics and training."""
import dataclasses
import itertools
import json
import os
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import nevergrad as ng
import numpy as np
import optax
from PIL import Image
import pytest
from sklearn import metrics as skm

import datasets
from datasets import augment as augment_lib
from experiments import common
import models
from models import genotype as genotype_lib
from models.cells import CELLS, SKIPS, UPSAMPLE
from models.counting import count, feature_sizes
from models.genotype import DecoderStage, SegGenotype, Stage, TrainGenes
from models.zoo import SEG_ZOO, unet
from nas import losses
from nas import optimizers
from nas import records
from nas import seg_metrics
from nas import space as space_lib
from nas import train as train_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NUM_CLASSES = 2  # mask values: background, foreground


def _key(seed):
  # Compiling threefry initialisers takes seconds on CPU; rbg keys take a fraction.
  return jax.random.key(seed, impl='rbg')


def _seg(cell='conv', upsample='transpose', skip='concat', width=8, **train):
  return SegGenotype(
      encoder=(Stage(1, cell, 3, width), Stage(1, cell, 3, 2 * width, downsample='max'),
               Stage(1, cell, 3, 2 * width, downsample='conv')),
      decoder=(DecoderStage(Stage(1, cell, 3, 2 * width), upsample, skip),
               DecoderStage(Stage(1, cell, 3, width), upsample, skip)),
      stem_width=width, train=TrainGenes(**train))


def _output(genotype, size, dtype=jnp.float32, channels=3):
  """(output shape and dtype, params) from abstract evaluation only."""
  model = models.build(genotype, NUM_CLASSES, dtype=dtype)
  x = jax.ShapeDtypeStruct((2, size, size, channels), jnp.float32)
  logits, variables = jax.eval_shape(
      lambda x: model.init_with_output(_key(0), x, train=False), x)
  return logits, variables['params']


# Genotype records.

def test_json_round_trip_and_kind_dispatch():
  genotype = _seg('sep', 'resize', 'add', learning_rate=3e-3)
  assert SegGenotype.from_json(genotype.to_json()) == genotype
  assert genotype_lib.from_json(genotype.to_json()) == genotype
  classifier = models.zoo.vgg()
  assert genotype_lib.from_json(classifier.to_json()) == classifier
  assert SegGenotype.from_dict(json.loads(genotype.to_json())).hash == genotype.hash


def test_hash_is_pinned():
  # Part of the trial store's on-disk format, like the classifier's.
  assert unet().hash == 'e3e4a41bf3bd3674'


def test_genes_without_effect_do_not_change_the_hash():
  base = _seg()
  decoder = list(base.decoder)
  # A decoder stage never downsamples.
  decoder[0] = DecoderStage(Stage(1, 'conv', 3, 16, downsample='max'), 'transpose', 'concat')
  assert SegGenotype(base.encoder, tuple(decoder), 8).hash == base.hash
  # Without cells, the cell type, kernel and attention do not count; identity cells are none.
  decoder[0] = DecoderStage(Stage(0, 'sep', 5, 16, 2, 'se'), 'transpose', 'concat')
  no_cells = SegGenotype(base.encoder, tuple(decoder), 8).hash
  decoder[0] = DecoderStage(Stage(3, 'identity', 7, 16), 'transpose', 'concat')
  assert SegGenotype(base.encoder, tuple(decoder), 8).hash == no_cells != base.hash
  # Every gene that changes the network does count.
  assert _seg(upsample='resize').hash != base.hash
  assert _seg(skip='add').hash != base.hash
  assert _seg(learning_rate=3e-3).hash != base.hash


def test_describe_is_one_line():
  text = unet().describe()
  assert '\n' not in text
  assert text.startswith('stem64 | enc 1xconv3 w64 | max/2 2xconv3 w128')
  assert 'dec up/transpose concat 2xconv3 w512' in text and 'lr0.001' in text


def test_structure_errors():
  assert _seg().structure_error() == ''
  g = _seg()
  flat = Stage(1, 'conv', 3, 16)
  assert 'must downsample' in SegGenotype(g.encoder[:1] + (flat,) + g.encoder[2:],
                                          g.decoder).structure_error()
  assert 'input resolution' in SegGenotype((Stage(1, downsample='max'),), ()).structure_error()
  assert 'decoder' in SegGenotype(g.encoder, g.decoder[:1]).structure_error()
  with pytest.raises(ValueError, match='decoder'):
    _output(SegGenotype(g.encoder, g.decoder[:1]), 16)


# The network.

@pytest.mark.parametrize('cell', sorted(CELLS))
def test_every_cell_builds_a_segmenter(cell):
  logits, _ = _output(_seg(cell), 16)
  assert logits.shape == (2, 16, 16, 1) and logits.dtype == jnp.float32


@pytest.mark.parametrize('skip', sorted(SKIPS))
@pytest.mark.parametrize('upsample', sorted(UPSAMPLE))
@pytest.mark.parametrize('size', [16, 15, 13])
def test_skips_and_upsampling_reach_the_input_size(skip, upsample, size):
  # 15 and 13 pool to odd sizes: the decoder must grow back to them exactly.
  logits, params = _output(_seg(skip=skip, upsample=upsample), size)
  assert logits.shape == (2, size, size, 1)
  # The last decoder stage upsamples to width 8 and meets encoder stage 0's 8 channels.
  decoder = params['decoder1']
  assert 'skip' not in decoder  # equal widths: an added skip needs no projection
  first_conv = decoder['cells']['cell0']['ConvNormAct_0']['Conv_0']['kernel']
  assert first_conv.shape[2] == {'concat': 16, 'add': 8, 'none': 8}[skip]


def test_added_skip_is_projected_when_widths_differ():
  g = _seg(skip='add')
  wide = DecoderStage(Stage(1, 'conv', 3, 24), 'transpose', 'add')
  _, params = _output(SegGenotype(g.encoder, (wide,) + g.decoder[1:], 8), 16)
  assert params['decoder0']['skip']['ConvNormAct_0']['Conv_0']['kernel'].shape == (1, 1, 16, 24)


def test_forward_runs_at_an_odd_size_and_in_bfloat16():
  g = _seg()
  mixed = SegGenotype(g.encoder, (dataclasses.replace(g.decoder[0], upsample='resize'),
                                  dataclasses.replace(g.decoder[1], skip='add')), 8)
  x = jax.random.uniform(_key(0), (2, 13, 13, 1))
  model = models.build(mixed, NUM_CLASSES)
  logits, _ = jax.jit(lambda x: model.init_with_output(_key(1), x, train=False))(x)
  assert logits.shape == (2, 13, 13, 1) and np.all(np.isfinite(logits))
  logits, _ = _output(mixed, 13, dtype=jnp.bfloat16)
  assert logits.dtype == jnp.float32


def test_counting_and_feature_sizes():
  genotype = _seg()
  assert feature_sizes(genotype, 17) == [17, 17, 8, 4]
  counts = count(genotype, 32, 3, NUM_CLASSES)
  _, params = _output(genotype, 32)
  assert counts.params == sum(p.size for p in jax.tree.leaves(params)) and counts.flops > 0


def test_reference_unet_params_by_hand():
  assert set(SEG_ZOO) == {'unet'}
  conv = lambda cin, cout: 9 * cin * cout + 2 * cout  # 3x3 conv and its norm
  widths = (64, 128, 256, 512, 1024)
  expected = conv(3, 64) + conv(64, 64)
  for cin, w in itertools.pairwise(widths):
    expected += conv(cin, w) + conv(w, w)
  for cin, w in itertools.pairwise(widths[::-1]):
    up = 4 * cin * w + 2 * w  # 2x2 up-convolution and its norm
    expected += up + conv(2 * w, w) + conv(w, w)
  expected += 64 + 1  # the 1x1 head
  assert count(unet(), 128, 3, NUM_CLASSES).params == expected == 31_038_593
  assert count(unet(0.25), 128, 3, NUM_CLASSES).params == 1_942_817
  logits, _ = _output(unet(0.25), 64)
  assert logits.shape == (2, 64, 64, 1)


# Loss and metrics.

def test_dice_bce_loss_by_hand():
  logits = jnp.zeros((1, 2, 2, 1))  # p = 0.5 everywhere
  targets = jnp.array([1.0, 1.0, 0.0, 0.0]).reshape(1, 2, 2, 1)
  dice = (2 * 1.0 + 1) / (2.0 + 2.0 + 1)  # sum(p t) = 1, sum(p) = 2, sum(t) = 2
  assert losses.dice_bce_loss(logits, targets) == pytest.approx(np.log(2) + 1 - dice)
  assert losses.dice_bce_loss(logits, targets, dice_weight=0.0) == pytest.approx(np.log(2))
  assert losses.dice_bce_loss(logits, targets, 2.0, 0.0) == pytest.approx(2 * (1 - dice))
  confident = jnp.array([9.0, 9.0, -9.0, -9.0]).reshape(1, 2, 2, 1)
  smoothed = losses.dice_bce_loss(confident, targets, 0.0, 1.0, label_smoothing=0.2)
  expected = optax.sigmoid_binary_cross_entropy(confident, 0.8 * targets + 0.1).mean()
  assert smoothed == pytest.approx(float(expected))
  # Gradients are finite for an empty target too.
  grad = jax.grad(losses.dice_bce_loss)(logits, jnp.zeros_like(targets))
  assert np.all(np.isfinite(grad))


def _masks(*rows):
  return np.array(rows, dtype=np.uint8).reshape(len(rows), 2, 3, 1)


def test_metrics_by_hand_and_against_sklearn():
  truth = _masks([1, 1, 0, 0, 1, 0], [0, 1, 1, 1, 1, 0])
  pred = _masks([1, 0, 0, 1, 1, 0], [0, 1, 1, 1, 1, 1])
  result = seg_metrics.segmentation_metrics(truth, pred.astype(np.float32))
  # Image 1: tp 2, fp 1, fn 1; image 2: tp 4, fp 1, fn 0.
  assert result['dice'] == pytest.approx((4 / 6 + 8 / 9) / 2)
  assert result['iou'] == pytest.approx((2 / 4 + 4 / 5) / 2)
  assert result['precision'] == pytest.approx((2 / 3 + 4 / 5) / 2)
  assert result['recall'] == pytest.approx((2 / 3 + 1) / 2)
  flat = lambda m: m.reshape(len(m), -1)
  for name, sk in (('dice', skm.f1_score), ('iou', skm.jaccard_score),
                   ('precision', skm.precision_score), ('recall', skm.recall_score)):
    assert result[name] == pytest.approx(np.mean([sk(t, p) for t, p in
                                                  zip(flat(truth), flat(pred))])), name


def test_metrics_threshold_probabilities():
  truth = _masks([1, 1, 0, 0, 0, 0])
  probs = np.array([0.9, 0.5, 0.49, 0.1, 0.0, 0.2], np.float32).reshape(1, 2, 3, 1)
  assert seg_metrics.segmentation_metrics(truth, probs)['dice'] == 1.0


def test_empty_mask_conventions():
  empty, full = _masks([0] * 6), _masks([1] * 6)
  both_empty = seg_metrics.segmentation_metrics(empty, empty.astype(np.float32))
  assert {k: both_empty[k] for k in ('dice', 'iou', 'precision', 'recall', 'hd95')} == {
      'dice': 1.0, 'iou': 1.0, 'precision': 1.0, 'recall': 1.0, 'hd95': 0.0}
  for truth, pred in ((empty, full), (full, empty)):
    one_empty = seg_metrics.segmentation_metrics(truth, pred.astype(np.float32))
    assert {k: one_empty[k] for k in ('dice', 'iou', 'precision', 'recall')} == {
        'dice': 0.0, 'iou': 0.0, 'precision': 0.0, 'recall': 0.0}
    assert one_empty['hd95'] == pytest.approx(np.hypot(2, 3))  # the image diagonal


def test_hd95_by_hand():
  truth = np.zeros((12, 12), bool)
  pred = np.zeros((12, 12), bool)
  truth[5, 5] = pred[5, 8] = True
  assert seg_metrics.hd95(truth, pred) == 3.0
  truth[2:8, 2:8] = True
  assert seg_metrics.hd95(truth, truth) == 0.0
  shifted = np.roll(truth, 2, axis=1)
  assert 0 < seg_metrics.hd95(truth, shifted) <= 2.0


# The search space.

def _space(image_size=32, **changes):
  config = common.search_config('seg_space_test', 'cpu').space
  config.update(num_stages=3, num_cells=(0, 1, 2), widths=(8, 16, 32),
                downsample=('max', 'avg', 'conv'), upsamples=('transpose', 'resize'),
                skips=('concat', 'add', 'none'))
  config.update(changes)
  return space_lib.SPACES['segmentation'](config, image_size=image_size, channels=1,
                                          num_classes=NUM_CLASSES)


def test_space_decodes_valid_segmenters_deterministically():
  space = _space()
  assert 'e0.downsample' not in space.searched and 'e1.downsample' in space.searched
  assert {'d0.upsample', 'd1.skip', 'd1.cell'} <= set(space.searched)
  assert not any(g.startswith('d2.') for g in space.choices)
  param = space.parametrization(seed=0)
  for _ in range(20):
    vector = param.sample().value
    genotype = space.decode(vector)
    assert isinstance(genotype, SegGenotype) and genotype.structure_error() == ''
    assert genotype == space.decode(vector.copy())
    assert space.decode(space.encode(space.genes(vector))) == genotype


def test_space_rejects_what_cannot_be_a_segmenter():
  with pytest.raises(ValueError, match='downsample'):
    _space(downsample=('none', 'max'))
  space = _space(image_size=8, num_stages=5, max_params=50_000)
  deep = space.decode(np.zeros(len(space.searched)))
  assert 'feature map' in space.violation(deep)
  g = _seg()
  assert 'decoder' in space.violation(SegGenotype(g.encoder, g.decoder[:1]))
  big = _space(max_params=20_000)
  assert 'parameters' in big.violation(_seg(width=32))
  assert big.violation(_seg(width=4)) == ''


@pytest.mark.parametrize('name', ['pso', 'de', 'ga'])
def test_optimizers_search_the_segmentation_space(name):
  space = _space(image_size=32)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', ng.errors.InefficientSettingsWarning)
    optimizer = optimizers.make(name, space, seed=0, budget=60,
                                population=6, options={})
    hashes = set()
    for _ in range(60):
      candidate = optimizer.ask()
      genotype = space.decode(candidate.value)
      assert space.violation(genotype) == ''
      hashes.add(genotype.hash)
      optimizer.tell(candidate, sum(s.num_cells * s.width for s in genotype.encoder) / 1e3)
  assert len(hashes) > 5
  logits, _ = _output(genotype, 32, channels=1)
  assert logits.shape == (2, 32, 32, 1)


# Training.

def _discs(num, size, seed):
  """Bright discs and ellipses on a noisy background, and their masks."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[:size, :size] + 0.5
  cy, cx = rng.uniform(0.25, 0.75, (2, num, 1, 1)) * size
  ry, rx = rng.uniform(0.12, 0.28, (2, num, 1, 1)) * size
  masks = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < 1
  images = 0.25 + 0.1 * rng.standard_normal((num, size, size)) + 0.4 * masks
  images = np.clip(images * 255, 0, 255).astype(np.uint8)[..., None]
  return datasets.Split(images, masks.reshape(num, -1).any(axis=1).astype(np.int32),
                        tuple(str(i) for i in range(num)), masks.astype(np.uint8)[..., None])


def _train_config(**changes):
  config = common.search_config('seg_train_test', 'smoke').train
  config.update(changes)
  return config


def test_a_network_from_the_space_learns_synthetic_masks(tmp_path):
  space = _space(num_stages=2, num_cells=(1,), cells=('conv', 'residual'), widths=(8, 16),
                 kernels=(3,), dilations=(1,), attention=('none',), stem_widths=(8,),
                 activations=('relu',), learning_rates=(1e-2,), batch_sizes=(32,),
                 augments=(0.0,))
  genes = space.genes(np.zeros(len(space.searched)))
  genes.update({'e0.cell': 'conv', 'e0.width': 8, 'e1.cell': 'conv', 'e1.width': 16,
                'e1.downsample': 'max', 'd0.cell': 'conv', 'd0.width': 8,
                'd0.upsample': 'transpose', 'd0.skip': 'concat'})
  genotype = space.decode(space.encode(genes))
  trained = train_lib.train_and_evaluate(
      genotype, _discs(256, 32, 0), _discs(64, 32, 1), NUM_CLASSES, epochs=5, seed=0,
      train_cfg=_train_config(), aug_config=augment_lib.AugmentConfig())
  result = trained.result
  assert result.status == records.OK, result.error
  assert result.metrics['dice'] > 0.9, result.history
  assert set(result.history[-1]) >= {'dice', 'iou', 'precision', 'recall', 'hd95', 'val_loss'}
  assert result.history[-1]['train_loss'] < result.history[0]['train_loss']
  # The returned state scores the same through evaluate (as the final test will).
  val = _discs(64, 32, 1)
  scores = train_lib.evaluate(trained.state, trained.steps, val, 48)
  assert scores['dice'] == pytest.approx(result.metrics['dice'])
  # Saved and loaded, it predicts per-pixel foreground probabilities.
  state = trained.state
  models.save(str(tmp_path / 'seg'), genotype,
              {'params': state.params, 'batch_stats': state.batch_stats},
              ('background', 'disc'), 32, 1)
  loaded = models.load(str(tmp_path / 'seg'))
  assert loaded.genotype == genotype
  probs = loaded.predict(val.images[:5], batch_size=4)
  assert probs.shape == (5, 32, 32, 1)
  assert seg_metrics.segmentation_metrics(val.masks[:5], probs)['dice'] > 0.85
  _check_predict_writes_masks(str(tmp_path / 'seg'), val, probs, tmp_path)


def _check_predict_writes_masks(model_dir, val, probs, tmp_path):
  """`python -m nas.predict --masks_dir` writes each image's mask at the image's size."""
  images = tmp_path / 'images'
  (images / 'more').mkdir(parents=True)
  Image.fromarray(val.images[0, ..., 0]).save(images / 'a.png')
  Image.fromarray(val.images[1, ..., 0]).resize((48, 64)).save(images / 'more' / 'a.png')
  masks = tmp_path / 'masks'
  run = subprocess.run([sys.executable, '-m', 'nas.predict', f'--model={model_dir}',
                        f'--masks_dir={masks}', str(images), '--json'],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  rows = {os.path.relpath(r['path'], images): r for r in json.loads(run.stdout)}
  assert {k: v['mask'] for k, v in rows.items()} == {
      'a.png': str(masks / 'a_mask.png'),
      os.path.join('more', 'a.png'): str(masks / 'more' / 'a_mask.png')}
  same_size = np.asarray(Image.open(masks / 'a_mask.png'))
  np.testing.assert_array_equal(same_size, np.where(probs[0, ..., 0] > 0.5, 255, 0))
  assert rows['a.png']['foreground'] == pytest.approx(np.mean(same_size > 0))
  resized = np.asarray(Image.open(masks / 'more' / 'a_mask.png'))
  assert resized.shape == (64, 48) and set(np.unique(resized)) <= {0, 255}
  truth = np.asarray(Image.fromarray(val.masks[1, ..., 0] * 255).resize((48, 64)))
  assert seg_metrics.segmentation_metrics((truth > 127)[None, ..., None].astype(np.uint8),
                                          (resized > 0)[None, ..., None].astype(np.float32)
                                          )['dice'] > 0.8
  unasked = subprocess.run([sys.executable, '-m', 'nas.predict', f'--model={model_dir}',
                            str(images)], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert unasked.returncode == 2 and unasked.stderr.strip().endswith(
      'is a segmentation network; pass --masks_dir=DIR to write its masks')


def test_segmentation_settings_and_fitness_metric_checks():
  task = train_lib.task_for(_seg(), _train_config(dice_weight=2.0))
  assert task == train_lib.Segmentation(dice_weight=2.0, bce_weight=1.0)
  assert train_lib.task_for(models.zoo.vgg(), _train_config(dice_weight=2.0)) == (
      train_lib.Classification())
  result = train_lib.train_and_evaluate(
      _seg(batch_size=8), _discs(16, 16, 0), _discs(8, 16, 1), NUM_CLASSES, 1, 0,
      _train_config(), augment_lib.AugmentConfig(), metric='accuracy').result
  assert result.status == records.FAILED and "'accuracy'" in result.error


def test_masks_move_with_their_images():
  split = _discs(4, 16, 0)
  flips = augment_lib.AugmentConfig(flip_lr=True, flip_ud=True, max_rotate_deg=0.0,
                                    max_scale=0.0, max_translate=0.0, max_brightness=0.0,
                                    max_contrast=0.0)
  batch = {'image': jnp.asarray(split.masks * 255), 'seg_mask': jnp.asarray(split.masks)}
  images, targets = train_lib.Segmentation().inputs(
      jax.random.key(3), batch, {'augment': jnp.float32(1.0)}, flips, NUM_CLASSES)
  assert targets.dtype == jnp.float32
  np.testing.assert_array_equal(images, targets)
  assert not np.array_equal(targets, split.masks)  # something was flipped
