"""The search space: decoding, constraints, genotype records, and every optimizer on it."""
import json
import subprocess
import sys
import warnings
import zlib

import jax
import jax.numpy as jnp
import nevergrad as ng
import numpy as np
import pytest

from experiments import common
import models
from models.genotype import Genotype, Stage, TrainGenes
from nas import errors
from nas import optimizers
from nas import space as space_lib

ROOT = __file__.rsplit('/tests/', 1)[0]


def _space(image_size=28, **changes):
  # A fixed space, independent of how the experiments' presets change.
  config = common.search_config('space_test', 'cpu').space
  config.update(num_stages=4, num_cells=(0, 1, 2), widths=(16, 32, 64, 128),
                learning_rates=(1e-3, 3e-3))
  config.update(changes)
  return space_lib.SearchSpace(config, image_size=image_size, channels=1, num_classes=4)


def _sample_genotype():
  return Genotype(stages=(
      Stage(2, 'conv', 3, 16, 1, 'se', 'max'),
      Stage(0, 'sep', 5, 32, 2, 'cbam', 'conv'),
      Stage(1, 'residual', 3, 32, 1, 'none', 'avg'),
  ), stem_width=16, dropout=0.2, train=TrainGenes(learning_rate=3e-3))


def test_json_round_trip():
  genotype = _sample_genotype()
  assert Genotype.from_json(genotype.to_json()) == genotype
  assert Genotype.from_dict(json.loads(genotype.to_json())).hash == genotype.hash


def test_hash_is_stable_across_processes_and_versions():
  genotype = _sample_genotype()
  code = ('import sys; sys.path.insert(0, %r); from models.genotype import Genotype; '
          'print(Genotype.from_json(sys.stdin.read()).hash)' % ROOT)
  other = subprocess.run([sys.executable, '-c', code], input=genotype.to_json(), text=True,
                         capture_output=True, check=True).stdout.strip()
  assert other == genotype.hash
  # A store written today must still be readable by tomorrow's code: the hash of this
  # genotype is part of the on-disk format.
  assert genotype.hash == 'e4c0658284b7b1f2'


def test_genes_without_effect_do_not_change_the_hash():
  base = _sample_genotype()
  stages = list(base.stages)
  stages[1] = Stage(0, 'mbconv', 3, 32, 1, 'se', 'conv')  # a stage without cells
  assert Genotype(tuple(stages), 16, dropout=0.2, train=base.train).hash == base.hash
  stages[1] = Stage(3, 'identity', 7, 32, 2, 'none', 'conv')  # identity cells compute nothing
  assert Genotype(tuple(stages), 16, dropout=0.2, train=base.train).hash == base.hash
  stages[1] = Stage(1, 'conv', 3, 32, 1, 'none', 'conv')  # a real cell does count
  assert Genotype(tuple(stages), 16, dropout=0.2, train=base.train).hash != base.hash
  pooled = Stage(1, 'maxpool', 3, 16, 1, 'none', 'none')
  assert (Genotype((pooled,)).hash ==
          Genotype((Stage(1, 'maxpool', 7, 16, 2, 'none', 'none'),)).hash)


def test_describe_is_one_line():
  text = _sample_genotype().describe()
  assert '\n' not in text
  assert '2xconv3 w16+se' in text and 'lr0.003' in text


def test_decode_is_deterministic_and_uses_fixed_values():
  space = _space(learning_rates=(1e-3,), kernels=(3, 5))
  assert 'learning_rate' not in space.searched and 's0.kernel' in space.searched
  param = space.parametrization(seed=0)
  for _ in range(20):
    vector = param.sample().value
    genotype = space.decode(vector)
    assert genotype == space.decode(vector.copy())
    assert genotype.train.learning_rate == 1e-3
    assert space.decode(space.encode(space.genes(vector))) == genotype


def test_feature_map_constraint_rejects_without_building():
  space = _space(image_size=28)
  stages = tuple(Stage(1, 'conv', 3, 16, 1, 'none', 'max') for _ in range(5))
  assert 'feature map' in space.violation(Genotype(stages))
  assert space.violation(Genotype(stages[:3])) == ''


def test_parameter_budget_rejects_large_networks():
  space = _space(image_size=28, max_params=20_000)
  small = Genotype((Stage(1, 'conv', 3, 16, 1, 'none', 'max'),), stem_width=8)
  large = Genotype((Stage(2, 'conv', 3, 128, 1, 'none', 'max'),), stem_width=8)
  assert space.violation(small) == ''
  assert 'parameters' in space.violation(large)


def test_stage_widths_give_each_level_its_own_widths():
  space = _space(stage_widths=((16,), (32,), (64, 128), (128,)))
  assert [space.choices[f's{i}.width'] for i in range(4)] == [(16,), (32,), (64, 128), (128,)]
  assert 's2.width' in space.searched and 's0.width' not in space.searched
  with pytest.raises(ValueError, match='2 entries for 4 stages'):
    _space(stage_widths=((16,), (32,)))
  config = common.segmentation_config('space_test', 'cpu').space
  config.update(num_stages=3, stage_widths=((8,), (16, 32), (64,)))
  seg = space_lib.SegmentationSpace(config, image_size=32, channels=3, num_classes=2)
  # Decoder stage 0 works at encoder stage 1's resolution, decoder stage 1 at stage 0's.
  assert seg.choices['d0.width'] == (16, 32) and seg.choices['d1.width'] == (8,)
  genotype = seg.decode(seg.parametrization(seed=0).sample().value)
  assert genotype.encoder[0].width == 8 and genotype.encoder[2].width == 64


def test_grid_enumerates_every_combination_once():
  space = _space(num_stages=1, num_cells=(0, 1), cells=('conv', 'sep'), kernels=(3,),
                 widths=(8,), dilations=(1,), attention=('none',), downsample=('max',),
                 stem_widths=(8,), activations=('relu',), dropouts=(0.0,),
                 learning_rates=(1e-3,))
  points = list(space.grid())
  assert len(points) == space.grid_size() == 4
  assert len({tuple(space.genes(p).items()) for p in points}) == 4
  # Two of the four are the same network: a stage without cells has no cell type.
  assert len({space.decode(p).hash for p in points}) == 3


def _build_output_shape(genotype: Genotype, image_size: int):
  model = models.build(genotype, num_classes=4)
  x = jax.ShapeDtypeStruct((1, image_size, image_size, 1), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape),
                                                train=False))
  out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros(x.shape), train=False), variables)
  return out.shape


def test_tpevo_chooses_the_depth_then_the_other_genes():
  """Phase one varies the cells per stage alone; phase two keeps phase one's best depth."""
  space = _space()
  depth_genes = [g for g in space.searched if g.endswith('.num_cells')]
  middle = {g: v for g, v in space.genes(np.zeros(space.dimension)).items()
            if g not in depth_genes}
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', ng.errors.InefficientSettingsWarning)
    optimizer = optimizers.make('tpevo', space, seed=0, budget=20, population=5, options={},
                                shared_start=True)
    asked, told = [], set()
    for _ in range(4):
      batch = [optimizer.ask() for _ in range(5)]
      # A network told in an earlier generation is never asked again.
      assert not told & {space.decode(c.value).hash for c in batch}
      told |= {space.decode(c.value).hash for c in batch}
      for candidate in batch:
        genes = space.genes(candidate.value)
        depth = tuple(genes[g] for g in depth_genes)
        # Deeper is worse, so DE has a direction and phase one a unique best.
        loss = sum(depth) + 0.1 * sum(i * d for i, d in enumerate(depth))
        optimizer.tell(candidate, loss)
        asked.append((loss, depth, {g: v for g, v in genes.items() if g not in depth_genes}))
  phase_one, phase_two = asked[:10], asked[10:]
  assert all(others == middle for _, _, others in phase_one)
  assert [d for _, d, _ in phase_one[:5]] == [
      tuple(space.genes(p)[g] for g in depth_genes) for p in space.first_generation(0, 5)]
  assert len({d for _, d, _ in phase_one}) > 5
  best_depth = min(phase_one, key=lambda told: told[0])[1]
  assert all(d == best_depth for _, d, _ in phase_two)
  assert len({json.dumps(others, sort_keys=True) for _, _, others in phase_two}) == 10
  with pytest.raises(errors.UserError, match='space.num_cells'):
    optimizers.make('tpevo', _space(num_cells=(1,)), 0, 20, 5, {})


def _repeats(name: str, seed: int, new_networks: bool) -> int:
  """Asks of a network asked before, in 6 generations of 6 with a loss that has plateaus."""
  space = _space(num_stages=2, widths=(16, 32))
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', ng.errors.InefficientSettingsWarning)
    optimizer = optimizers.make(name, space, seed=seed, budget=36, population=6, options={},
                                shared_start=True, new_networks=new_networks)
    asked, repeats = set(), 0
    for _ in range(6):
      batch = [optimizer.ask() for _ in range(6)]
      for candidate in batch:
        genotype_hash = space.decode(candidate.value).hash
        repeats += genotype_hash in asked
        asked.add(genotype_hash)
      for candidate in batch:  # told as a synchronous search tells: after the whole batch
        genes = space.genes(candidate.value)
        optimizer.tell(candidate, float(sum(zlib.crc32(f'{k}={v}'.encode()) % 7
                                            for k, v in genes.items())))
  return repeats


@pytest.mark.parametrize('name, seed', [('de', 3), ('pso', 0)])
def test_new_networks_asks_anew_where_the_optimizer_would_repeat_a_network(name, seed):
  without, with_new_networks = _repeats(name, seed, False), _repeats(name, seed, True)
  assert without >= 5
  # DE finds a new network within 100 asks every time; PSO's swarm, converged on this small
  # space, does not always.
  assert with_new_networks == 0 if name == 'de' else with_new_networks < without / 3


def _asks_after_the_shared_start(name: str, start_losses: list[float]) -> list[str]:
  """Two generations of 6 after the shared first one, told `start_losses`."""
  space = _space(num_stages=2, widths=(16, 32))
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', ng.errors.InefficientSettingsWarning)
    optimizer = optimizers.make(name, space, seed=0, budget=24, population=6, options={},
                                shared_start=True)
    start = [optimizer.ask() for _ in range(6)]
    np.testing.assert_array_equal([c.value for c in start], space.first_generation(0, 6))
    for candidate, loss in zip(start, start_losses):
      optimizer.tell(candidate, loss)
    asked = []
    for _ in range(2):
      batch = [optimizer.ask() for _ in range(6)]
      hashes = [space.decode(c.value).hash for c in batch]
      for candidate, genotype_hash in zip(batch, hashes):
        optimizer.tell(candidate, float(zlib.crc32(genotype_hash.encode()) % 7))
      asked += hashes
  return asked


@pytest.mark.parametrize('name', sorted(optimizers.EXTENSIBLE - {'random'}))
def test_every_optimizer_learns_from_the_shared_first_generation(name):
  """What it asks next depends on how the shared first population scored.

  Nevergrad hands a suggested point to CMA as "not asked", which pycma refused: CMA ignored
  the shared start until optimizers._with_start injected it.
  """
  losses = [float(i) for i in range(6)]
  assert (_asks_after_the_shared_start(name, losses) !=
          _asks_after_the_shared_start(name, losses[::-1]))


def test_tpevo_phase_two_before_any_phase_one_result_is_a_user_error():
  # Asynchronous workers, as many as phase one's budget, ask on before any result is told.
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', ng.errors.InefficientSettingsWarning)
    optimizer = optimizers.make('tpevo', _space(), seed=0, budget=20, population=5, options={})
    for _ in range(10):
      optimizer.ask()
    with pytest.raises(errors.UserError, match='search.mode=sync'):
      optimizer.ask()


def test_tpevo_with_no_trainable_depth_in_phase_one_is_a_user_error():
  # The middle downsample halves the size, and four halvings leave nothing of 12 px.
  space = _space(image_size=12, downsample=('max', 'avg', 'conv', 'none'))
  with pytest.raises(errors.UserError, match=r'no depth of that network is trainable \(the '
                     r'shallowest: feature map shrinks to 0x0 \(minimum 1\) at 12px\)'):
    optimizers.make('tpevo', space, seed=0, budget=20, population=5, options={})


@pytest.mark.parametrize('name', sorted(n for n in optimizers.OPTIMIZERS if n != 'grid'))
def test_every_optimizer_searches_the_space(name):
  """300 candidates decode, all trainable (the optimizer redraws the rest); they build."""
  # At 12 px a third of the space is untrainable: four stages that all halve the size.
  space = _space(image_size=12, downsample=('max', 'avg', 'none', 'conv'))
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', ng.errors.InefficientSettingsWarning)
    optimizer = optimizers.make(name, space, seed=0, budget=300,
                                population=10, options={})
    valid, invalid, hashes = [], 0, set()
    for _ in range(30):
      batch = [optimizer.ask() for _ in range(10)]
      for candidate in batch:
        genotype = space.decode(candidate.value)
        reason = space.violation(genotype)
        assert reason == space.violation(space.decode(candidate.value))
        hashes.add(genotype.hash)
        if reason:
          invalid += 1
          assert min(models.counting.feature_sizes(genotype, 12)) < 1
        else:
          valid.append(genotype)
        # A loss that rewards small, valid networks, so adaptive optimizers move.
        loss = 1.0 if reason else sum(s.num_cells * s.width for s in genotype.stages) / 1e3
        optimizer.tell(candidate, loss)
  assert valid, f'{name} proposed no valid genotype'
  # The parametrization's cheap constraint makes the optimizer redraw them.
  assert invalid == 0, f'{name} proposed {invalid} untrainable genotypes out of 300'
  assert len(hashes) > 5, f'{name} proposed only {len(hashes)} distinct genotypes'
  rng = np.random.default_rng(0)
  for genotype in rng.choice(valid, size=min(3, len(valid)), replace=False):
    for image_size in (12, 64, 224):
      assert _build_output_shape(genotype, image_size) == (1, 4)
