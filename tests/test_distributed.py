"""Two JAX processes (hosts) run one search together through launch.py (jax.distributed)."""
import socket
import subprocess
import sys

from benchmarks import kill_resume


def test_two_hosts_run_one_search(tmp_path, small_search):
  with socket.socket() as probe:  # a free port for the coordinator
    probe.bind(('localhost', 0))
    address = f'localhost:{probe.getsockname()[1]}'
  workdir = tmp_path / 'run'
  env = dict(small_search.env, JAX_PLATFORMS='cpu')
  # Logs go to files: a host blocked on a full pipe would stall the other in a collective.
  logs = [tmp_path / f'host{i}.log' for i in range(2)]
  hosts = []
  for i, log in enumerate(logs):
    with open(log, 'w') as f:
      hosts.append(subprocess.Popen(
          [sys.executable, 'launch.py', f'--workdir={workdir}', *small_search.args,
           '--config.train.checkpoint_every_epochs=1',  # saved collectively, as the final's
           '--config.final.epochs=1',  # only the trials are compared with the single run's
           '--config.distributed.enabled=True',
           f'--config.distributed.coordinator_address={address}',
           '--config.distributed.num_processes=2', f'--config.distributed.process_id={i}'],
          cwd=kill_resume.ROOT, env=env, stdout=f, stderr=subprocess.STDOUT))
  for host, log in zip(hosts, logs):
    assert host.wait(timeout=600) == 0, log.read_text()[-3000:]

  # Both processes asked, trained and scored the same candidates; process 0 owns the workdir.
  main, other = kill_resume.outcome(str(workdir)), kill_resume.outcome(str(workdir / 'hosts/1'))
  assert main == other and main['ensembles']  # the seeds' ensemble too, on both processes
  single = kill_resume.outcome(str(small_search.workdir))
  assert [t[:4] for t in main['trials']] == [t[:4] for t in single['trials']]
  for name in ('leaderboard.md', 'report.html', 'best/genotype.json', 'explain/grad_cam.png'):
    assert (workdir / name).exists(), name
  assert {p.name.split('-')[0] for p in (workdir / 'hosts/1').iterdir()} == {'trials.sqlite'}
