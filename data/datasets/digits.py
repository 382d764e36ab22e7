"""`digits`: scikit-learn's handwritten digits (UCI optical recognition of handwritten digits, test part): 1,797
grey images of 8x8 pixels, each pixel the count (0..16) of set pixels in a 4x4 block of a 32x32 bitmap, 10 classes.

Raw file: `sklearn/datasets/data/digits.csv.gz` of the scikit-learn wheel (pip, the version of requirements.txt),
what `sklearn.datasets.load_digits` reads: one row per image, 64 pixel counts row-major, then the class. The
wheel is fetched by pip like the other pip datasets' packages (data/raw.py) rather than read from an installed
scikit-learn: the dataset then does not depend on what happens to be installed, and builds the same everywhere.

Features: `image` (8, 8, 1) uint8 in the dataset's own range 0..16 (a Tensor, not an Image: TFDS encodes Image
features as PNG with TensorFlow, which building must not need), `label` ClassLabel('0'..'9'), `idx` (the
0-based row in the file, unique across splits). Splits ~80/10/10 by `split_of('digits/<row>')`: 1,463 / 159 / 175.
Mirrored digits are other shapes (a flipped 2 is no 2): `HORIZONTAL_FLIPS = False` refuses data.flip.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from data.datasets import common

NAME = 'digits'
RAW_FILE = 'sklearn/datasets/data/digits.csv.gz'
SIDE = 8
MAX_VALUE = 16  # a pixel counts the set pixels of a 4x4 block
CLASSES = tuple(str(d) for d in range(10))


def read_rows(manual_dir: Path) -> list[tuple[np.ndarray, int]]:
  """(image (8, 8, 1) uint8, class) of every row of the raw file, in file order; a malformed row is an error
  naming its line."""
  path = manual_dir / RAW_FILE
  if not path.is_file():
    raise common.missing_raw_error(NAME, manual_dir, RAW_FILE)
  rows = []
  with gzip.open(path, 'rt', encoding='ascii') as f:
    for line, text in enumerate(f, start=1):
      values = text.strip().split(',')
      numbers = [float(v) for v in values] if len(values) == SIDE * SIDE + 1 else []
      if not numbers or any(not n.is_integer() for n in numbers) or not (
          all(0 <= n <= MAX_VALUE for n in numbers[:-1]) and 0 <= numbers[-1] < len(CLASSES)):
        raise ValueError(f'{path} line {line}: expected {SIDE * SIDE} pixel counts 0..{MAX_VALUE} and a class '
                         f'0..{len(CLASSES) - 1}, comma-separated; found {text.strip()[:80]!r}')
      pixels = np.asarray(numbers[:-1], np.uint8).reshape(SIDE, SIDE, 1)
      rows.append((pixels, int(numbers[-1])))
  return rows


class Digits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's 8x8 handwritten digits, split ~80/10/10 by a hash of the row."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release: 1,797 images, ~80/10/10 by a hash of the row index.'}
  RAW_PACKAGE = common.SKLEARN_PACKAGE
  MANUAL_DOWNLOAD_INSTRUCTIONS = common.manual_instructions(NAME, common.SKLEARN_PACKAGE)
  HORIZONTAL_FLIPS = False

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=(SIDE, SIDE, 1), dtype=np.uint8),
            'label': tfds.features.ClassLabel(names=list(CLASSES)),
            'idx': np.int32,
        }),
        supervised_keys=('image', 'label'),
        homepage='PyPI: scikit-learn 1.9.1, sklearn/datasets/data/digits.csv.gz',
        citation='Alpaydin, E. & Kaynak, C. (1998). Optical Recognition of Handwritten Digits. UCI Machine '
                 'Learning Repository.',
        license='CC BY 4.0 (UCI); BSD-3-Clause (scikit-learn).',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
    rows = read_rows(Path(dl_manager.manual_dir))
    by_split: dict[str, list[int]] = {split: [] for split, _ in common.SPLITS_80_10_10}
    for index in range(len(rows)):
      by_split[common.split_of(f'{NAME}/{index}', common.SPLITS_80_10_10)].append(index)
    return {split: self._generate_examples(rows, part) for split, part in by_split.items() if part}

  def _generate_examples(self, rows: list[tuple[np.ndarray, int]],
                         indices: list[int]) -> Iterator[tuple[str, dict[str, Any]]]:
    for index in indices:
      image, label = rows[index]
      yield str(index), {'image': image, 'label': label, 'idx': index}
