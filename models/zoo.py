"""Reference networks written as genotypes, i.e. as points of the search space.

Common differences from the papers, forced by the genotype's layout (stem, then stages of
downsample - identical cells, the first of which changes the width - attention, then global
pooling and one dense layer): every conv is followed by a norm; downsampling is a separate
op at the start of a stage instead of a stride inside the first block; the classifier is
global average pooling and a single dense layer. All use a small-image stem (3x3, stride 1).
Parameter counts below are for 10 classes at width multiplier 1.
"""
from __future__ import annotations

from collections.abc import Callable

from models.genotype import DecoderStage, Genotype, SegGenotype, Stage


def _scale(width: int, multiplier: float) -> int:
  return max(1, round(width * multiplier))


def _divisible_by_8(width: int, multiplier: float) -> int:
  """MobileNetV2's scaling: the nearest multiple of 8, at least 8, and at least 90% of it.

  The reference implementations (TF-slim, Keras) round every scaled width so, which keeps
  narrow multipliers from making layers of a few channels.
  """
  scaled = width * multiplier
  rounded = max(8, int(scaled + 4) // 8 * 8)
  return rounded + 8 if rounded < 0.9 * scaled else rounded


_VGG_STAGES = {
    11: (1, 1, 2, 2, 2),
    13: (2, 2, 2, 2, 2),
    16: (2, 2, 3, 3, 3),
    19: (2, 2, 4, 4, 4),
}


def vgg(width_multiplier: float = 1.0, depth: int = 16) -> Genotype:
  """VGG-`depth` with BatchNorm (the CIFAR variant: GAP and one dense layer).

  VGG's first conv is the stem, so stage 1 has one conv cell fewer. The five max pools
  come first in stages 2..5 and the last pool before the classifier is replaced by
  global average pooling, so the network downsamples 4 times, not 5. VGG-16: 14.7M
  parameters, as VGG-16-BN with one dense layer.
  """
  widths = [_scale(w, width_multiplier) for w in (64, 128, 256, 512, 512)]
  counts = list(_VGG_STAGES[depth])
  counts[0] -= 1  # The stem.
  stages = tuple(
      Stage(n, 'conv', 3, w, downsample='none' if i == 0 else 'max')
      for i, (n, w) in enumerate(zip(counts, widths)))
  return Genotype(stages=stages, stem_width=widths[0])


def resnet18(width_multiplier: float = 1.0, downsample: str = 'conv') -> Genotype:
  """ResNet-18 for small images: 3x3 stem, 4 stages of 2 basic blocks, widths 64..512.

  ResNet strides the first conv of stages 2-4 and gives their first block a 1x1 strided
  shortcut. Here `downsample='conv'` puts a separate 3x3 stride-2 conv-norm-act before the
  two full blocks: one extra 3x3 conv per downsampling stage, 14.1M parameters instead
  of 11.2M. `downsample='max'` (or 'avg') pools instead, and the first block changes the
  width with a 1x1 shortcut as in the paper: 11.2M.
  """
  widths = [_scale(w, width_multiplier) for w in (64, 128, 256, 512)]
  stages = tuple(
      Stage(2, 'residual', 3, w, downsample='none' if i == 0 else downsample)
      for i, w in enumerate(widths))
  return Genotype(stages=stages, stem_width=widths[0])


# MobileNetV2's (width, blocks, stride) table after its first conv.
_MOBILENETV2_STAGES = (
    (16, 1, 1), (24, 2, 2), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1))


def mobilenetv2(width_multiplier: float = 1.0) -> Genotype:
  """MobileNetV2 with a stride-1 stem, so 4 downsamplings instead of 5.

  Differences: expansion ratio 4 in every block (MobileNetV2: 6, and 1 in the first);
  the stride-2 depthwise conv of a stage's first block becomes a 2x2 max pool before it;
  the final 1x1 conv to 1280 channels is a stage with no cells (not scaled below 1280,
  as in the paper). Activation is ReLU instead of ReLU6. 1.6M parameters (the paper's
  network with expansion 6 and 10 classes: 2.2M). Widths scale as in the reference code,
  to multiples of 8 (at 1/8: 8 to 40 channels, not 2 to 40).
  """
  stages = [
      Stage(n, 'mbconv', 3, _divisible_by_8(w, width_multiplier),
            downsample='max' if stride == 2 else 'none')
      for w, n, stride in _MOBILENETV2_STAGES]
  stages.append(Stage(0, width=max(1280, _divisible_by_8(1280, width_multiplier))))
  return Genotype(stages=tuple(stages), stem_width=_divisible_by_8(32, width_multiplier))


def drsn_cw(width_multiplier: float = 1.0, units: int = 4) -> Genotype:
  """Deep residual shrinkage network with channel-wise thresholds (Zhao et al. 2020).

  Three stages of `units` shrinkage units at widths 16, 32, 64 (ResNet-CIFAR widths;
  the paper's 4, 8, 16 are width_multiplier=0.25), downsampling by a 3x3 stride-2 conv
  before stages 2 and 3. The paper strides its first conv and the first unit of every
  stage; its units are pre-activation (see ShrinkageCell). 0.46M parameters.
  """
  widths = [_scale(w, width_multiplier) for w in (16, 32, 64)]
  stages = tuple(
      Stage(units, 'shrinkage', 3, w, downsample='none' if i == 0 else 'conv')
      for i, w in enumerate(widths))
  return Genotype(stages=stages, stem_width=widths[0])


def psocnn(width_multiplier: float = 1.0) -> Genotype:
  """A plain CNN of the kind psoCNN (Fernandes Junior & Yen 2019) finds.

  conv 3x3/32 - conv 5x5/32 - maxpool - 2x conv 3x3/64 - maxpool - conv 3x3/128. psoCNN
  searches layer by layer (conv, pool, fully connected) without norms; here every conv
  has a norm and the fully connected layers are one dense layer after global pooling.
  0.26M parameters.
  """
  m = width_multiplier
  return Genotype(
      stages=(Stage(1, 'conv', 5, _scale(32, m)),
              Stage(2, 'conv', 3, _scale(64, m), downsample='max'),
              Stage(1, 'conv', 3, _scale(128, m), downsample='max')),
      stem_width=_scale(32, m))


ZOO: dict[str, Callable[..., Genotype]] = {
    'vgg': vgg,
    'resnet18': resnet18,
    'mobilenetv2': mobilenetv2,
    'drsn_cw': drsn_cw,
    'psocnn': psocnn,
}


def unet(width_multiplier: float = 1.0, depth: int = 4) -> SegGenotype:
  """U-Net (Ronneberger et al. 2015) with 'same' padding and BatchNorm.

  Five levels of two 3x3 convs at widths 64..1024, 2x2 max pooling down, 2x2 up-convolution
  and concatenation up, a 1x1 conv to the logits. U-Net's first conv is the stem, so
  encoder stage 0 has one conv cell. Differences: every conv (and the up-convolution) is
  followed by a norm and a ReLU, and convs have no bias; padding keeps the sizes, so no
  cropping. 31.04M parameters for binary masks, 23 GFLOPs at 128x128 (the paper's network:
  31.0M); width_multiplier=0.25 gives 1.94M, the size of the hand-written U-Net of the
  Kvasir-SEG anchors.
  """
  widths = [_scale(64 * 2**i, width_multiplier) for i in range(depth + 1)]
  encoder = tuple(
      Stage(1 if i == 0 else 2, 'conv', 3, w, downsample='none' if i == 0 else 'max')
      for i, w in enumerate(widths))
  decoder = tuple(DecoderStage(Stage(2, 'conv', 3, w), upsample='transpose', skip='concat')
                  for w in reversed(widths[:-1]))
  return SegGenotype(encoder=encoder, decoder=decoder, stem_width=widths[0])


# Reference segmenters, kept apart from the classifiers: they build from SegGenotypes.
SEG_ZOO: dict[str, Callable[..., SegGenotype]] = {
    'unet': unet,
}
