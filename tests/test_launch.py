"""`launch.py` end to end: the synthetic searches, the real-data smoke search, and bad input."""
import json
import os
import shutil
import sqlite3
import subprocess
import sys

import pandas as pd
import pytest

from benchmarks import kill_resume
import models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.environ.get('MEDNAS_DATA_DIR', os.path.join(ROOT, 'data'))


def _launch(*args, cache_dir=None):
  env = dict(os.environ)
  if cache_dir:
    env['MEDNAS_CACHE_DIR'] = str(cache_dir)
  return subprocess.run([sys.executable, 'launch.py', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=900)


def _assert_one_line_error(result, *fragments):
  assert result.returncode == 2, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  lines = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert len(lines) == 1, result.stderr[-3000:]
  for fragment in fragments:
    assert fragment in lines[0]


@pytest.fixture(scope='module')
def synthetic_search(small_search):
  """The small synthetic search of conftest.py, run once for the whole session."""
  return small_search.workdir


def test_synthetic_search_writes_store_leaderboard_and_report(synthetic_search):
  for name in ('trials.sqlite', 'leaderboard.md', 'leaderboard.csv', 'report.html'):
    assert (synthetic_search / name).exists(), name
  board = pd.read_csv(synthetic_search / 'leaderboard.csv')
  assert len(board) >= 2
  with sqlite3.connect(synthetic_search / 'trials.sqlite') as db:
    statuses = dict(db.execute('SELECT status, count(*) FROM trials GROUP BY status'))
    accuracies = [json.loads(m).get('accuracy', 0) for (m,) in db.execute(
        "SELECT metrics FROM trials WHERE status = 'ok'")]
    finals = db.execute('SELECT test_metrics FROM final').fetchall()
    ensembles = db.execute('SELECT seeds FROM ensembles').fetchall()
  assert statuses.get('ok', 0) >= 4
  assert max(accuracies) > 0.7  # 4 classes: chance is 0.25
  assert len(finals) == 2  # top 1 genotype x 2 seeds, each tested once
  assert [json.loads(seeds) for (seeds,) in ensembles] == [[0, 1]]  # and once together
  assert all(json.loads(m)['num_examples'] > 0 for (m,) in finals)
  assert (synthetic_search / 'best' / 'genotype.json').exists()
  assert (synthetic_search / 'explain' / 'grad_cam.png').exists()
  html_text = (synthetic_search / 'report.html').read_text()
  assert 'alt="Grad-CAM heat maps: grad_cam.png" src="data:image/png;base64,' in html_text
  assert 'alt="reliability diagram of the winner"' in html_text


def test_saved_winner_scores_as_the_final_stage_did(synthetic_search):
  info = json.loads((synthetic_search / 'best' / 'preprocessing.json').read_text())
  with sqlite3.connect(synthetic_search / 'trials.sqlite') as db:
    (stored,), = db.execute('SELECT test_metrics FROM final WHERE seed = ?',
                            (info['seed'],)).fetchall()
  result = subprocess.run([sys.executable, '-m', 'nas.evaluate',
                           f'--model={synthetic_search / "best"}'], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  scored, stored = json.loads(result.stdout), json.loads(stored)
  assert scored['num_examples'] == stored['num_examples']
  assert abs(scored['accuracy'] - stored['accuracy']) <= 1 / stored['num_examples']
  assert (f'{synthetic_search / "best"}: accuracy {scored["accuracy"]:.4f}, ' in result.stderr
          and f' on {stored["num_examples"]} images' in result.stderr)


def test_ensemble_of_a_network_with_itself_scores_as_the_network(synthetic_search):
  seed = json.loads((synthetic_search / 'best' / 'preprocessing.json').read_text())['seed']
  with sqlite3.connect(synthetic_search / 'trials.sqlite') as db:
    (copied,), = db.execute('SELECT checkpoint FROM final WHERE seed = ?', (seed,)).fetchall()
  result = subprocess.run([sys.executable, '-m', 'nas.evaluate',
                           f'--model={synthetic_search / "best"}',
                           f'--model={synthetic_search / copied}'], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  scored = json.loads(result.stdout)
  assert len(scored['members']) == 2  # best/ is a copy of the winner's final network
  assert scored['members'][0]['accuracy'] == scored['members'][1]['accuracy']
  assert scored['ensemble']['accuracy'] == scored['members'][0]['accuracy']
  assert scored['ensemble']['num_examples'] == scored['members'][0]['num_examples'] > 0
  assert f"ensemble: accuracy {scored['ensemble']['accuracy']:.4f}, " in result.stderr


def test_resume_with_a_different_config_refuses_and_keeps_the_store(synthetic_search):
  before = (synthetic_search / 'trials.sqlite').read_bytes()
  result = _launch(f'--workdir={synthetic_search}', '--resume', '--config.search.budget=2')
  _assert_one_line_error(result, 'different config', 'search.budget: 4 -> 2')
  assert (synthetic_search / 'trials.sqlite').read_bytes() == before


def test_resume_with_a_larger_budget_extends_the_search(tmp_path, small_search):
  workdir = tmp_path / 'run'
  shutil.copytree(small_search.workdir, workdir)
  before = kill_resume.outcome(str(workdir))['trials']
  result = _launch(f'--workdir={workdir}', '--resume', '--config.search.budget=6',
                   cache_dir=small_search.env['MEDNAS_CACHE_DIR'])
  assert result.returncode == 0, result.stderr[-3000:]
  extended = kill_resume.outcome(str(workdir))
  assert extended['trials'][:len(before)] == before
  assert {row[0] for row in extended['trials']} == set(range(6))
  with sqlite3.connect(workdir / 'trials.sqlite') as db:
    config = json.loads(db.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()[0])
  assert config['search']['budget'] == 6
  # Resuming again without the override keeps the larger budget: nothing left to do.
  result = _launch(f'--workdir={workdir}', '--resume',
                   cache_dir=small_search.env['MEDNAS_CACHE_DIR'])
  assert result.returncode == 0, result.stderr[-3000:]
  assert kill_resume.outcome(str(workdir)) == extended


def test_resume_on_another_executor_setting_continues_the_same_search(tmp_path, synthetic_search):
  workdir = tmp_path / 'run'
  shutil.copytree(synthetic_search, workdir)
  before = kill_resume.outcome(str(workdir))
  result = _launch(f'--workdir={workdir}', '--resume', '--config.executor.compile_ahead=0')
  assert result.returncode == 0, result.stderr[-3000:]
  assert kill_resume.outcome(str(workdir)) == before


def test_a_moved_workdir_resumes_from_its_own_files(tmp_path, synthetic_search):
  first, moved = tmp_path / 'first', tmp_path / 'moved'
  shutil.copytree(synthetic_search, first)
  before = kill_resume.outcome(str(first))
  shutil.move(first, moved)
  shutil.rmtree(moved / 'best')
  result = _launch(f'--workdir={moved}', '--resume')
  assert result.returncode == 0, result.stderr[-3000:]
  assert kill_resume.outcome(str(moved)) == before
  assert (moved / 'best' / 'genotype.json').exists()  # copied again from moved/final/
  with sqlite3.connect(moved / 'trials.sqlite') as db:
    resumed, = db.execute("SELECT value FROM meta WHERE key = 'resumed'").fetchone()
    checkpoints = [c for (c,) in db.execute('SELECT checkpoint FROM final')]
  assert len(json.loads(resumed)) == 1
  # Relative to the workdir: none points back into the fixture's folder.
  assert checkpoints and all((moved / c / 'genotype.json').exists() and not os.path.isabs(c)
                             for c in checkpoints)


def test_resume_on_other_data_refuses_and_keeps_the_store(tmp_path, synthetic_search):
  workdir = tmp_path / 'run'
  shutil.copytree(synthetic_search, workdir)
  with sqlite3.connect(workdir / 'trials.sqlite') as db:
    stored = json.loads(db.execute("SELECT value FROM meta WHERE key = 'data'").fetchone()[0])
    # The same counts, other pixels: as if --data_dir pointed at another copy of the set.
    db.execute("UPDATE meta SET value = ? WHERE key = 'data'",
               (json.dumps(dict(stored, sha256='0' * 64)),))
  before = kill_resume.outcome(str(workdir))
  result = _launch(f'--workdir={workdir}', '--resume')
  _assert_one_line_error(result, 'holds a search of other data than synthetic',
                         'point --data_dir at the data it was stored with')
  assert kill_resume.outcome(str(workdir)) == before


def test_new_search_in_a_used_workdir_refuses(synthetic_search):
  result = _launch('--experiment=pso_synthetic', '--preset=smoke',
                   f'--workdir={synthetic_search}')
  _assert_one_line_error(result, 'already holds a search', '--resume')


@pytest.mark.parametrize('args, fragments', [
    (['--experiment=pso_brain_mr'], ['unknown experiment', 'pso_brain_mri']),
    (['--experiment=pso_synthetic', '--config.search.budgt=3'], ['did you mean budget']),
    (['--experiment=pso_synthetic', '--config.search.budget=many'], ['cannot read']),
    (['--experiment=pso_synthetic', '--preset=huge'], ['unknown preset']),
    (['--experiment=pso_brain_mri', '--data_dir=/nonexistent/mednas'], ['/nonexistent']),
    (['--experimnt=pso_synthetic'], ['experimnt']),
    (['--experiment=pso_synthetic', '--config.search.budget', '2'],
     ['write --config.search.budget=2']),
    # Refused after the data loads but before the store holds the config.
    (['--experiment=pso_synthetic', '--config.search.optimizer=psoo'], ['unknown optimizer']),
    (['--experiment=pso_synthetic', "--config.space.cells=('conv', 'sepp')"],
     ["space.cells has unknown 'sepp'"]),
])
def test_bad_input_is_one_line(tmp_path, args, fragments):
  result = _launch(*args, f'--workdir={tmp_path / "w"}')
  _assert_one_line_error(result, *fragments)
  assert not (tmp_path / 'w' / 'trials.sqlite').exists()


def test_bad_malloc_setting_is_one_line(tmp_path, monkeypatch):
  monkeypatch.setenv('MEDNAS_KEEP_FREED_MEMORY', 'yes')
  _assert_one_line_error(
      _launch('--experiment=pso_synthetic', f'--workdir={tmp_path / "run"}'),
      'MEDNAS_KEEP_FREED_MEMORY')


def test_empty_data_directory_is_one_line(tmp_path):
  (tmp_path / 'data' / 'brain_tumor_mri').mkdir(parents=True)
  result = _launch('--experiment=pso_brain_mri', f'--data_dir={tmp_path / "data"}',
                   f'--workdir={tmp_path / "w"}')
  _assert_one_line_error(result, 'brain_tumor_mri')
  assert not (tmp_path / 'w').exists()


def test_workdir_that_is_a_file_is_one_line(tmp_path):
  (tmp_path / 'file').write_text('not a directory')
  result = _launch('--experiment=pso_synthetic', '--preset=smoke',
                   f'--workdir={tmp_path / "file"}')
  _assert_one_line_error(result, 'is a file; pass a folder')


def test_workdir_that_cannot_be_created_is_one_line(tmp_path):
  (tmp_path / 'file').write_text('not a directory')
  result = _launch('--experiment=pso_synthetic', '--preset=smoke',
                   f'--workdir={tmp_path / "file" / "run"}')
  _assert_one_line_error(result, 'cannot create a search')


def test_resume_of_a_directory_that_is_not_a_search(tmp_path):
  result = _launch(f'--workdir={tmp_path}', '--resume')
  _assert_one_line_error(result, 'not a search workdir')


def test_list_experiments():
  result = _launch('--list_experiments')
  assert result.returncode == 0
  assert 'pso_brain_mri' in result.stdout.split()


@pytest.mark.skipif(not os.path.isdir(os.path.join(DATA_DIR, 'brain_tumor_mri')),
                    reason=f'brain tumour MRI data not found under {DATA_DIR} '
                           '(link ../shared/data to ./data or set MEDNAS_DATA_DIR)')
def test_smoke_search_on_real_brain_mri(tmp_path):
  result = _launch('--experiment=pso_brain_mri', '--preset=smoke', '--config.search.budget=2',
                   f'--workdir={tmp_path / "run"}', f'--data_dir={DATA_DIR}')
  assert result.returncode == 0, result.stderr[-5000:]
  board = pd.read_csv(tmp_path / 'run' / 'leaderboard.csv')
  assert len(board) >= 1
  with sqlite3.connect(tmp_path / 'run' / 'trials.sqlite') as db:
    (test_metrics,), = db.execute('SELECT test_metrics FROM final').fetchall()
  assert json.loads(test_metrics)['num_examples'] == 1311


def test_colour_medmnist_experiment_trains_on_rgb_images(tmp_path, write_medmnist):
  """pso_dermamnist on a DermaMNIST-shaped file: 7 classes of RGB 28x28 images, kept RGB."""
  arrays = write_medmnist(tmp_path / 'medmnist' / 'dermamnist.npz', n=(70, 21, 21),
                          shape=(28, 28, 3), num_classes=7)
  result = _launch('--experiment=pso_dermamnist', '--preset=smoke', '--config.search.budget=2',
                   f'--workdir={tmp_path / "run"}', f'--data_dir={tmp_path}')
  assert result.returncode == 0, result.stderr[-5000:]
  with sqlite3.connect(tmp_path / 'run' / 'trials.sqlite') as db:
    (test_metrics,), = db.execute('SELECT test_metrics FROM final').fetchall()
  assert json.loads(test_metrics)['num_examples'] == 21
  winner = models.load(str(tmp_path / 'run' / 'best'))  # restores 3-channel weights
  assert winner.channels == 3 and len(winner.class_names) == 7
  assert winner.predict(arrays['test_images'][:2]).shape == (2, 7)
  assert 'DermaMNIST (MedMNIST v2)' in (tmp_path / 'run' / 'leaderboard.md').read_text()
