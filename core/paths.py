"""Paths a user gives (flags, config fields, library arguments), made absolute once where they come in.

orbax refuses a relative checkpoint path (its OCDBT writer raises from the asynchronous save, steps into the
run), and a relative path saved in a config means something else from another directory. So every path from
a user goes through `user_path` at the boundary: `~` expanded, relative to the directory the program was
started in, symbolic links kept as written. Local paths only.
"""

from __future__ import annotations

import os
from pathlib import Path


def user_path(path: str | os.PathLike[str]) -> Path:
  """`path` as an absolute, normalised local path: '~/runs/x' -> '/home/me/runs/x', 'runs/x' -> '<cwd>/runs/x'."""
  return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


CACHE_ROOT = '~/.cache/transformers_jax'  # downloads, compiled programs: what a rerun reuses


def user_cache_dir(name: str) -> Path:
  """The folder `name` of this project's user cache, CACHE_ROOT/<name>."""
  return user_path(CACHE_ROOT) / name
