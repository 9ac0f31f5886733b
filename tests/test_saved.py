"""Saved models: the round trip through orbax gives identical logits."""
import os
import signal
import subprocess
import sys
import threading
import types

import jax
import numpy as np
import pytest
from PIL import Image

import models
from models import saved
from models.genotype import Genotype, Stage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_save_load_round_trip_gives_identical_logits(tmp_path):
  genotype = Genotype((Stage(1, 'conv', 3, 8, 1, 'se', 'max'),
                       Stage(1, 'shrinkage', 3, 8, 1, 'none', 'avg')), stem_width=8)
  module = models.build(genotype, 3)
  images = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 1), dtype=np.uint8)
  variables = module.init(jax.random.key(1), models.preprocess(images), train=False)
  variables = {k: variables[k] for k in ('params', 'batch_stats')}  # what training yields
  # Non-trivial BatchNorm statistics, so that a lost `batch_stats` would show.
  variables = jax.tree.map(lambda v: v + 0.1, variables)
  in_memory = saved.SavedModel(genotype, variables, ('a', 'b', '<c>'), 16, 1, {})
  expected = in_memory.logits(images)

  path = models.save(str(tmp_path / 'model'), genotype, variables, ('a', 'b', '<c>'), 16, 1,
                     dataset='synthetic')
  loaded = models.load(path)
  assert loaded.genotype == genotype and loaded.class_names == ('a', 'b', '<c>')
  assert loaded.image_size == 16 and loaded.channels == 1
  assert loaded.info['dataset'] == 'synthetic'
  np.testing.assert_array_equal(np.asarray(loaded.logits(images)), np.asarray(expected))
  assert np.allclose(loaded.predict(images).sum(axis=1), 1.0, atol=1e-5)


def _corrupt_weights(path: str) -> None:
  data = [os.path.join(folder, name) for folder, _, names in os.walk(path) for name in names
          if f'{os.sep}d{os.sep}' in os.path.join(folder, name)]
  assert data  # the checkpoint's array chunks
  for name in data:
    with open(name, 'r+b') as f:
      f.write(b'\0' * 64)


def test_corrupt_weights_are_named_in_one_short_line(tmp_path, save_tiny_model):
  path = save_tiny_model(str(tmp_path / 'best'), ('a', 'b'))
  _corrupt_weights(path)
  with pytest.raises(ValueError, match='corrupt or incomplete') as e:
    models.load(path)
  assert len(str(e.value)) < 400 and '\n' not in str(e.value)


def test_failed_loads_quiet_the_closed_loop_once(tmp_path, save_tiny_model, monkeypatch):
  path = save_tiny_model(str(tmp_path / 'best'), ('a', 'b'))
  _corrupt_weights(path)
  seen = []
  def hook(unraisable):
    seen.append(unraisable)
  monkeypatch.setattr(sys, 'unraisablehook', hook)
  for _ in range(3):
    with pytest.raises(ValueError, match='corrupt or incomplete'):
      models.load(path)
  quiet = sys.unraisablehook
  assert quiet is not hook
  # One wrapper around the hook it found, however many loads failed: the others pass through.
  # Only the two events made here are counted: the process's own (a collected object of
  # another test, orbax's leftover reads) may reach the hook meanwhile.
  closed = types.SimpleNamespace(exc_value=RuntimeError('Event loop is closed'))
  other = types.SimpleNamespace(exc_value=RuntimeError('other'))
  quiet(closed)
  quiet(other)
  assert [u for u in seen if u is closed or u is other] == [other]
  assert quiet.__closure__[0].cell_contents is hook


def test_corrupt_weights_end_a_command_without_a_traceback(tmp_path, save_tiny_model):
  path = save_tiny_model(str(tmp_path / 'best'), ('a', 'b'))
  _corrupt_weights(path)
  image = tmp_path / 'image.png'
  Image.fromarray(np.zeros((16, 16), np.uint8)).save(image)
  # Orbax's leftover reads printed 'Event loop is closed' tracebacks in most runs, not all.
  for _ in range(3):
    result = subprocess.run([sys.executable, '-m', 'nas.predict', f'--model={path}', str(image)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and 'corrupt or incomplete' in result.stderr
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]


def test_a_genotype_file_it_cannot_read_is_named(tmp_path, save_tiny_model):
  path = save_tiny_model(str(tmp_path / 'best'), ('a', 'b'))
  with open(os.path.join(path, 'genotype.json'), 'w') as f:
    f.write('{"x": 1}')
  with pytest.raises(ValueError, match=r'genotype\.json holds no genotype this version reads'):
    models.load(path)


def test_ctrl_c_waits_for_the_end_of_a_checkpoint_write():
  if threading.current_thread() is not threading.main_thread():
    pytest.skip('signals reach only the main thread, and this test runs in another')
  handler = signal.getsignal(signal.SIGINT)
  finished = []
  with pytest.raises(KeyboardInterrupt):
    with saved.uninterrupted():
      os.kill(os.getpid(), signal.SIGINT)
      for _ in range(1000):  # bytecodes, at whose boundaries Python runs signal handlers
        pass
      finished.append(True)
  assert finished  # the block ran to its end before the interrupt was raised
  assert signal.getsignal(signal.SIGINT) is handler
