"""The experiment registry and command-line overrides."""
import pytest

import experiments
from experiments.common import PRESETS
from nas import errors


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


@pytest.mark.parametrize('override, message', [
    ('search.budgt=3', "did you mean budget"),
    ('serch.budget=3', "did you mean search"),
    ('search.budget=abc', 'cannot read'),
    ('search.budget=2.5', 'expected int'),
    ('search.budget', 'has no value'),
])
def test_bad_overrides_say_what_is_wrong(override, message):
  with pytest.raises(errors.UserError, match=message):
    experiments.get_config('pso_brain_mri', 'smoke', [override])


def test_unknown_experiment_suggests_near_names():
  with pytest.raises(errors.UserError, match='did you mean pso_brain_mri'):
    experiments.get_config('pso_brain_mr', 'smoke')
