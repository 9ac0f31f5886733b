"""Where datasets live by default."""
import os


def default_data_dir() -> str:
  """Env MEDNAS_DATA_DIR, else ./data (callers pass their --data_dir explicitly)."""
  return os.path.abspath(os.environ.get('MEDNAS_DATA_DIR') or 'data')
