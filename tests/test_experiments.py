"""The experiment registry, every experiment's config, and command-line overrides."""
import warnings

import nevergrad as ng
import pytest

import experiments
from experiments.common import PRESETS
from models import counting
from models import zoo
from nas import errors
from nas import optimizers
from nas import seg_metrics
from nas import space as space_lib


def test_registry_lists_every_experiment_at_every_preset():
  names = experiments.names()
  assert {'pso_brain_mri', 'pso_synthetic'} <= set(names)
  for name in names:
    for preset in PRESETS:
      config = experiments.get_config(name, preset)
      assert config.experiment == name and config.preset == preset


def test_overrides_set_typed_fields():
  config = experiments.get_config('pso_brain_mri', 'smoke', [
      'search.budget=20', 'search.optimizer=de', 'space.widths=(8, 16, 32)',
      'train.time_limit_s=30', 'space.kernels=5', 'data.dedup=True'])
  assert config.search.budget == 20 and config.search.optimizer == 'de'
  assert config.space.widths == (8, 16, 32) and config.space.kernels == (5,)
  assert config.train.time_limit_s == 30.0 and config.data.dedup is True


def test_overrides_add_keys_to_the_open_dicts_only():
  config = experiments.get_config('pso_brain_mri', 'smoke', [
      'data.options.root=/data/my set', 'data.options.test_fraction=0.2',
      'search.options.popsize=8', 'executor.slurm.additional_parameters.account=lab'])
  assert config.data.options.to_dict() == {'root': '/data/my set', 'test_fraction': 0.2}
  assert config.search.options.popsize == 8
  assert config.executor.slurm.additional_parameters.account == 'lab'
  with pytest.raises(errors.UserError, match="data has no 'rot'"):
    experiments.get_config('pso_brain_mri', 'smoke', ['data.rot=/x'])


@pytest.mark.parametrize('override, message', [
    ('search.budgt=3', "did you mean budget"),
    ('serch.budget=3', "did you mean search"),
    ('search.budget=abc', 'cannot read'),
    ('search.budget=2.5', r'expected int, got float$'),
    ('search.budget', 'has no value'),
])
def test_bad_overrides_say_what_is_wrong(override, message):
  with pytest.raises(errors.UserError, match=message):
    experiments.get_config('pso_brain_mri', 'smoke', [override])


def test_config_differences_name_what_changes_the_trials_and_skip_where_they_run():
  then = experiments.get_config('pso_brain_mri', 'smoke').to_dict()
  now = experiments.get_config('pso_brain_mri', 'smoke', [
      'search.budget=2', 'executor.kind=dask', 'executor.compile_ahead=0',
      'distributed.process_id=1', 'distributed.coordinator_address=host0:1234',
      'train.checkpoint_every_epochs=2', 'final.checkpoint_every_epochs=0']).to_dict()
  del then['train']['patience']  # a field missing for no known reason
  del then['final']['checkpoint_every_epochs']  # checkpoints change no result
  assert experiments.config_differences(then, now) == [
      'search.budget: 4 -> 2', 'train.patience: (absent) -> 0']
  # A field that a later version added reads as its value from before it existed.
  del then['train']['class_balanced'], then['search']['new_networks']
  later = experiments.get_config('pso_brain_mri', 'smoke', ['search.new_networks=True'])
  assert experiments.config_differences(then, later.to_dict()) == [
      'search.new_networks: False -> True', 'train.patience: (absent) -> 0']
  # A larger budget extends the search that `then` started.
  larger = experiments.get_config('pso_brain_mri', 'smoke', ['search.budget=20']).to_dict()
  assert experiments.config_differences(now, larger) == []
  many = experiments.get_config('pso_brain_mri', 'smoke', [
      f'{field}=7' for field in ('seed', 'search.population', 'final.seeds')]).to_dict()
  assert experiments.config_differences(then, many, shown=2)[-1] == '2 more'


@pytest.mark.parametrize('overrides, differences', [
    (['executor.kind=process', 'executor.workers=1'], []),  # one slot, as local's
    (['executor.kind=process', 'executor.workers=3'], [
        'executor slots of an async search: 1 -> 3']),
    (['executor.kind=slurm', 'executor.slurm.array_parallelism=8'], [
        'executor slots of an async search: 1 -> 8']),
])
def test_an_async_search_resumes_only_with_as_many_executor_slots(overrides, differences):
  # The async search asks as many candidates at a time as its executor trains at once.
  then = experiments.get_config('pso_brain_mri', 'smoke', ['search.mode=async']).to_dict()
  now = experiments.get_config('pso_brain_mri', 'smoke',
                               ['search.mode=async', *overrides]).to_dict()
  assert experiments.config_differences(then, now) == differences
  sync = experiments.get_config('pso_brain_mri', 'smoke', overrides).to_dict()
  assert experiments.config_differences(
      experiments.get_config('pso_brain_mri', 'smoke').to_dict(), sync) == []


def test_unknown_experiment_suggests_near_names():
  with pytest.raises(errors.UserError, match='did you mean pso_brain_mri'):
    experiments.get_config('pso_brain_mr', 'smoke')


def _space(config) -> space_lib.SearchSpace:
  """The experiment's space: segmenters for an experiment ranked by a segmentation metric."""
  if config.search.metric in seg_metrics.SEG_FITNESS_METRICS:
    return space_lib.SPACES['segmentation'](config.space, config.data.image_size,
                                            config.data.channels, num_classes=2)
  return space_lib.SPACES['classification'](config.space, config.data.image_size,
                                            config.data.channels, num_classes=4)


# Every experiment builds at every preset, and its optimizer proposes a network its space
# decodes: the path a search takes before anything trains.
@pytest.mark.parametrize('name', experiments.names())
def test_every_experiment_proposes_a_network_at_every_preset(name):
  for preset in PRESETS:
    config = experiments.get_config(name, preset)
    space = _space(config)
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', ng.errors.InefficientSettingsWarning)
      optimizer = optimizers.make(config.search.optimizer, space, config.seed,
                                  config.search.budget, config.search.population,
                                  config.search.options.to_dict())
      genotype = space.decode(optimizer.ask().value)
    stages = genotype.encoder if hasattr(genotype, 'encoder') else genotype.stages
    assert len(stages) == config.space.num_stages, (name, preset)
    assert config.search.metric in ('accuracy', 'auc', 'dice')


@pytest.mark.parametrize('name', experiments.names())
def test_smoke_presets_are_small(name):
  c = experiments.get_config(name, 'smoke')
  assert c.search.budget <= 8
  assert max(c.search.fidelity.rungs, default=c.train.epochs) <= 4
  assert c.final.epochs <= 4 and c.final.top_k * c.final.seeds <= 5
  assert c.data.image_size <= 32


def test_registry_skips_shared_modules():
  assert not [n for n in experiments.names() if n.startswith('_') or n == 'common']
  assert {'tpevo_brain_mri', 'ga_brain_mri', 'grid_brain_mri', 'psocnn_brain_mri',
          'random_brain_mri', 'zoo_brain_mri', 'pso_pneumoniamnist', 'random_pneumoniamnist',
          'pso_breastmnist', 'random_breastmnist', 'pso_dermamnist',
          'random_dermamnist'} <= set(experiments.names())


@pytest.mark.parametrize('preset', PRESETS)
def test_baselines_search_what_their_pso_experiment_searches(preset):
  """Random search (and TPEvo's optimizer) differ from PSO in the optimizer alone."""
  for pso, other, optimizer in [('pso_brain_mri', 'random_brain_mri', 'random'),
                                ('pso_brain_mri', 'tpevo_brain_mri', 'tpevo'),
                                ('pso_pneumoniamnist', 'random_pneumoniamnist', 'random'),
                                ('pso_breastmnist', 'random_breastmnist', 'random'),
                                ('pso_dermamnist', 'random_dermamnist', 'random'),
                                ('pso_kvasir_seg', 'random_kvasir_seg', 'random')]:
    expected = experiments.get_config(pso, preset)
    expected.experiment, expected.search.optimizer = other, optimizer
    assert experiments.get_config(other, preset).to_dict() == expected.to_dict()


def test_protocols_fix_what_their_papers_fix():
  psocnn = experiments.get_config('psocnn_brain_mri', 'full')
  assert (psocnn.search.population, psocnn.search.budget) == (20, 200)  # 20 particles x 10
  assert psocnn.train.epochs == 1 and psocnn.search.fidelity.rungs == ()
  for preset in PRESETS:
    assert experiments.get_config('psocnn_brain_mri', preset).train.epochs == 1
    grid = experiments.get_config('grid_brain_mri', preset)
    size = space_lib.SearchSpace(grid.space, grid.data.image_size, grid.data.channels,
                                 num_classes=4).grid_size()
    assert grid.search.budget == size  # every point once
    ga = experiments.get_config('ga_brain_mri', preset)
    assert ga.space.cells == ('conv',) and len(ga.space.kernels) > 1
    assert len(ga.space.num_cells) > 1 and len(ga.space.widths) == 1
  assert experiments.get_config('grid_brain_mri', 'full').search.budget == 27
  for task, channels in (('pneumoniamnist', 1), ('breastmnist', 1), ('dermamnist', 3)):
    config = experiments.get_config(f'pso_{task}', 'quick')
    assert config.data.name == f'medmnist/{task}'
    assert (config.data.image_size, config.data.channels) == (28, channels)


def test_zoo_trains_the_reference_networks():
  """Each candidate of zoo_brain_mri builds the network of models/zoo.py, and all are tested."""
  config = experiments.get_config('zoo_brain_mri', 'smoke')
  space = space_lib.SearchSpace(config.space, config.data.image_size, config.data.channels,
                                num_classes=4)
  optimizer = optimizers.make('grid', space, 0, config.search.budget,
                              config.search.population, config.search.options.to_dict())
  assert config.search.budget == config.final.top_k == len(zoo.ZOO)
  for make in zoo.ZOO.values():
    genotype = space.decode(optimizer.ask().value)
    assert not space.violation(genotype)
    ours = counting.count(genotype, config.data.image_size, 1, 4)
    theirs = counting.count(make(0.125), config.data.image_size, 1, 4)
    assert (ours.params, ours.flops) == (theirs.params, theirs.flops)
  with pytest.raises(StopIteration):
    optimizer.ask()  # five points, no more


def test_grid_points_refuse_a_larger_budget():
  config = experiments.get_config('zoo_brain_mri', 'smoke')
  space = space_lib.SearchSpace(config.space, 32, 1, num_classes=4)
  with pytest.raises(errors.UserError, match='more candidates than the 5 points'):
    optimizers.make('grid', space, 0, 6, 5, config.search.options.to_dict())
