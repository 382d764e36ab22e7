"""`movie_sentiment` and `sentiment_snippets`: sentence sentiment with human scores (Hutto & Gilbert 2014).

`movie_sentiment/binary` is an SST-2-like task on Pang & Lee's movie-review sentences: label = 1 (positive)
when the mean human rating is > 0, else 0 (the 37 sentences rated exactly 0 count as negative);
`movie_sentiment/regression` predicts the mean rating itself (float in [-4, 4]). Features follow TFDS
glue: `sentence`, `label`, `idx` (idx = the 0-based row of the sentence in the ground-truth file, unique
across splits). `sentiment_snippets` offers the same two tasks on the tweets, Amazon-review and NYT-editorial
files (`tweets_binary`, `amazon_regression`, ...) and `sentiment_snippets/corpus`: the text of all four
files as documents (a review or an editorial is one document) for pretraining with pip alone (no npm).
The corpus splits mirror the sentiment splits document for document, so pretraining on `corpus` train
never sees a validation or test sentence of the sentiment tasks. Splits: see data/datasets/hutto.py.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from data.datasets import common, hutto
from data.datasets.hutto import Domain


class Task(enum.Enum):
  BINARY = 'binary'  # label = score > 0, ClassLabel(['negative', 'positive']).
  REGRESSION = 'regression'  # label = mean rating, float32 in [-4, 4].
  CORPUS = 'corpus'  # text only, documents of every domain.


LABEL_NAMES = ('negative', 'positive')


@dataclasses.dataclass(kw_only=True)
class SentimentConfig(tfds.core.BuilderConfig):
  """One domain (or all, for the corpus) and one task."""
  domains: tuple[Domain, ...] = ()
  task: Task = Task.BINARY

  @property
  def text_features(self) -> tuple[str, ...]:
    return ('text',) if self.task is Task.CORPUS else ('sentence',)

  @property
  def label_feature(self) -> str | None:
    return None if self.task is Task.CORPUS else 'label'


def _features(task: Task) -> tfds.features.FeaturesDict:
  match task:
    case Task.BINARY:
      return tfds.features.FeaturesDict({'sentence': tfds.features.Text(),
                                         'label': tfds.features.ClassLabel(names=list(LABEL_NAMES)),
                                         'idx': np.int32})
    case Task.REGRESSION:
      return tfds.features.FeaturesDict({'sentence': tfds.features.Text(), 'label': np.float32,
                                         'idx': np.int32})
    case Task.CORPUS:
      return tfds.features.FeaturesDict({'text': tfds.features.Text(),
                                         'source': tfds.features.Text()})  # movies, tweets, amazon, nyt.


class _SentimentBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared by the two registered builders below: reads the archive, splits, encodes one config."""

  VERSION = tfds.core.Version('1.0.0')
  RAW_PACKAGE = common.VADER_PACKAGE
  builder_config: SentimentConfig

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=_features(self.builder_config.task),
        homepage='PyPI: vaderSentiment 3.3.2, additional_resources/hutto_ICWSM_2014.tar.gz',
        citation='Hutto, C.J. & Gilbert, E.E. (2014). VADER: A Parsimonious Rule-based Model for Sentiment '
                 'Analysis of Social Media Text. ICWSM-14.',
        license='MIT (vaderSentiment); research data of the ICWSM-14 paper.',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
    manual_dir = Path(dl_manager.manual_dir)
    config = self.builder_config
    rows = [(domain, s) for domain in config.domains
            for s in hutto.read_ground_truth(manual_dir, domain, self.name)]
    by_split: dict[str, list[tuple[Domain, hutto.Snippet]]] = {split: [] for split, _ in common.SPLITS_80_10_10}
    for domain, snippet in rows:
      by_split[snippet.split(domain)].append((domain, snippet))
    return {split: self._generate_examples(part) for split, part in by_split.items() if part}

  def _generate_examples(self, rows: list[tuple[Domain, hutto.Snippet]]) -> Iterator[tuple[str, dict[str, Any]]]:
    task = self.builder_config.task
    if task is Task.CORPUS:
      documents: dict[tuple[Domain, str], list[str]] = {}
      for domain, snippet in rows:
        documents.setdefault((domain, snippet.document), []).append(snippet.text)
      for (domain, document), sentences in documents.items():
        yield f'{domain.short}/{document}', {'text': ' '.join(sentences), 'source': domain.short}
      return
    for domain, snippet in rows:
      label = int(snippet.score > 0) if task is Task.BINARY else np.float32(snippet.score)
      yield f'{domain.short}/{snippet.id}', {'sentence': snippet.text, 'label': label, 'idx': snippet.line}


class MovieSentiment(_SentimentBuilder):
  """Movie-review sentences (Pang & Lee) with Hutto's human ratings: binary (SST-2-like) or regression."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = common.manual_instructions('movie_sentiment', common.VADER_PACKAGE)
  RELEASE_NOTES = {'1.0.0': 'First release: 10,605 sentences, ~80/10/10 by a hash of the sentence id.'}
  BUILDER_CONFIGS = [
      SentimentConfig(name=task.value, domains=(Domain.MOVIES,), task=task,
                      description=f'Movie-review sentences, {task.value} label.')
      for task in (Task.BINARY, Task.REGRESSION)
  ]


class SentimentSnippets(_SentimentBuilder):
  """Tweets, Amazon-review and NYT-editorial sentences with human ratings, and all four files as a corpus."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = common.manual_instructions('sentiment_snippets', common.VADER_PACKAGE)
  RELEASE_NOTES = {'1.0.0': 'First release: tweets/amazon/nyt x binary/regression, and the corpus config.'}
  BUILDER_CONFIGS = [
      SentimentConfig(name=f'{domain.short}_{task.value}', domains=(domain,), task=task,
                      description=f'{domain.short} sentences, {task.value} label.')
      for domain in (Domain.TWEETS, Domain.AMAZON, Domain.NYT) for task in (Task.BINARY, Task.REGRESSION)
  ] + [SentimentConfig(name='corpus', domains=tuple(Domain), task=Task.CORPUS,
                       description='The text of all four files, one example per document (pip-only corpus).')]
