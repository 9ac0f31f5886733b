"""Crash safety: a search SIGKILLed at random moments and resumed equals an unbroken one."""
import signal
import subprocess
import sys
import time

from benchmarks import kill_resume


def test_killed_and_resumed_search_equals_the_uninterrupted_one(tmp_path, small_search):
  reference = kill_resume.outcome(str(small_search.workdir))
  assert reference['ensembles'], 'the final stage should test 2 seeds together'
  rows = len(reference['trials']) + len(reference['final'])
  landed = kill_resume.kill_and_resume(str(tmp_path / 'killed'), small_search.env, kills=3,
                                       seed=0, rows_per_kill=rows / 4, args=small_search.args)
  assert landed >= 2, 'the kills came too late to test anything'
  resumed = kill_resume.outcome(str(tmp_path / 'killed'))
  assert kill_resume.compare(reference, resumed) == {
      f'{table}_{what}': 0 for table in ('trials', 'final', 'ensembles')
      for what in ('lost', 'duplicated', 'changed', 'extra')}
  assert resumed == reference


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path, small_search):
  workdir = str(tmp_path / 'run')
  # A job that a shell starts in the background ignores SIGINT, and so do its children
  # unless told otherwise; a Python handler here becomes the default handler there.
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  log = tmp_path / 'search.log'  # a file: a full pipe, unread while polling, would block it
  try:
    # Twice the fixture's budget: the search cannot end before the signal.
    with open(log, 'w') as f:
      process = subprocess.Popen(
          [sys.executable, 'launch.py', *small_search.args, '--config.search.budget=8',
           f'--workdir={workdir}'],
          cwd=kill_resume.ROOT, env=small_search.env, stdout=subprocess.DEVNULL, stderr=f)
  finally:
    signal.signal(signal.SIGINT, previous)
  while process.poll() is None and kill_resume.count_rows(workdir) < 2:
    time.sleep(0.05)
  assert process.poll() is None, 'the search ended before the test saw 2 stored trials'
  process.send_signal(signal.SIGINT)
  process.wait(timeout=300)
  stderr = log.read_text()
  assert process.returncode == 130, stderr[-3000:]
  assert 'Traceback' not in stderr
  message = [line for line in stderr.splitlines() if line.startswith('error: ')]
  assert len(message) == 1 and f'--workdir={workdir} --resume' in message[0]
  stored = kill_resume.outcome(workdir)['trials']
  assert len(stored) >= 2 and len({row[:2] for row in stored}) == len(stored)
