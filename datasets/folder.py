"""Scanning a `<root>/[<split>/]<class>/**/<image>` tree into a file list."""
from __future__ import annotations

import dataclasses
import os

from datasets import cache
from datasets import imaging
from datasets.records import DataError

# Split folder names, matched case-insensitively.
SPLIT_ALIASES = {
    'train': 'train', 'training': 'train',
    'val': 'val', 'valid': 'val', 'validation': 'val',
    'test': 'test', 'testing': 'test',
}


@dataclasses.dataclass(frozen=True)
class ImageFile:
  path: str  # absolute
  id: str  # relative to the root, '/'-separated: stable across machines
  label: int


@dataclasses.dataclass(frozen=True)
class FolderScan:
  """The image files of a tree, by split ('train', and 'val', 'test' when present)."""
  root: str
  class_names: tuple[str, ...]
  files: dict[str, tuple[ImageFile, ...]]
  fingerprint: str  # changes when any file is added, removed, resized or touched


def subdirs(path: str) -> list[str]:
  return sorted(e.name for e in os.scandir(path)
                if e.is_dir() and not e.name.startswith('.'))


def image_files(directory: str) -> list[tuple[str, os.stat_result]]:
  """Image files under `directory` (recursively), sorted, with their stat."""
  found = []
  for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
    dirnames[:] = [d for d in dirnames if not d.startswith('.')]
    for name in filenames:
      # Dotfiles include macOS '._x.jpg' resource forks, which are not images.
      if not name.startswith('.') and imaging.is_image_file(name):
        path = os.path.join(dirpath, name)
        try:
          found.append((path, os.stat(path)))
        except OSError:  # a dangling link: listed, so that decoding reports it
          found.append((path, os.lstat(path)))
  return sorted(found)


def scan(root: str) -> FolderScan:
  """Lists the tree; raises DataError when its layout cannot be used."""
  root = os.path.abspath(root)
  if not os.path.isdir(root):
    raise DataError(f'no directory {root}; expected <root>/<class>/<images> '
                    'or <root>/<split>/<class>/<images>')
  top = subdirs(root)
  if not top:
    raise DataError(f'{root} has no class folders; expected <root>/<class>/<images> '
                    'or <root>/<split>/<class>/<images>')
  split_dirs = {d: SPLIT_ALIASES[d.lower()] for d in top if d.lower() in SPLIT_ALIASES}
  if not split_dirs:
    split_dirs = {'': 'train'}  # flat layout: the root's subfolders are classes
  else:
    others = sorted(set(top) - set(split_dirs))
    if others:
      raise DataError(f'{root} mixes split folders {sorted(split_dirs)} with other '
                      f'folders {others}; move the class folders into the split folders')
    if len(set(split_dirs.values())) < len(split_dirs):
      raise DataError(f'{root} has two folders for one split: {sorted(split_dirs)}; '
                      'merge them')
    if 'train' not in split_dirs.values():
      raise DataError(f'{root} has split folders {sorted(split_dirs)} but none for '
                      'training; add <root>/train/<class>/<images>')

  classes = {split: subdirs(os.path.join(root, d)) for d, split in split_dirs.items()}
  class_names = tuple(classes['train'])
  if not class_names:
    raise DataError(f'{os.path.join(root, _dir_of(split_dirs, "train"))} has no class '
                    'folders; add <class>/<images> folders')
  for split, names in classes.items():
    extra = sorted(set(names) - set(class_names))
    if extra:
      raise DataError(f'classes {extra} of split {split!r} have no training folder under '
                      f'{root}; add them to the training split or remove them')

  files, stamps = {}, []
  for d, split in sorted(split_dirs.items(), key=lambda kv: kv[1]):
    entries = []
    for name in classes[split]:
      class_dir = os.path.join(root, d, name)
      found = image_files(class_dir)
      if not found:
        raise DataError(f'class folder {class_dir} has no image files; add images '
                        f'(extensions {", ".join(sorted(imaging.IMAGE_EXTENSIONS))}) '
                        'or delete the folder')
      for path, st in found:
        rel = os.path.relpath(path, root).replace(os.sep, '/')
        entries.append(ImageFile(path, rel, class_names.index(name)))
        stamps.append(f'{rel}\t{st.st_size}\t{st.st_mtime_ns}')
    files[split] = tuple(entries)
  return FolderScan(root, class_names, files, cache.digest(stamps))


def _dir_of(split_dirs: dict[str, str], split: str) -> str:
  return next(d for d, s in split_dirs.items() if s == split)
