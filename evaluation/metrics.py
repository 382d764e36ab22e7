"""Task metrics in numpy float64: GLUE's classification and regression metrics, and language-model scores.

Every function here is written out in numpy, so eval.py needs neither scikit-learn nor scipy at run time;
tests/test_eval_metrics.py holds each one against the reference (sklearn.metrics, scipy.stats).

  accuracy        fraction of predictions equal to the label (SST-2, MNLI, QNLI, RTE, WNLI, QQP/MRPC too)
  f1              binary F1 of the positive class 1 (MRPC, QQP), 0 when there is no positive at all
  matthews_corr   multi-class Matthews correlation (CoLA), 0 when undefined (a constant row or column)
  pearson         Pearson's r (STS-B), nan when an input is constant or holds a nan
  spearman        Spearman's rho with average ranks for ties (STS-B), nan like pearson
  perplexity      exp(mean loss in nats per token), exponent capped so the value stays finite
  bits_per_byte   loss in bits per byte of raw text: tokenizer-independent

Inputs: predictions and labels of the same shape (any array-like, jax arrays too), flattened; an optional
`mask` (same shape, 0/1 or bool) drops the padding examples that fill the last eval batch.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable, Mapping

import numpy as np
from numpy.typing import ArrayLike

__all__ = ['Metric', 'accuracy', 'f1', 'matthews_corr', 'pearson', 'spearman', 'compute', 'perplexity',
           'bits_per_byte']

# math.exp overflows a float64 just above 709.78; capping the exponent at 700 keeps a diverged run's
# perplexity a (huge) finite number that logs and JSON files can hold, instead of an OverflowError.
_MAX_LOG_PERPLEXITY = 700.0


class Metric(enum.StrEnum):
  """The metric names of config.eval.metrics and of the result dictionaries; values are stable keys."""
  ACCURACY = 'accuracy'
  F1 = 'f1'
  MATTHEWS = 'matthews_corr'
  PEARSON = 'pearson'
  SPEARMAN = 'spearman'
  PERPLEXITY = 'perplexity'
  SOP_ACCURACY = 'sop_accuracy'  # ALBERT's sentence order (mlm_sop): examples whose segment order is predicted
  BITS_PER_BYTE = 'bits_per_byte'
  BLEU = 'bleu'
  CHRF = 'chrf'
  ROUGE1 = 'rouge1'
  ROUGE2 = 'rouge2'
  ROUGEL = 'rougeL'
  # Extractive QA (evaluation/qa.py): SQuAD's official scores of the predicted answer texts, in percent.
  EXACT_MATCH = 'exact_match'
  SQUAD_F1 = 'squad_f1'  # token F1 against the best-matching gold answer (not F1, GLUE's binary F1)


def _pair(predictions: ArrayLike, labels: ArrayLike, name: str,
          mask: ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Both inputs as flat arrays of one length, after dropping the examples where `mask` is 0."""
  p, y = np.asarray(predictions), np.asarray(labels)
  if p.shape != y.shape:
    logits = p.ndim == y.ndim + 1 and p.shape[:-1] == y.shape and p.shape[-1] > 1
    hint = (' (predictions look like logits: pass the class ids, argmax over the last axis)' if logits else
            ' (reshape both to (N,), e.g. squeeze a regression head\'s last axis)')
    raise ValueError(f'{name}: predictions have shape {p.shape} but labels {y.shape}; they must match{hint}')
  p, y = p.reshape(-1), y.reshape(-1)
  if mask is not None:
    m = np.asarray(mask)
    if m.shape != np.shape(predictions):
      raise ValueError(f'{name}: mask has shape {m.shape} but predictions {np.shape(predictions)}; '
                       'give one 0/1 entry per example')
    m = m.reshape(-1)
    if not np.all((m == 0) | (m == 1)):
      raise ValueError(f'{name}: mask must hold only 0/1 (or bools) marking the real examples, got '
                       f'values {np.unique(m)[:5].tolist()}')
    keep = m.astype(bool)
    p, y = p[keep], y[keep]
  if p.size == 0:
    raise ValueError(f'{name}: no examples to score (empty input, or a mask of all zeros)')
  return p, y


def _class_ids(values: np.ndarray, what: str, name: str) -> np.ndarray:
  """`values` as int64 class ids; floats are refused since they usually mean logits or probabilities."""
  if values.dtype == bool:
    return values.astype(np.int64)
  if not np.issubdtype(values.dtype, np.integer):
    raise ValueError(f'{name}: {what} must be integer class ids, got dtype {values.dtype} '
                     '(argmax the logits, or cast labels to int)')
  return values.astype(np.int64)


def accuracy(predictions: ArrayLike, labels: ArrayLike, mask: ArrayLike | None = None) -> float:
  """Fraction of examples whose predicted class equals the label. predictions, labels: (N,) int."""
  p, y = _pair(predictions, labels, 'accuracy', mask)
  p, y = _class_ids(p, 'predictions', 'accuracy'), _class_ids(y, 'labels', 'accuracy')
  return float(np.mean(p == y, dtype=np.float64))


def f1(predictions: ArrayLike, labels: ArrayLike, mask: ArrayLike | None = None) -> float:
  """Binary F1 of the positive class 1 (as GLUE scores MRPC and QQP). predictions, labels: (N,) in {0, 1}.

  F1 = 2 TP / (2 TP + FP + FN); 0 when there is no positive label nor prediction (as scikit-learn's default).
  """
  p, y = _pair(predictions, labels, 'f1', mask)
  p, y = _class_ids(p, 'predictions', 'f1'), _class_ids(y, 'labels', 'f1')
  for what, v in (('predictions', p), ('labels', y)):
    bad = np.setdiff1d(v, [0, 1])
    if bad.size:
      raise ValueError(f'f1: binary F1 needs {what} in {{0, 1}}, found {bad[:5].tolist()}; '
                       'use accuracy or matthews_corr for more classes')
  tp = float(np.sum((p == 1) & (y == 1)))
  fp = float(np.sum((p == 1) & (y == 0)))
  fn = float(np.sum((p == 0) & (y == 1)))
  denominator = 2.0 * tp + fp + fn
  return 0.0 if denominator == 0 else 2.0 * tp / denominator


def matthews_corr(predictions: ArrayLike, labels: ArrayLike, mask: ArrayLike | None = None) -> float:
  """Matthews correlation coefficient over any number of classes (Gorodkin's R_K; CoLA's metric).

  From the confusion matrix C (rows: label, columns: prediction), with t = row sums, p = column sums,
  c = trace, s = N:  MCC = (c s - t.p) / sqrt((s^2 - p.p) (s^2 - t.t)); 0 when the denominator is 0
  (all labels or all predictions one class), as scikit-learn returns. predictions, labels: (N,) int.
  """
  p, y = _pair(predictions, labels, 'matthews_corr', mask)
  p, y = _class_ids(p, 'predictions', 'matthews_corr'), _class_ids(y, 'labels', 'matthews_corr')
  classes, inverse = np.unique(np.concatenate([y, p]), return_inverse=True)
  k, n = classes.size, y.size
  confusion = np.zeros((k, k), np.float64)  # (label class, predicted class)
  np.add.at(confusion, (inverse[:n], inverse[n:]), 1.0)
  t, q = confusion.sum(axis=1), confusion.sum(axis=0)
  c, s = np.trace(confusion), float(n)
  denominator = math.sqrt((s * s - q @ q) * (s * s - t @ t))
  return 0.0 if denominator == 0 else float((c * s - t @ q) / denominator)


def _float_pair(predictions: ArrayLike, labels: ArrayLike, name: str,
                mask: ArrayLike | None) -> tuple[np.ndarray, np.ndarray]:
  p, y = _pair(predictions, labels, name, mask)
  if p.size < 2:
    raise ValueError(f'{name}: a correlation needs at least 2 examples, got {p.size}')
  return p.astype(np.float64), y.astype(np.float64)


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
  """Pearson's r of two float64 vectors, centred and normalised first for accuracy (as scipy does)."""
  if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
    return math.nan  # a diverged model's nan predictions: report nan, as scipy does, rather than fail eval
  xm, ym = x - x.mean(), y - y.mean()
  nx, ny = np.linalg.norm(xm), np.linalg.norm(ym)
  if nx == 0 or ny == 0:
    return math.nan  # a constant input: r is undefined (scipy warns and returns nan)
  return float(np.clip(np.dot(xm / nx, ym / ny), -1.0, 1.0))


def pearson(predictions: ArrayLike, labels: ArrayLike, mask: ArrayLike | None = None) -> float:
  """Pearson correlation of (N,) float predictions and labels; nan when either is constant."""
  return _correlation(*_float_pair(predictions, labels, 'pearson', mask))


def _average_ranks(x: np.ndarray) -> np.ndarray:
  """Ranks 1..N of `x`, ties sharing the mean of their ranks (scipy.stats.rankdata(method='average'))."""
  order = np.argsort(x, kind='stable')
  sorted_x = x[order]
  # Start of each run of equal values in sorted order; a run covering positions [a, b) gets rank (a+b+1)/2.
  starts = np.flatnonzero(np.concatenate([[True], sorted_x[1:] != sorted_x[:-1]]))
  ends = np.concatenate([starts[1:], [x.size]])
  run_rank = (starts + ends + 1) / 2.0
  ranks = np.empty(x.size, np.float64)
  ranks[order] = np.repeat(run_rank, ends - starts)
  return ranks


def spearman(predictions: ArrayLike, labels: ArrayLike, mask: ArrayLike | None = None) -> float:
  """Spearman rank correlation (Pearson of average ranks) of (N,) floats; nan when either is constant."""
  p, y = _float_pair(predictions, labels, 'spearman', mask)
  if not (np.all(np.isfinite(p)) and np.all(np.isfinite(y))):
    return math.nan  # ranking would silently place nan last; report it instead
  return _correlation(_average_ranks(p), _average_ranks(y))


_ARRAY_METRICS: Mapping[Metric, Callable[..., float]] = {
    Metric.ACCURACY: accuracy, Metric.F1: f1, Metric.MATTHEWS: matthews_corr,
    Metric.PEARSON: pearson, Metric.SPEARMAN: spearman,
}


def compute(metrics: Iterable[Metric | str], predictions: ArrayLike, labels: ArrayLike,
            mask: ArrayLike | None = None) -> dict[str, float]:
  """The named classification/regression metrics of one eval split: {metric value: score}.

  Args:
    metrics: e.g. (Metric.ACCURACY, Metric.F1) or ('accuracy', 'f1') from config.eval.metrics.
    predictions, labels: (N,) class ids, or floats for pearson/spearman.
    mask: optional (N,) 0/1, 0 for the padding examples of the last batch.
  """
  out = {}
  for name in metrics:
    try:
      metric = Metric(name)
    except ValueError:
      raise ValueError(f'compute: unknown metric {name!r}; choose from {[m.value for m in _ARRAY_METRICS]}') \
          from None
    if metric not in _ARRAY_METRICS:
      where = ('perplexity()/bits_per_byte() from summed losses' if metric in (Metric.PERPLEXITY,
                                                                              Metric.BITS_PER_BYTE)
               else "the sentence-order sums of eval.py's token scoring" if metric is Metric.SOP_ACCURACY
               else 'evaluation.text_metrics on decoded strings')
      raise ValueError(f'compute: {metric.value!r} is not computed from predicted labels; use {where}')
    out[metric.value] = _ARRAY_METRICS[metric](predictions, labels, mask)
  return out


def _check_count(value: float, field: str, name: str) -> None:
  if not value > 0:
    raise ValueError(f'{name}: {field} must be > 0, got {value} (nothing was scored?)')


def perplexity(loss_sum_nats: float, num_tokens: float) -> float:
  """exp(loss_sum_nats / num_tokens), the exponent capped at 700 so a diverged run stays finite."""
  _check_count(num_tokens, 'num_tokens', 'perplexity')
  mean = float(loss_sum_nats) / float(num_tokens)
  return math.exp(min(mean, _MAX_LOG_PERPLEXITY)) if not math.isnan(mean) else math.nan


def bits_per_byte(loss_sum_nats: float, num_bytes: float) -> float:
  """Summed loss in nats over the UTF-8 byte count of the scored text, in bits: / (num_bytes * ln 2)."""
  _check_count(num_bytes, 'num_bytes', 'bits_per_byte')
  return float(loss_sum_nats) / (float(num_bytes) * math.log(2.0))
