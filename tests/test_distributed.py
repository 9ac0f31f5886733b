"""Two JAX processes (hosts) run one search together through launch.py (jax.distributed)."""
import pathlib
import socket
import sqlite3
import subprocess
import sys
import time

from benchmarks import kill_resume


def _start_hosts(workdir, args, env, log_prefix: pathlib.Path
                 ) -> list[tuple[subprocess.Popen, pathlib.Path]]:
  """Both hosts started on a free coordinator port; each with the file its log goes to."""
  with socket.socket() as probe:
    probe.bind(('localhost', 0))
    address = f'localhost:{probe.getsockname()[1]}'
  hosts = []
  for i in range(2):
    # Logs go to files: a host blocked on a full pipe would stall the other in a collective.
    log = log_prefix.with_name(f'{log_prefix.name}-host{i}.log')
    with open(log, 'w') as f:
      hosts.append((subprocess.Popen(
          [sys.executable, 'launch.py', f'--workdir={workdir}', *args,
           '--config.distributed.enabled=True',
           f'--config.distributed.coordinator_address={address}',
           '--config.distributed.num_processes=2', f'--config.distributed.process_id={i}'],
          cwd=kill_resume.ROOT, env=env, stdout=f, stderr=subprocess.STDOUT), log))
  return hosts


def _wait(hosts, timeout: float = 600) -> None:
  """Waits for both hosts; a host that failed stops the other, which would wait on it."""
  deadline = time.monotonic() + timeout
  while (any(host.poll() is None for host, _ in hosts) and time.monotonic() < deadline
         and all(host.poll() in (None, 0) for host, _ in hosts)):
    time.sleep(0.2)
  for host, _ in hosts:
    if host.poll() is None:
      host.kill()
      host.wait()
  for host, log in hosts:
    assert host.returncode == 0, log.read_text()[-3000:]


def test_two_hosts_killed_and_resumed_run_one_search(tmp_path, small_search):
  workdir = tmp_path / 'run'
  env = dict(small_search.env, JAX_PLATFORMS='cpu')
  hosts = _start_hosts(workdir, [
      *small_search.args,
      '--config.train.checkpoint_every_epochs=1',  # saved and restored collectively
      '--config.final.epochs=1',  # only the trials are compared with the single run's
  ], env, tmp_path / 'first')
  # Both killed (a preempted job) once process 0 stored two trials, in the next one's training.
  while (all(host.poll() is None for host, _ in hosts)
         and kill_resume.count_rows(str(workdir)) < 2):
    time.sleep(0.05)
  assert all(host.poll() is None for host, _ in hosts), [log.read_text()[-3000:]
                                                          for _, log in hosts]
  for host, _ in hosts:
    host.kill()
    host.wait()
  # A kill between the two processes' writes: host 1 lost a trial that process 0 stored.
  # Were it to train that candidate again while process 0 replays it, their collectives
  # would pair up wrong; the resumed hosts must both replay it.
  db = sqlite3.connect(workdir / 'hosts/1/trials.sqlite')
  with db:
    db.execute('DELETE FROM trials WHERE id = (SELECT max(id) FROM trials)')
  db.close()

  # Resumed on a new coordinator port, each host with its own process_id.
  _wait(_start_hosts(workdir, ['--resume'], env, tmp_path / 'resumed'))

  # Both processes asked, trained and scored the same candidates; process 0 owns the workdir.
  main, other = kill_resume.outcome(str(workdir)), kill_resume.outcome(str(workdir / 'hosts/1'))
  assert main == other and main['ensembles']  # the seeds' ensemble too, on both processes
  single = kill_resume.outcome(str(small_search.workdir))
  assert [t[:4] for t in main['trials']] == [t[:4] for t in single['trials']]
  for name in ('leaderboard.md', 'report.html', 'best/genotype.json', 'explain/grad_cam.png'):
    assert (workdir / name).exists(), name
  assert {p.name.split('-')[0] for p in (workdir / 'hosts/1').iterdir()} == {'trials.sqlite'}
