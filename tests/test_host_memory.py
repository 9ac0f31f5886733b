"""nas.host_memory: with its malloc settings, a candidate's repeated train steps stop
page-faulting."""
import os
import subprocess
import sys

import pytest

from nas import host_memory

# Train steps of a small network on 32 px images; prints the minor page faults per step
# once warm. The step's activations (tens of MiB) are allocated and freed by every step.
_PROGRAM = '''
import resource
import nas
import jax
import jax.numpy as jnp
import numpy as np
from benchmarks import networks
from datasets import augment
from models.genotype import TrainGenes
from nas import train
steps = train.compiled_steps(networks.NETWORKS['sep'](), 4, 'float32', 'adamw', 0.9,
                             augment.AugmentConfig())
batch = {'image': np.zeros((64, 32, 32, 3), np.uint8), 'label': np.zeros(64, np.int32)}
hparams = {**train.step_hparams(TrainGenes(), np.ones(4)), 'learning_rate': jnp.float32(0)}
state = steps.init(jax.random.key(0, impl='rbg'), (1, 32, 32, 3))
faults = []
for i in range(8):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  state, loss = steps.train(state, batch, jax.random.key(i), hparams)
  jax.block_until_ready(loss)
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(np.median(faults[3:]))
'''


def _faults_per_step(keep: str) -> float:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, '-c', _PROGRAM], cwd=root, capture_output=True,
                       text=True, check=True,
                       env={**os.environ, 'MEDNAS_KEEP_FREED_MEMORY': keep})
  return float(out.stdout.split()[-1])


@pytest.mark.skipif(host_memory._libc_function('mallopt') is None, reason='needs glibc')
def test_train_steps_reuse_freed_memory_instead_of_faulting_it_in_again():
  default, kept = _faults_per_step('0'), _faults_per_step('1')
  assert default > 5000  # glibc's defaults fault the step's activations in every time
  assert kept < default / 20


def test_a_bad_setting_is_a_clear_error(monkeypatch):
  monkeypatch.setenv('MEDNAS_KEEP_FREED_MEMORY', 'yes')
  with pytest.raises(ValueError, match='MEDNAS_KEEP_FREED_MEMORY'):
    host_memory.keep_freed_memory()


@pytest.mark.skipif(host_memory._libc_function('mallopt') is None, reason='needs glibc')
@pytest.mark.parametrize('platforms, applied', [('cpu', True), ('cuda,cpu', False),
                                                ('tpu', False)])
def test_applied_only_where_jax_trains_on_the_cpu(monkeypatch, platforms, applied):
  monkeypatch.setenv('JAX_PLATFORMS', platforms)
  assert host_memory.keep_freed_memory() is applied
