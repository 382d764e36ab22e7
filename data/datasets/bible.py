"""`bible/{en-es,es-en}`: English-Spanish translation pairs, one per Bible verse, from two public-domain Bibles.

Raw files: the Debian packages sword-text-web 426.0-1 (the World English Bible with Deuterocanon, SWORD module
engWEB2015eb, NRSVA versification) and sword-text-sparv 2.60-1 (the Reina-Valera 1909, module spaRV1909eb, KJV
versification), fetched with `apt-get download` and unpacked, not installed (data/raw.py). Verses are read by
data/datasets/sword.py and cleaned of notes, section headings and markup (a psalm's canonical title stays).

Alignment: a pair is the English and Spanish text of one (book, chapter, verse) of the 66 books both hold. Dropped:
  - chapters whose number of verses with text differs between the two modules (a verse missing or counted
    otherwise: Luke 17:36, Romans 16:25-27, ...), and the chapter after one whose last verse is empty on one
    side only: that verse moved into the next chapter, whose verses are then all shifted by one (Numbers 13
    and 30, 1 Samuel 24, Job 39, Hosea 12, Jonah 2, ...);
  - verses empty on either side, verses of a linked range (one text for several verses), WEB's last verse of
    Revelation (it carries the translation's glossary);
  - pairs whose length ratio (Spanish characters / English characters) is outside 0.5-2: what is left of
    misalignment.
From the real packages: 30,307 pairs (758 verses in 28 chapters dropped, 36 by the ratio, the glossary).
The Reina-Valera opens each chapter with a word in capitals ('EN el principio'); it is written as a word
('En el principio').

Splits: by chapter, `split_of('bible/<book>.<chapter>')` ~98/1/1, so that no chapter is in two splits.
Configs: `en-es` (English source, Spanish target) and `es-en`; both hold the same records: `en`, `es` (Text),
`book` (OSIS id, 'Gen'), `chapter`, `verse`.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from data.datasets import common, sword

NAME = 'bible'
ENGLISH = ('engWEB2015eb', common.WEB_PACKAGE)
SPANISH = ('spaRV1909eb', common.SPARV_PACKAGE)
MIN_RATIO, MAX_RATIO = 0.5, 2.0  # Spanish / English characters; the median is ~1.1
GLOSSARY = ('Rev', 22, 21)  # WEB's last verse, followed by its glossary of rare words

Key = tuple[str, int, int]  # (OSIS book, chapter, verse)


class Drop(enum.Enum):
  """Why a verse of the Spanish Bible made no pair."""
  CHAPTER = 'chapter'  # its chapter's verses differ in number, or are shifted
  EMPTY = 'empty'
  LINKED = 'linked'
  GLOSSARY = 'glossary'
  RATIO = 'ratio'


@dataclasses.dataclass(frozen=True)
class Pair:
  book: str
  chapter: int
  verse: int
  en: str
  es: str

  @property
  def key(self) -> str:
    return f'{self.book}.{self.chapter}.{self.verse}'

  @property
  def split(self) -> str:
    return common.split_of(f'{NAME}/{self.book}.{self.chapter}', common.SPLITS_98_1_1)


@dataclasses.dataclass(frozen=True)
class Text:
  """One cleaned verse of one module."""
  text: str
  linked: bool


def read_module(manual_dir: Path, module: str, package: common.RawPackage) -> dict[Key, Text]:
  """Every verse slot of `module` (in the unpacked `package` in manual_dir) as cleaned text, in canonical order."""
  sword_dir = common.BIBLE_PACKAGES.folder(manual_dir, package) / 'usr' / 'share' / 'sword'
  if not (sword_dir / 'mods.d').is_dir():
    raise common.missing_raw_error(NAME, manual_dir, f'{sword_dir.relative_to(manual_dir)}/mods.d ({package.name})')
  verses = sword.read_verses(sword.read_conf(sword_dir, module))
  return {(v.book, v.chapter, v.verse): Text(sword.clean(v.markup), v.linked) for v in verses}


def shifted_chapters(english: Mapping[Key, Text], spanish: Mapping[Key, Text]) -> set[tuple[str, int]]:
  """(book, chapter) of the chapters both modules hold whose verses cannot be paired by number: those whose
  count of verses with text differs, and those after a chapter whose last verse is empty on one side only."""
  last: dict[tuple[str, int], int] = {}
  counts: dict[tuple[str, int], list[int]] = collections.defaultdict(lambda: [0, 0])
  for key in spanish:
    if key not in english:
      continue
    chapter = key[:2]
    last[chapter] = max(last.get(chapter, 0), key[2])
    counts[chapter][0] += bool(english[key].text)
    counts[chapter][1] += bool(spanish[key].text)
  shifted, previous = set(), None
  for chapter, (en, es) in counts.items():
    if en != es:
      shifted.add(chapter)
    if previous is not None and previous[0] == chapter[0]:
      end = previous + (last[previous],)
      if bool(english[end].text) != bool(spanish[end].text):
        shifted.add(chapter)
    previous = chapter
  return shifted


def align(english: Mapping[Key, Text], spanish: Mapping[Key, Text]) -> tuple[list[Pair], collections.Counter[Drop]]:
  """The verse pairs of the two modules (in the Spanish module's order) and how many verses each rule dropped."""
  shifted = shifted_chapters(english, spanish)
  pairs, dropped = [], collections.Counter[Drop]()
  for key, es in spanish.items():
    en = english.get(key)
    if en is None:
      continue
    if key[:2] in shifted:
      dropped[Drop.CHAPTER] += 1
    elif not en.text or not es.text:
      dropped[Drop.EMPTY] += 1
    elif en.linked or es.linked:
      dropped[Drop.LINKED] += 1
    elif key == GLOSSARY:
      dropped[Drop.GLOSSARY] += 1
    elif not MIN_RATIO <= len(es.text) / len(en.text) <= MAX_RATIO:
      dropped[Drop.RATIO] += 1
    else:
      en_text, es_text = (unshout(t) if key[2] == 1 else t for t in (en.text, es.text))
      pairs.append(Pair(*key, en=en_text, es=es_text))
  return pairs, dropped


def unshout(text: str) -> str:
  """A chapter's opening word set in capitals written as a word: 'EN el principio' -> 'En el principio',
  'Y DESPUÉS movió' -> 'Y después movió'. A text whose first two words are not followed by lower case is kept."""
  words = text.split(' ')
  for i, word in enumerate(words[:2]):
    letters = ''.join(c for c in word if c.isalpha())
    if len(letters) >= 2 and letters.isupper() and i + 1 < len(words) and not words[i + 1].isupper():
      lowered = word.lower()
      if i == 0:
        first = next(j for j, c in enumerate(lowered) if c.isalpha())
        lowered = lowered[:first] + lowered[first].upper() + lowered[first + 1:]
      return ' '.join(words[:i] + [lowered] + words[i + 1:])
  return text


@dataclasses.dataclass(kw_only=True)
class BibleConfig(tfds.core.BuilderConfig):
  """One direction: the source text feature and the target text feature."""
  source: str = 'en'
  target: str = 'es'

  @property
  def text_features(self) -> tuple[str, ...]:
    return (self.source,)

  @property
  def target_feature(self) -> str:
    return self.target

  label_feature = None


class Bible(tfds.core.GeneratorBasedBuilder):
  """English-Spanish Bible verse pairs (WEB / Reina-Valera 1909) for translation, in either direction."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release: WEB and RV1909 verses aligned by number, ~98/1/1 by chapter.'}
  RAW_PACKAGE = common.BIBLE_PACKAGES
  MANUAL_DOWNLOAD_INSTRUCTIONS = common.manual_instructions(NAME, common.BIBLE_PACKAGES)
  BUILDER_CONFIGS = [
      BibleConfig(name='en-es', source='en', target='es', description='English (WEB) -> Spanish (RV1909).'),
      BibleConfig(name='es-en', source='es', target='en', description='Spanish (RV1909) -> English (WEB).'),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'en': tfds.features.Text(),
            'es': tfds.features.Text(),
            'book': tfds.features.Text(),
            'chapter': np.int32,
            'verse': np.int32,
        }),
        supervised_keys=(self.builder_config.source, self.builder_config.target),
        disable_shuffling=True,  # keep the canonical order of the verses
        homepage='Debian packages sword-text-web 426.0-1 and sword-text-sparv 2.60-1',
        license='Public domain (World English Bible; Reina-Valera 1909).',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
    manual_dir = Path(dl_manager.manual_dir)
    pairs, _ = align(read_module(manual_dir, *ENGLISH), read_module(manual_dir, *SPANISH))
    by_split: dict[str, list[Pair]] = {split: [] for split, _ in common.SPLITS_98_1_1}
    for pair in pairs:
      by_split[pair.split].append(pair)
    return {split: self._generate_examples(part) for split, part in by_split.items() if part}

  def _generate_examples(self, pairs: list[Pair]) -> Iterator[tuple[str, dict[str, Any]]]:
    for pair in pairs:
      yield pair.key, {'en': pair.en, 'es': pair.es, 'book': pair.book, 'chapter': pair.chapter, 'verse': pair.verse}
