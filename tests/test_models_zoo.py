"""Reference networks: valid genotypes that build at 32 and 64 px with plausible sizes."""
import jax
import jax.numpy as jnp
import pytest

import models
from models.counting import count, feature_sizes
from models.genotype import Genotype
from models.zoo import ZOO, resnet18, vgg

# Parameters at width multiplier 1, 10 classes (see the zoo docstrings for the differences
# from the published networks, which have the counts in the comments).
PARAM_RANGES = {
    'vgg': (14e6, 17e6),  # VGG-16-BN with one dense layer: 14.7M.
    'resnet18': (11e6, 14.5e6),  # 11.2M.
    'mobilenetv2': (1.4e6, 3e6),  # 2.2M with 10 classes and expansion 6; ours expands 4.
    'drsn_cw': (2e5, 1e6),
    'psocnn': (1e5, 1e6),
}


def test_zoo_has_the_agreed_networks():
  assert set(ZOO) == set(PARAM_RANGES)


@pytest.mark.parametrize('name', sorted(ZOO))
def test_zoo_network_builds_at_32_and_64_px(name):
  genotype = ZOO[name]()
  assert isinstance(genotype, Genotype)
  model = models.build(genotype, 10)
  for size in (32, 64):
    assert min(feature_sizes(genotype, size)) >= 1
    x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    logits = jax.eval_shape(
        lambda x: model.init_with_output(jax.random.key(0), x, train=False)[0], x)
    assert logits.shape == (2, 10)
  low, high = PARAM_RANGES[name]
  assert low < count(genotype, 32, 3, 10).params < high


@pytest.mark.parametrize('name', sorted(ZOO))
def test_width_multiplier_scales_params(name):
  full = count(ZOO[name](), 32, 3, 10).params
  half = count(ZOO[name](width_multiplier=0.5), 32, 3, 10).params
  # Convolutions scale with width squared; MobileNetV2's fixed 1280-wide head does not.
  low = 2.5 if name == 'mobilenetv2' else 3.5
  assert low < full / half < 4.5


def test_mobilenetv2_widths_stay_multiples_of_8():
  genotype = ZOO['mobilenetv2'](width_multiplier=0.125)
  widths = [genotype.stem_width] + [s.width for s in genotype.stages]
  assert widths == [8, 8, 8, 8, 8, 16, 24, 40, 1280]


@pytest.mark.parametrize('depth', [11, 13, 16, 19])
def test_vgg_depth_counts_weight_layers(depth):
  genotype = vgg(depth=depth)
  convs = 1 + sum(s.num_cells for s in genotype.stages)  # stem and conv cells
  assert convs + 3 == depth  # VGG's depth counts its three dense layers.
  assert [s.downsample for s in genotype.stages] == ['none'] + ['max'] * 4


def test_resnet18_params_by_hand():
  conv = lambda cin, cout: 9 * cin * cout
  bn = lambda c: 2 * c
  block = lambda w: 2 * (conv(w, w) + bn(w))
  expected = conv(3, 64) + bn(64) + 2 * block(64)  # stem and stage 1
  for cin, w in ((64, 128), (128, 256), (256, 512)):
    expected += conv(cin, w) + bn(w) + 2 * block(w)  # stride-2 conv, then two blocks
  expected += 512 * 10 + 10
  assert count(resnet18(), 32, 3, 10).params == expected == 14_098_506
  # Max pooling instead of the stride-2 conv: the first block of each stage changes the
  # width itself (3x3 cin->w, 3x3 w->w, 1x1 shortcut with its norm), the second is plain.
  first_blocks = sum(conv(cin, w) + bn(w) + conv(w, w) + bn(w) + cin * w + bn(w) + block(w)
                     - conv(cin, w) - bn(w) - 2 * block(w)
                     for cin, w in ((64, 128), (128, 256), (256, 512)))
  assert count(resnet18(downsample='max'), 32, 3, 10).params == expected + first_blocks
