"""Crash safety: a search SIGKILLed at random moments and resumed equals an unbroken one."""
import os
import signal
import subprocess
import sys
import time

from benchmarks import soak_resume


def test_killed_and_resumed_search_equals_the_uninterrupted_one(tmp_path):
  env = dict(os.environ, MEDNAS_CACHE_DIR=str(tmp_path / 'cache'))
  # Fewer candidates than the smoke preset, so that the test stays short.
  args = soak_resume.SEARCH_ARGS + ('--config.search.budget=6',)
  soak_resume.run_search(str(tmp_path / 'reference'), env, args)
  reference = soak_resume.outcome(str(tmp_path / 'reference'))
  rows = len(reference['trials']) + len(reference['final'])
  landed = soak_resume.kill_and_resume(str(tmp_path / 'killed'), env, kills=3, seed=0,
                                       rows_per_kill=rows / 4, args=args)
  assert landed >= 2, 'the kills came too late to test anything'
  resumed = soak_resume.outcome(str(tmp_path / 'killed'))
  assert soak_resume.compare(reference, resumed) == {
      f'{table}_{what}': 0 for table in ('trials', 'final')
      for what in ('lost', 'duplicated', 'changed', 'extra')}
  assert resumed == reference


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path):
  env = dict(os.environ, MEDNAS_CACHE_DIR=str(tmp_path / 'cache'))
  workdir = str(tmp_path / 'run')
  process = subprocess.Popen(
      [sys.executable, 'launch.py', *soak_resume.SEARCH_ARGS, f'--workdir={workdir}'],
      cwd=soak_resume.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  while process.poll() is None and soak_resume._count_rows(workdir) < 2:
    time.sleep(0.05)
  process.send_signal(signal.SIGINT)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 130, stderr[-3000:]
  assert 'Traceback' not in stderr
  message = [line for line in stderr.splitlines() if line.startswith('error: ')]
  assert len(message) == 1 and f'--workdir={workdir} --resume' in message[0]
  stored = soak_resume.outcome(workdir)['trials']
  assert len(stored) >= 2 and len({row[:2] for row in stored}) == len(stored)
