"""The trainer: it learns, it is data parallel, it turns bad candidates into failed results."""
import concurrent.futures
import dataclasses
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
from typing import IO
import weakref

import jax
import numpy as np
import pytest

import datasets
import experiments
from datasets import augment as augment_lib
from datasets import pipeline
from models.genotype import Genotype, Stage, TrainGenes
from nas import records
from nas import search as search_lib
from nas import train as train_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _genotype(**train):
  return Genotype(stages=(Stage(1, 'conv', 3, 16, 1, 'none', 'max'),
                          Stage(1, 'sep', 3, 16, 1, 'se', 'max')),
                  stem_width=8, train=TrainGenes(**{'learning_rate': 1e-2, 'batch_size': 32,
                                                    'augment': 0.0, **train}))


def _train(genotype, epochs=3, checkpoint_dir=None, **train_cfg):
  config = experiments.get_config('pso_synthetic', 'smoke')
  config.train.update(train_cfg)
  splits = datasets.load('synthetic', image_size=16, channels=1, seed=0,
                         **config.data.options.to_dict())
  return train_lib.train_and_evaluate(
      genotype, splits.train, splits.val, len(splits.class_names), epochs, seed=0,
      train_cfg=config.train, aug_config=augment_lib.AugmentConfig(**config.augment),
      checkpoint_dir=checkpoint_dir)


def test_a_small_network_learns_the_synthetic_task():
  trained = _train(_genotype())
  result = trained.result
  assert result.status == records.OK, result.error
  assert result.epochs_run == 3 and len(result.history) == 3
  assert result.metrics['accuracy'] > 0.7  # chance is 0.25
  assert result.history[-1]['train_loss'] < result.history[0]['train_loss']


def test_hyperparameters_do_not_recompile():
  _train(_genotype(), epochs=1)
  before = train_lib.compiled_steps.cache_info()
  trained = _train(_genotype(learning_rate=1e-3, weight_decay=1e-3, label_smoothing=0.1,
                             augment=0.5), epochs=1)
  after = train_lib.compiled_steps.cache_info()
  assert trained.result.status == records.OK
  assert after.hits == before.hits + 1 and after.misses == before.misses


@pytest.mark.parametrize('forget', ['drop_compiled_steps', 'forget_compiled_steps'])
def test_forgetting_compiled_steps_frees_them(forget):
  trained = _train(_genotype(), epochs=1)
  assert trained.result.status == records.OK
  step = weakref.ref(trained.steps.train_step)  # it holds the executables
  del trained
  assert step() is not None  # the cache keeps an architecture's steps for its next training
  getattr(train_lib, forget)()
  assert step() is None


def test_the_evaluation_step_compiled_ahead_of_time_is_the_one_evaluations_use(caplog):
  # An architecture no other test trains, so that its steps are compiled here.
  genotype = dataclasses.replace(_genotype(), stem_width=4)
  with jax.log_compiles(), caplog.at_level(logging.WARNING):
    trained = _train(genotype, epochs=2)
  assert trained.result.status == records.OK
  # A second compile would mean the ahead-of-time shapes missed: evaluation compiled again,
  # outside the compile timing.
  compiles = [r for r in caplog.records
              if r.getMessage().startswith('Finished XLA compilation of jit(eval_step)')]
  assert len(compiles) == 1
  assert 0 < trained.result.compile_seconds < trained.result.train_seconds


def _compiled(records_) -> set[str]:
  """The functions that jax.log_compiles reports compiled in `records_`."""
  return {r.getMessage().split()[4] for r in records_
          if r.getMessage().startswith('Finished XLA compilation of jit(')}


def test_steps_compiled_ahead_leave_training_nothing_to_compile(caplog):
  # An architecture no other test trains, compiled in a thread as the local executor does.
  genotype = dataclasses.replace(_genotype(), stem_width=5)
  config = experiments.get_config('pso_synthetic', 'smoke')
  splits = datasets.load('synthetic', image_size=16, channels=1, seed=0,
                         **config.data.options.to_dict())
  steps = {'jit(init)', 'jit(train_step)', 'jit(eval_step)'}
  # Set globally: jax.log_compiles() would only reach this thread.
  jax.config.update('jax_log_compiles', True)
  try:
    with caplog.at_level(logging.WARNING), concurrent.futures.ThreadPoolExecutor(1) as pool:
      pool.submit(train_lib.compile_steps, genotype, splits.train, splits.val,
                  len(splits.class_names), config.train,
                  augment_lib.AugmentConfig(**config.augment)).result()
      ahead = len(caplog.records)
      trained = _train(genotype, epochs=2)
  finally:
    jax.config.update('jax_log_compiles', False)
  assert trained.result.status == records.OK, trained.result.error
  assert steps <= _compiled(caplog.records[:ahead])
  assert not (steps | {'jit(step_inputs)'}) & _compiled(caplog.records[ahead:])


def test_balanced_class_weights_make_every_class_weigh_the_same():
  labels = np.array([0, 0, 0, 1, 1, 0, 0, 0])
  weights = train_lib.class_weights(labels, 3, balanced=True)
  # 8 / (3 * 6), 8 / (3 * 2); the absent class 2 weighs nothing.
  np.testing.assert_allclose(weights, [4 / 9, 4 / 3, 0.0], rtol=1e-6)
  np.testing.assert_array_equal(train_lib.class_weights(labels, 3, balanced=False), 1.0)
  logits = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
  targets = np.eye(3, dtype=np.float32)[labels]
  loss = train_lib.Classification().loss(logits, targets, {'class_weights': weights})
  # The weighted mean is the mean over the classes present of each class's mean loss.
  per_image = -np.log(np.exp(logits[np.arange(8), labels]) / np.exp(logits).sum(axis=1))
  per_class = [per_image[labels == c].mean() for c in (0, 1)]
  assert float(loss) == pytest.approx(np.mean(per_class), rel=1e-5)


def test_class_balanced_training_learns():
  result = _train(_genotype(), epochs=2, class_balanced=True).result
  assert result.status == records.OK, result.error
  assert result.metrics['accuracy'] > 0.5  # chance is 0.25


def test_diverging_candidate_fails_with_its_reason():
  result = _train(_genotype(learning_rate=1e9), epochs=2).result
  assert result.status == records.FAILED
  assert 'NonFiniteLoss' in result.error


def test_a_candidate_that_raises_fails_with_its_error():
  # An ESP cell splits its width over four dilated branches: 2 channels cannot be split.
  genotype = Genotype((Stage(1, 'esp', 3, 2, 1, 'none', 'max'),), stem_width=8,
                      train=TrainGenes(batch_size=32))
  result = _train(genotype, epochs=1).result
  assert result.status == records.FAILED
  assert 'ValueError' in result.error and 'esp' in result.error


def test_out_of_memory_becomes_a_failed_trial(monkeypatch):
  def exhausted(*args, **kwargs):
    raise RuntimeError('RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9.9GiB')
  monkeypatch.setattr(train_lib, '_train_epoch', exhausted)
  result = _train(_genotype(), epochs=1).result
  assert result.status == records.FAILED and 'RESOURCE_EXHAUSTED' in result.error


def test_time_limit_turns_into_a_failed_trial():
  result = _train(_genotype(), epochs=50, time_limit_s=0.5).result
  assert result.status == records.FAILED
  assert 'CandidateTimeout' in result.error and result.epochs_run < 50


@pytest.mark.parametrize('patience', [0, 2])
def test_killed_training_resumes_from_its_checkpoint(tmp_path, monkeypatch, patience):
  genotype = _genotype(augment=0.5)
  reference = _train(genotype, epochs=4, patience=patience).result
  real_batches = pipeline.train_batches

  def killed_in_epoch_three(split, batch_size, seed, epoch):
    if epoch == 2:
      raise KeyboardInterrupt
    yield from real_batches(split, batch_size, seed, epoch)

  monkeypatch.setattr(pipeline, 'train_batches', killed_in_epoch_three)
  with pytest.raises(KeyboardInterrupt):
    _train(genotype, 4, tmp_path, patience=patience, checkpoint_every_epochs=1)
  monkeypatch.setattr(pipeline, 'train_batches', real_batches)
  resumed = _train(genotype, 4, tmp_path, patience=patience, checkpoint_every_epochs=1).result
  assert resumed.status == records.OK, resumed.error
  for resumed_epoch, reference_epoch in zip(resumed.history, reference.history, strict=True):
    assert resumed_epoch == pytest.approx(reference_epoch)
  assert resumed.metrics['accuracy'] == reference.metrics['accuracy']


def test_a_training_that_stopped_early_resumes_stopped(tmp_path):
  # Its checkpoints outlive it until its result is stored; a kill in between resumes it.
  genotype = _genotype()
  first = _train(genotype, 8, tmp_path, patience=1, checkpoint_every_epochs=1).result
  assert first.epochs_run < 8  # it did stop early
  again = _train(genotype, 8, tmp_path, patience=1, checkpoint_every_epochs=1).result
  assert again.history == first.history and again.metrics == first.metrics


_RUN_ON_DEVICES = """
import dataclasses, json, sys
sys.path.insert(0, {root!r})
import jax, jax.numpy as jnp, numpy as np, datasets, experiments
from datasets import augment as augment_lib
from datasets import pipeline
from models.genotype import Genotype, TrainGenes
from nas import distributed
from nas import train as train_lib
config = experiments.get_config('pso_synthetic', 'smoke')
config.distributed.update(json.loads(sys.argv[2]))
distributed.initialize(config.distributed)
splits = datasets.load('synthetic', image_size=16, channels=1, seed=0,
                       **config.data.options.to_dict())
genotype = Genotype.from_json(sys.argv[1])
aug_config = augment_lib.AugmentConfig(**config.augment)
steps = train_lib.compiled_steps(dataclasses.replace(genotype, train=TrainGenes()), 4,
                                 'float32', 'adamw', 0.9, aug_config)
state = steps.init(jax.random.key(0, impl='rbg'), (1, 16, 16, 1))
batch = next(pipeline.train_batches(splits.train, 32, 0, 0))
hparams = {{**train_lib.step_hparams(TrainGenes(), np.ones(4)),
            'learning_rate': jnp.float32(1e-2)}}
state, loss = steps.train(state, distributed.global_batch(batch, steps.batch_sharding),
                          jax.random.key(0), hparams)
first = {{'loss': float(loss), 'params': float(sum(jnp.abs(p).sum()
                                                  for p in jax.tree.leaves(state.params)))}}
trained = train_lib.train_and_evaluate(
    genotype, splits.train, splits.val, 4, 2, seed=0, train_cfg=config.train,
    aug_config=aug_config)
print(json.dumps({{'devices': jax.device_count(), 'processes': jax.process_count(),
                  'first_step': first,
                  'history': trained.result.history, 'error': trained.result.error}}))
"""


def _start_on_devices(genotype, devices: int, distributed: dict
                      ) -> tuple[subprocess.Popen, IO[str]]:
  """The started process and the file its log goes to."""
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
             JAX_PLATFORMS='cpu')
  # The log to a file: two hosts are read one after the other, and a host blocked on a full
  # pipe would stall the other in a collective. Stdout holds only the result line.
  log = tempfile.TemporaryFile('w+')
  return subprocess.Popen([sys.executable, '-c', _RUN_ON_DEVICES.format(root=ROOT),
                           genotype.to_json(), json.dumps(distributed)], env=env,
                          stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT), log


def _result(process: subprocess.Popen, log: IO[str]) -> dict:
  with log:
    out, _ = process.communicate(timeout=600)
    log.seek(0)
    assert process.returncode == 0, log.read()[-3000:]
  return json.loads(out.strip().splitlines()[-1])


def _run_on_devices(genotype, devices: int) -> dict:
  return _result(*_start_on_devices(genotype, devices, {}))


@pytest.fixture(scope='module')
def two_devices():
  return _run_on_devices(_genotype(augment=0.5), 2)


def test_one_and_two_devices_train_the_same(two_devices):
  genotype = _genotype(augment=0.5)
  one, two = _run_on_devices(genotype, 1), two_devices
  assert one['devices'] == 1 and two['devices'] == 2, (one['error'], two['error'])
  # One step: the same arithmetic up to the order of float sums across devices.
  assert one['first_step'] == pytest.approx(two['first_step'], rel=1e-5)
  # Two epochs: rounding differences grow through training, but stay small.
  for a, b in zip(one['history'], two['history'], strict=True):
    assert a['train_loss'] == pytest.approx(b['train_loss'], rel=1e-2)
    assert a['val_loss'] == pytest.approx(b['val_loss'], rel=2e-2)
    assert abs(a['accuracy'] - b['accuracy']) <= 0.03


def test_two_hosts_train_as_two_devices_of_one(two_devices):
  """jax.distributed: two processes with a CPU device each, one mesh over both (gloo)."""
  genotype = _genotype(augment=0.5)
  with socket.socket() as probe:  # a free port for the coordinator
    probe.bind(('localhost', 0))
    address = f'localhost:{probe.getsockname()[1]}'
  hosts = [_start_on_devices(genotype, 1, dict(enabled=True, coordinator_address=address,
                                               num_processes=2, process_id=i))
           for i in range(2)]
  results = [_result(*host) for host in hosts]
  for result in results:
    assert (result['devices'], result['processes']) == (2, 2), result['error']
    assert result['first_step'] == pytest.approx(two_devices['first_step'], rel=1e-5)
    for a, b in zip(result['history'], two_devices['history'], strict=True):
      assert a['train_loss'] == pytest.approx(b['train_loss'], rel=1e-3)
      assert a['accuracy'] == pytest.approx(b['accuracy'], abs=0.01)


def test_a_candidate_trained_at_several_seeds_scores_their_mean(tmp_path):
  config = experiments.get_config('pso_synthetic', 'smoke')
  data = datasets.Spec('synthetic', str(tmp_path), 16, 1,
                       options=tuple(sorted(config.data.options.to_dict().items())))
  def context(seed, training_seeds):
    return search_lib.EvalContext(
        data=data, num_classes=len(data.load().class_names), seed=seed,
        train_config=config.train, aug_config=augment_lib.AugmentConfig(**config.augment),
        metric='accuracy', checkpoint_root=str(tmp_path / 'checkpoints'),
        training_seeds=training_seeds)
  genotype = _genotype()
  alone = [search_lib.evaluate_candidate(genotype, 2, context(seed, 1), 0) for seed in (3, 4)]
  both = search_lib.evaluate_candidate(genotype, 2, context(3, 2), 0)
  assert both.status == records.OK
  assert alone[0].metrics['accuracy'] != alone[1].metrics['accuracy']  # the seeds differ
  for name in ('accuracy', 'auc', 'loss'):
    assert both.metrics[name] == pytest.approx(np.mean([r.metrics[name] for r in alone]))
  assert both.metrics['per_seed'] == [r.metrics for r in alone]
  assert both.epochs_run == 4 and len(both.history) == 2
  assert both.history[1]['train_loss'] == pytest.approx(
      np.mean([r.history[1]['train_loss'] for r in alone]))
