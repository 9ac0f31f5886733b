"""The fixed networks and batch that the step benchmarks time (train_step, compile_time)."""
from models import zoo
from models.genotype import Genotype, Stage

BATCH = 64
CHANNELS = 3
CLASSES = 4


def _plain(cell: str, dilation: int = 1, attention: str = 'none') -> Genotype:
  """A 9-convolution CNN (stem, then 4 stages of 2 cells), as in ANCHORS.md's CPU table."""
  return Genotype((Stage(2, cell, 3, 32, dilation, attention, 'none'),
                   Stage(2, cell, 3, 64, dilation, attention, 'max'),
                   Stage(2, cell, 3, 128, dilation, attention, 'max'),
                   Stage(2, cell, 3, 256, dilation, attention, 'max')), stem_width=32)


NETWORKS = {
    'plain': lambda: _plain('conv'),
    'sep': lambda: _plain('sep'),
    'dilated': lambda: _plain('conv', dilation=2),
    'se': lambda: _plain('conv', attention='se'),
    'shrinkage': lambda: _plain('shrinkage'),
    'resnet18': lambda: zoo.resnet18(width_multiplier=0.5),
    'mobilenetv2': lambda: zoo.mobilenetv2(width_multiplier=0.5),
}
