"""GLUE benchmark submission files (test-set predictions) and the metrics JSON of an eval run.

The leaderboard takes one TSV per task, zipped together:

  <File>.tsv    header `index<TAB>prediction`, then one row per test example in the test file's order,
                index 0..N-1 (the `index`/`idx` column of GLUE's test.tsv, and TFDS's `idx`)

  task key          file         prediction written as
  cola              CoLA.tsv     0 / 1
  sst2              SST-2.tsv    0 / 1
  mrpc              MRPC.tsv     0 / 1
  qqp               QQP.tsv      0 / 1
  wnli              WNLI.tsv     0 / 1
  stsb              STS-B.tsv    float, 3 decimals, clipped to [0, 5]
  mnli_matched      MNLI-m.tsv   entailment / neutral / contradiction
  mnli_mismatched   MNLI-mm.tsv  entailment / neutral / contradiction
  ax                AX.tsv       entailment / neutral / contradiction (the diagnostic set, an MNLI model)
  qnli              QNLI.tsv     entailment / not_entailment
  rte               RTE.tsv      entailment / not_entailment

Followed: jiant's GLUE submission formatter (nyu-mll/jiant, jiant/scripts/postproc/glue/
glue_submission_formatter.py: the file names above and the `index, prediction` header; its CoLA/SST/MRPC/
QQP/WNLI tasks carry LABELS ["0", "1"], its STS-B writes str(round(pred, 3)), AX reuses the MNLI task) and
the `do_predict` branch of HF transformers' examples run_glue.py (`index\\tprediction`, enumerate order,
`{item:3.3f}` for regression, label names otherwise). Where they differ we follow jiant: HF writes the
dataset's label names for every task (unacceptable/acceptable for CoLA) where jiant, like the GLUE files'
own labels, has 0/1; HF's regression rows are not clipped, and scores outside STS-B's [0, 5] can only lose.

The class ids here are the data pipeline's (data/datasets/glue_tsv.py, the TFDS order): MNLI/AX
0 entailment, 1 neutral, 2 contradiction; QNLI/RTE 0 entailment, 1 not_entailment; the 0/1 tasks' id is
the GLUE file's own label (1 = acceptable, positive, equivalent, duplicate, entailment for WNLI).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = ['SubmissionSpec', 'submission_spec', 'submission_filename', 'write_predictions',
           'read_predictions', 'write_metrics_json', 'HEADER']

HEADER = 'index\tprediction'
STSB_RANGE = (0.0, 5.0)  # STS-B similarity scores are 0-5; a prediction outside it can only lose.

# The 0/1 tasks write their ids through the names '0'/'1' (as jiant's LABELS do), so an id of 2 from a
# head of the wrong size is refused instead of written.
_BINARY = ('0', '1')
_NLI3 = ('entailment', 'neutral', 'contradiction')
_NLI2 = ('entailment', 'not_entailment')


@dataclasses.dataclass(frozen=True)
class SubmissionSpec:
  """How one GLUE task's test predictions are written: the file name and the arguments of write_predictions.

  label_names: class id -> the text written (('0', '1') for the 0/1 tasks), or None to write the id itself;
  regression: STS-B floats.
  """
  filename: str
  label_names: tuple[str, ...] | None = None
  regression: bool = False


_SPECS: Mapping[str, SubmissionSpec] = {
    'cola': SubmissionSpec('CoLA.tsv', _BINARY),
    'sst2': SubmissionSpec('SST-2.tsv', _BINARY),
    'mrpc': SubmissionSpec('MRPC.tsv', _BINARY),
    'stsb': SubmissionSpec('STS-B.tsv', regression=True),
    'qqp': SubmissionSpec('QQP.tsv', _BINARY),
    'mnli_matched': SubmissionSpec('MNLI-m.tsv', _NLI3),
    'mnli_mismatched': SubmissionSpec('MNLI-mm.tsv', _NLI3),
    'qnli': SubmissionSpec('QNLI.tsv', _NLI2),
    'rte': SubmissionSpec('RTE.tsv', _NLI2),
    'wnli': SubmissionSpec('WNLI.tsv', _BINARY),
    'ax': SubmissionSpec('AX.tsv', _NLI3),
}


def submission_spec(task: str) -> SubmissionSpec:
  """The submission file name and prediction format of a GLUE task key ('cola', 'mnli_matched', ...)."""
  try:
    return _SPECS[task]
  except KeyError:
    hint = " (MNLI has two test sets: 'mnli_matched' and 'mnli_mismatched')" if task == 'mnli' else ''
    raise ValueError(f'submission_spec: unknown GLUE task {task!r}{hint}; choose from {sorted(_SPECS)}') \
        from None


def submission_filename(task: str) -> str:
  """The file name the GLUE leaderboard expects for `task`, e.g. 'sst2' -> 'SST-2.tsv'."""
  return submission_spec(task).filename


def _atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
  """Writes `text` to a temporary file beside `path`, then renames it over `path`: readers (and a crash
  mid-write) see the old file or the whole new one, never a truncated one."""
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + '.', suffix='.tmp')
  try:
    with os.fdopen(fd, 'w', encoding='utf-8', newline='\n') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _format_rows(values: np.ndarray, label_names: Sequence[str] | None, regression: bool) -> list[str]:
  if regression:
    if not np.issubdtype(values.dtype, np.number) or np.issubdtype(values.dtype, np.complexfloating):
      raise ValueError(f'write_predictions: regression predictions must be real numbers, got {values.dtype}')
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
      raise ValueError(f'write_predictions: {bad.size} non-finite regression predictions (first at index '
                       f'{bad[0]}); the leaderboard rejects them, so fix the model output first')
    return [f'{v:.3f}' for v in np.clip(values.astype(np.float64), *STSB_RANGE)]
  if not (np.issubdtype(values.dtype, np.integer) or values.dtype == bool):
    raise ValueError(f'write_predictions: class predictions must be integer ids, got dtype {values.dtype} '
                     '(argmax the logits; pass regression=True for STS-B scores)')
  ids = values.astype(np.int64)
  upper = len(label_names) if label_names is not None else None
  out_of_range = (ids < 0) | (ids >= upper) if upper is not None else ids < 0
  if np.any(out_of_range):
    first = int(np.flatnonzero(out_of_range)[0])
    raise ValueError(f'write_predictions: class id {ids[first]} at index {first} is outside '
                     f'[0, {upper if upper is not None else "inf"}) for label_names={label_names}')
  if label_names is None:
    return [str(i) for i in ids]
  return [label_names[i] for i in ids]


def write_predictions(path: str | os.PathLike[str], predictions: ArrayLike,
                      label_names: Sequence[str] | None = None, regression: bool = False) -> None:
  """Writes one GLUE submission TSV atomically: `index\\tprediction`, then row i = example i of the test set.

  Args:
    path: the output file, normally <dir>/submission_filename(task); missing directories are created.
    predictions: (N,) class ids, or floats with regression=True (clipped to [0, 5], 3 decimals).
    label_names: class id -> word written (MNLI, QNLI, RTE, AX); None writes the id (CoLA, SST-2, ...).
    regression: STS-B scores instead of classes.
  """
  if regression and label_names is not None:
    raise ValueError('write_predictions: label_names is for classification; drop it with regression=True')
  values = np.asarray(predictions)
  if values.ndim != 1:
    raise ValueError(f'write_predictions: predictions must be (N,), got shape {values.shape} '
                     '(argmax logits over the class axis; squeeze a regression head\'s last axis)')
  if values.size == 0:
    raise ValueError('write_predictions: no predictions; a GLUE test set is never empty')
  rows = _format_rows(values, label_names, regression)
  _atomic_write_text(path, '\n'.join([HEADER] + [f'{i}\t{row}' for i, row in enumerate(rows)]) + '\n')


def read_predictions(path: str | os.PathLike[str], label_names: Sequence[str] | None = None,
                     regression: bool = False) -> np.ndarray:
  """Reads a file of write_predictions back: (N,) int64 class ids, or float64 with regression=True.

  Checks the header and that the indices run 0..N-1 in order, so a file for the wrong task or a shuffled
  one fails here rather than on the leaderboard.
  """
  with open(path, encoding='utf-8', newline='') as f:
    lines = f.read().splitlines()
  if not lines or lines[0] != HEADER:
    raise ValueError(f'read_predictions: {os.fspath(path)} must start with the header {HEADER!r}, '
                     f'found {lines[0] if lines else ""!r}')
  lookup = {name: i for i, name in enumerate(label_names)} if label_names is not None else None
  values: list[Any] = []
  for row, line in enumerate(lines[1:]):
    fields = line.split('\t')
    if len(fields) != 2 or fields[0] != str(row):
      raise ValueError(f'read_predictions: {os.fspath(path)} line {row + 2} is {line!r}; expected '
                       f'"{row}<TAB><prediction>" (rows in test-set order, index from 0)')
    text = fields[1]
    try:
      if regression:
        values.append(float(text))
      elif lookup is not None:
        values.append(lookup[text])
      else:
        values.append(int(text))
    except (KeyError, ValueError):
      expected = 'a float' if regression else (f'one of {tuple(label_names)}' if label_names is not None
                                               else 'an integer class id')
      raise ValueError(f'read_predictions: {os.fspath(path)} line {row + 2}: prediction {text!r} is not '
                       f'{expected}; were label_names/regression those of this task?') from None
  return np.asarray(values, np.float64 if regression else np.int64)


def _json_safe(value: Any) -> Any:
  """numpy scalars to Python, non-finite floats to the strings 'NaN'/'Infinity'/'-Infinity' (strict JSON,
  the convention of trainer/metrics.py's metrics.jsonl), mappings and sequences recursively."""
  if isinstance(value, Mapping):
    return {str(k): _json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(v) for v in value]
  if isinstance(value, np.ndarray):
    return _json_safe(value.tolist())
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return 'NaN' if math.isnan(value) else ('Infinity' if value > 0 else '-Infinity')
  return value


def write_metrics_json(path: str | os.PathLike[str], metrics: Mapping[str, Any]) -> None:
  """Writes `metrics` ({name: number, or nested mapping}) as indented JSON with sorted keys, atomically."""
  text = json.dumps(_json_safe(metrics), sort_keys=True, indent=2, allow_nan=False)
  _atomic_write_text(path, text + '\n')
