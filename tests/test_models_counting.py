"""Parameter and FLOP counts against hand counts."""
import jax
import jax.numpy as jnp
import pytest

import models
from models.counting import Counts, count, param_count
from models.genotype import Genotype, Stage, TrainGenes

# stem conv 3->8, then a stage of width 16: one 3x3 conv cell 8->16.
TINY = Genotype(stages=(Stage(1, 'conv', 3, 16),), stem_width=8)


def test_params_equal_a_hand_count():
  stem = 3 * 3 * 3 * 8 + 2 * 8  # kernel (no bias) + BatchNorm scale and bias = 232
  cell = 3 * 3 * 8 * 16 + 2 * 16  # 3x3 kernel + BatchNorm = 1184
  head = 16 * 10 + 10  # Dense = 170
  assert count(TINY, 8, 3, 10).params == stem + cell + head == 1586


def test_flops_are_close_to_twice_the_hand_counted_macs():
  # XLA counts the taps that hit real pixels: with 'SAME' padding at 8 px a 3x3 kernel has
  # 2 + 6 * 3 + 2 = 22 taps per row instead of 24, so 22 * 22 = 484 per channel pair.
  macs = (484 * 3 * 8  # stem
          + 484 * 8 * 16  # conv cell
          + 16 * 10)  # head
  ratio = count(TINY, 8, 3, 10).flops / (2 * macs)
  # The rest is norms, activations and pooling: a few percent at this size.
  assert 1.0 <= ratio <= 1.15, ratio


def test_flops_scale_with_pixels_and_params_do_not():
  small = count(TINY, 16, 3, 10)
  large = count(TINY, 32, 3, 10)
  assert small.params == large.params
  assert 3.5 < large.flops / small.flops < 4.2


def test_param_count_of_real_variables_matches_count():
  model = models.build(TINY, 10)
  variables = jax.jit(lambda x: model.init(jax.random.key(0, impl='rbg'), x, train=False))(
      jnp.zeros((1, 8, 8, 3)))
  assert 'batch_stats' in variables  # ...and is not counted as parameters.
  assert param_count(variables) == param_count(variables['params']) == 1586


def test_count_is_memoised_by_hash():
  genotype = Genotype(stages=(Stage(1, 'conv', 5, 24), Stage(0, width=8)), stem_width=8)
  first = count(genotype, 12, 1, 4)
  # Same hash (a zero-cell stage ignores its cell genes): answered from the cache.
  same = Genotype(stages=(Stage(1, 'conv', 5, 24), Stage(0, 'sep', 7, 8, 2, 'se')),
                  stem_width=8)
  assert same.hash == genotype.hash
  assert count(same, 12, 1, 4) is first
  # Training genes are part of the hash, so this is counted again, to the same result.
  retrained = Genotype(stages=genotype.stages, stem_width=8, train=TrainGenes(batch_size=8))
  assert count(retrained, 12, 1, 4) == first
  assert count(genotype, 12, 3, 4) != first  # The key includes the input channels...
  assert count(genotype, 12, 1, 5).params == first.params + 8 + 1  # ...and the classes.


def test_count_rejects_genotypes_that_shrink_below_one_pixel():
  genotype = Genotype(stages=(Stage(1, 'conv', 3, 8, downsample='max'),) * 4, stem_width=8)
  assert isinstance(count(genotype, 16, 3, 2), Counts)
  with pytest.raises(ValueError, match='below 1 px'):
    count(genotype, 8, 3, 2)
