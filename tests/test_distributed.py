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
  hosts = [subprocess.Popen(
      [sys.executable, 'launch.py', f'--workdir={workdir}', *small_search.args,
       '--config.distributed.enabled=True', f'--config.distributed.coordinator_address={address}',
       '--config.distributed.num_processes=2', f'--config.distributed.process_id={i}'],
      cwd=kill_resume.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  for host in hosts:
    _, stderr = host.communicate(timeout=600)
    assert host.returncode == 0, stderr[-3000:]

  # Both processes asked, trained and scored the same candidates; process 0 owns the workdir.
  main, other = kill_resume.outcome(str(workdir)), kill_resume.outcome(str(workdir / 'hosts/1'))
  assert main == other and main['ensembles']  # the seeds' ensemble too, on both processes
  single = kill_resume.outcome(str(small_search.workdir))
  assert [t[:4] for t in main['trials']] == [t[:4] for t in single['trials']]
  for name in ('leaderboard.md', 'report.html', 'best/genotype.json', 'explain/grad_cam.png'):
    assert (workdir / name).exists(), name
  assert {p.name.split('-')[0] for p in (workdir / 'hosts/1').iterdir()} == {'trials.sqlite'}
