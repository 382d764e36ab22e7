"""`sentence_reversal`: a small sequence-to-sequence task built from the movie-review sentences: the target
is the source sentence with its words in reverse order.

Why this task: nothing can be fetched from a dataset hub and the built-in raw files hold no parallel text, so
the built-in seq2seq task is a mapping we can derive exactly. Reversing the word order (the reordering
Sutskever et al. 2014 applied to their source sentences) is a real, fully learnable string-to-string task:
every target word is copied from the source, the first target word is the last source word, so the model must
attend over the whole input; a perfect model scores BLEU 100 against the reference. It is not translation:
it exercises the seq2seq pipeline, training and generation, not language understanding.

Source sentences: Pang & Lee's movie-review sentences in the vaderSentiment sdist (pip only, as
`movie_sentiment`), those of MIN_WORDS..MAX_WORDS words: 4,265 of the 10,605. Words are the
whitespace-separated tokens with their punctuation attached ('mess.' stays one word), so
`target == ' '.join(reversed(source.split()))`. Splits as `movie_sentiment` (`split_of('movies/<id>')`
~80/10/10), so neither this task nor `sentiment_snippets/corpus` puts a sentence in two different splits.
Features: `source`, `target` (Text) and `idx` (the sentence's 0-based row in the ground-truth file).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from data.datasets import common, hutto

NAME = 'sentence_reversal'
MIN_WORDS = 4  # fewer words leave (almost) nothing to reorder.
MAX_WORDS = 16  # keeps both sides under ~32 tokens of a small vocabulary: CPU-sized sequence lengths.


def reverse_words(sentence: str) -> str:
  """The words of `sentence` in reverse order, joined by single spaces.

  >>> reverse_words('A dull, dreary mess.')
  'mess. dreary dull, A'
  """
  return ' '.join(reversed(sentence.split()))


class SentenceReversal(tfds.core.GeneratorBasedBuilder):
  """Movie-review sentences (source) and the same words in reverse order (target)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release: 4-16 word movie-review sentences, ~80/10/10 as movie_sentiment.'}
  RAW_PACKAGE = common.VADER_PACKAGE
  MANUAL_DOWNLOAD_INSTRUCTIONS = common.manual_instructions(NAME, common.VADER_PACKAGE)
  TEXT_FEATURES = ('source',)
  LABEL_FEATURE = None
  TARGET_FEATURE = 'target'

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'source': tfds.features.Text(),
            'target': tfds.features.Text(),
            'idx': np.int32,
        }),
        supervised_keys=('source', 'target'),
        homepage='PyPI: vaderSentiment 3.3.2, additional_resources/hutto_ICWSM_2014.tar.gz',
        license='MIT (vaderSentiment); sentences from Pang & Lee\'s public polarity data.',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
    snippets = hutto.read_ground_truth(Path(dl_manager.manual_dir), hutto.Domain.MOVIES, NAME)
    by_split: dict[str, list[hutto.Snippet]] = {split: [] for split, _ in common.SPLITS_80_10_10}
    for snippet in snippets:
      if MIN_WORDS <= len(snippet.text.split()) <= MAX_WORDS:
        by_split[snippet.split(hutto.Domain.MOVIES)].append(snippet)
    return {split: self._generate_examples(part) for split, part in by_split.items() if part}

  def _generate_examples(self, snippets: list[hutto.Snippet]) -> Iterator[tuple[str, dict[str, Any]]]:
    for snippet in snippets:
      yield snippet.id, {'source': snippet.text, 'target': reverse_words(snippet.text), 'idx': snippet.line}
