"""Where every benchmark writes: `<out_dir>/<name>.json` and `<out_dir>/<name>.md`."""
from __future__ import annotations

import json
import os
from typing import Any


def write(out_dir: str, name: str, data: Any, markdown: str) -> None:
  """Writes the numbers as JSON and the table a person reads as Markdown, and prints it."""
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, f'{name}.json'), 'w') as f:
    json.dump(data, f, indent=2)
  with open(os.path.join(out_dir, f'{name}.md'), 'w') as f:
    f.write(markdown.rstrip('\n') + '\n')
  print(markdown)
