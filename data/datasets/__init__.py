"""TFDS builders of the built-in datasets; importing this package registers them with TFDS.

| name | what | splits | raw files |
|---|---|---|---|
| `sotu` | 233 State of the Union addresses (text, year, president, party) | train/validation ~95/5 | npm |
| `moby_dick` | Moby-Dick, 138 chapters (text, chapter, title) | train/validation ~95/5 | npm |
| `next_sentence` | MRPC-like pairs from the speeches: is sentence2 the next sentence? | as sotu | npm |
| `sotu_cloze` | extractive QA (SQuAD's features): 4,108 one-word cloze questions on passages of the speeches | ~91/4/5 by speech | npm |
| `movie_sentiment/{binary,regression}` | 10,605 movie-review sentences, SST-2-like | ~80/10/10 | pip |
| `sentiment_snippets/<domain>_<task>`, `/corpus` | tweets, amazon, nyt x binary, regression; corpus | ~80/10/10 | pip |
| `sentence_reversal` | seq2seq: a 4-16 word movie-review sentence -> its words reversed | ~80/10/10 | pip |
| `bible/{en-es,es-en}` | seq2seq: 30,307 English (WEB) - Spanish (RV1909) verse pairs | ~98/1/1 by chapter | apt |
| `digits` | 1,797 8x8 grey handwritten digits, 10 classes (scikit-learn's), pixels 0..16 | ~80/10/10 | pip wheel |
| `glue_tsv/<task>` | GLUE from the official TSV files, as TFDS glue/<task> | GLUE's | --glue_dir |

All are written as array_record (`file_format='array_record'`), so neither building nor reading them needs
TensorFlow: `tfds.data_source(name, data_dir=..., split=...)` gives random access to dicts of numpy values.
Build them with `python -m data.prepare [name ...]`; read them with data/sources.py (`builtin:<name>`).
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from data.datasets import bible, cloze, digits, glue_tsv, moby_dick, next_sentence, sentence_reversal, sentiment, sotu
from data.datasets.common import AptPackages, RawPackage

BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    cls.name: cls for cls in (sotu.Sotu, moby_dick.MobyDick, next_sentence.NextSentence, cloze.SotuCloze,
                              sentiment.MovieSentiment, sentiment.SentimentSnippets,
                              sentence_reversal.SentenceReversal, bible.Bible, digits.Digits, glue_tsv.GlueTsv)
}


def raw_package(name: str) -> RawPackage | AptPackages | None:
  """The registry package holding the raw files of built-in dataset `name` (None: glue_tsv, a local folder)."""
  return BUILDERS[name].RAW_PACKAGE


def task_features(builder: tfds.core.DatasetBuilder) -> tuple[tuple[str, ...], str | None, str | None] | None:
  """(text features, label feature or None, target feature or None) declared by a builder or its config;
  None if it declares none. A target feature makes a seq2seq task (text features: its source text).

  Builder configs with `text_features` (ours, and TFDS's GlueConfig) win over the builder's TEXT_FEATURES."""
  config = builder.builder_config
  if config is not None and hasattr(config, 'text_features'):
    label = getattr(config, 'label_feature', 'label')
    return tuple(config.text_features), label, getattr(config, 'target_feature', None)
  if hasattr(builder, 'TEXT_FEATURES'):
    return tuple(builder.TEXT_FEATURES), builder.LABEL_FEATURE, getattr(builder, 'TARGET_FEATURE', None)
  return None


__all__ = ['BUILDERS', 'RawPackage', 'raw_package', 'task_features']
