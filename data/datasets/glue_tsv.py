"""`glue_tsv`: the GLUE tasks read from the official TSV files in a local folder (the manual_dir).

The folder has the layout of the GLUE archive: `CoLA/train.tsv`, `SST-2/dev.tsv`, `MNLI/dev_matched.tsv`,
... Feature names, label encodings, splits and `idx` follow TFDS's `glue/<task>` (tensorflow_datasets/text/
glue.py) so that `builtin:glue_tsv/sst2` and `tfds:glue/sst2` are interchangeable: the same csv reading
(tab, QUOTE_NONE, header except CoLA train/dev), label names or 0/1 strings mapped to class ids, STS-B
scores as float32, test files without labels get label -1, rows with a missing field are skipped (their
row number is still counted in `idx`). One difference: TFDS builds MRPC from the original Microsoft files
and its train/validation `idx` counts rows of msr_paraphrase_train.txt; here `idx` is the row in
MRPC/train.tsv or MRPC/dev.tsv (the sentences, labels and split membership are the same).
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from data.datasets import common

NAME = 'glue_tsv'
MANUAL_DOWNLOAD_INSTRUCTIONS = (
    'Unpack the GLUE data (the folders CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE, WNLI with their TSV '
    'files) into one folder and run `python -m data.prepare glue_tsv --glue_dir <that folder>`.')


@dataclasses.dataclass(kw_only=True)
class GlueTsvConfig(tfds.core.BuilderConfig):
  """One GLUE task: the TSV columns of its text features, its label column and classes, its splits."""
  folder: str = ''  # the task's folder in the GLUE archive.
  text_columns: dict[str, str] = dataclasses.field(default_factory=dict)  # feature -> TSV column.
  label_column: str = 'label'
  label_classes: tuple[str, ...] = ()  # () = regression (float32 label).
  splits: dict[str, str] = dataclasses.field(default_factory=dict)  # split -> file stem.
  process_label: Callable[[Any], Any] = lambda x: x

  @property
  def text_features(self) -> tuple[str, ...]:
    return tuple(self.text_columns)

  @property
  def label_feature(self) -> str:
    return 'label'


_STANDARD_SPLITS = {common.TRAIN: 'train', common.VALIDATION: 'dev', common.TEST: 'test'}
_MNLI = dict(folder='MNLI', text_columns={'premise': 'sentence1', 'hypothesis': 'sentence2'},
             label_column='gold_label', label_classes=('entailment', 'neutral', 'contradiction'))


def _task(name: str, description: str, **kwargs: Any) -> GlueTsvConfig:
  kwargs.setdefault('splits', _STANDARD_SPLITS)
  return GlueTsvConfig(name=name, description=description, **kwargs)


TASKS: tuple[GlueTsvConfig, ...] = (
    _task('cola', 'Corpus of Linguistic Acceptability (Matthews corr.).', folder='CoLA',
          text_columns={'sentence': 'sentence'}, label_column='is_acceptable',
          label_classes=('unacceptable', 'acceptable')),
    _task('sst2', 'Stanford Sentiment Treebank, binary (accuracy).', folder='SST-2',
          text_columns={'sentence': 'sentence'}, label_classes=('negative', 'positive')),
    _task('mrpc', 'Microsoft Research Paraphrase Corpus (accuracy, F1).', folder='MRPC',
          text_columns={'sentence1': '#1 String', 'sentence2': '#2 String'}, label_column='Quality',
          label_classes=('not_equivalent', 'equivalent')),
    _task('qqp', 'Quora Question Pairs (accuracy, F1).', folder='QQP',
          text_columns={'question1': 'question1', 'question2': 'question2'}, label_column='is_duplicate',
          label_classes=('not_duplicate', 'duplicate')),
    _task('stsb', 'Semantic Textual Similarity Benchmark, 0-5 (Pearson, Spearman).', folder='STS-B',
          text_columns={'sentence1': 'sentence1', 'sentence2': 'sentence2'}, label_column='score',
          process_label=np.float32),
    _task('mnli', 'Multi-Genre NLI, matched and mismatched (accuracy).', splits={
        common.TRAIN: 'train', 'validation_matched': 'dev_matched', 'validation_mismatched': 'dev_mismatched',
        'test_matched': 'test_matched', 'test_mismatched': 'test_mismatched'}, **_MNLI),
    _task('mnli_matched', 'The matched validation and test splits of MNLI.',
          splits={common.VALIDATION: 'dev_matched', common.TEST: 'test_matched'}, **_MNLI),
    _task('mnli_mismatched', 'The mismatched validation and test splits of MNLI.',
          splits={common.VALIDATION: 'dev_mismatched', common.TEST: 'test_mismatched'}, **_MNLI),
    _task('qnli', 'Question NLI from SQuAD (accuracy).', folder='QNLI',
          text_columns={'question': 'question', 'sentence': 'sentence'},
          label_classes=('entailment', 'not_entailment')),
    _task('rte', 'Recognizing Textual Entailment (accuracy).', folder='RTE',
          text_columns={'sentence1': 'sentence1', 'sentence2': 'sentence2'},
          label_classes=('entailment', 'not_entailment')),
    _task('wnli', 'Winograd NLI (accuracy).', folder='WNLI',
          text_columns={'sentence1': 'sentence1', 'sentence2': 'sentence2'},
          label_classes=('not_entailment', 'entailment')),
)


def task_files(glue_dir: Path, config: GlueTsvConfig) -> dict[str, Path]:
  """{split: TSV path} of one task; FileNotFoundError naming the missing file and the fix."""
  files = {split: glue_dir / config.folder / f'{stem}.tsv' for split, stem in config.splits.items()}
  missing = [str(p.relative_to(glue_dir)) for p in files.values() if not p.is_file()]
  if missing:
    raise FileNotFoundError(f'{NAME}/{config.name}: {", ".join(missing)} not found in the GLUE folder {glue_dir} '
                            f'(the --glue_dir / manual_dir). {MANUAL_DOWNLOAD_INSTRUCTIONS}')
  return files


def read_task_file(path: Path, config: GlueTsvConfig, split_stem: str) -> Iterator[dict[str, Any]]:
  """The examples of one TSV file, exactly as TFDS glue reads them (see the module docstring)."""
  headerless = config.name == 'cola' and not split_stem.startswith('test')
  with path.open(encoding='utf-8-sig', newline='') as f:  # -sig: a byte-order mark must not rename a column.
    reader = csv.reader(f, delimiter='\t', quoting=csv.QUOTE_NONE)
    header = None if headerless else next(reader, [])
    # csv.DictReader (TFDS) skips blank lines without counting them; csv.reader (CoLA) counts them.
    rows = enumerate(reader) if headerless else enumerate(fields for fields in reader if fields)
    for n, fields in rows:
      if headerless:
        row = {'sentence': fields[3] if len(fields) > 3 else None,
               'is_acceptable': fields[1] if len(fields) > 1 else None}
      else:
        row = dict(zip(header, fields)) | {k: None for k in header[len(fields):]}
      example: dict[str, Any] = {feature: row.get(column) for feature, column in config.text_columns.items()}
      example['idx'] = n
      if config.label_column in row:
        label = row[config.label_column]
        if config.label_classes and label not in config.label_classes:
          label = int(label) if label else None  # 0/1 in the file: already the class id.
        example['label'] = None if label is None else config.process_label(label)
      else:
        example['label'] = config.process_label(-1)  # unlabeled test split.
      if all(value is not None for value in example.values()):
        yield example


class GlueTsv(tfds.core.GeneratorBasedBuilder):
  """GLUE from local TSV files, interchangeable with TFDS's glue/<task>."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release: the nine GLUE tasks plus mnli_matched and mnli_mismatched.'}
  RAW_PACKAGE = None  # the GLUE files are not in a registry package; pass --glue_dir.
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = list(TASKS)
  builder_config: GlueTsvConfig

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    features: dict[str, Any] = {name: tfds.features.Text() for name in config.text_columns}
    features['label'] = (tfds.features.ClassLabel(names=list(config.label_classes)) if config.label_classes
                         else np.float32)
    features['idx'] = np.int32
    return tfds.core.DatasetInfo(
        builder=self, description=f'{config.description} Read from the GLUE TSV files. {__doc__}',
        features=tfds.features.FeaturesDict(features), homepage='GLUE benchmark (Wang et al., 2019)')

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
    config = self.builder_config
    files = task_files(Path(dl_manager.manual_dir), config)
    return {split: self._generate_examples(path, config.splits[split]) for split, path in files.items()}

  def _generate_examples(self, path: Path, split_stem: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for example in read_task_file(path, self.builder_config, split_stem):
      yield example['idx'], example
