"""evaluation/: each metric against scikit-learn / scipy on random and degenerate inputs, the language-model
closed forms, BLEU/ROUGE on hand-checked cases, GLUE submission files (names, header, exact rows,
round trips, atomic writes) and the metrics JSON."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from evaluation import metrics, submission, text_metrics
from evaluation.metrics import Metric

SEEDS = (0, 1, 2)


def _classes(seed: int, n: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
  """(predictions, labels) int32, predictions right about 60% of the time so every metric is non-trivial."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, n).astype(np.int32)
  noise = rng.integers(0, num_classes, n).astype(np.int32)
  return np.where(rng.random(n) < 0.6, labels, noise), labels


# --- classification ------------------------------------------------------------------------------------


@pytest.mark.parametrize('seed', SEEDS)
@pytest.mark.parametrize('num_classes', [2, 3, 5])
@pytest.mark.parametrize('n', [7, 200])
def test_accuracy_and_mcc_match_sklearn(seed: int, num_classes: int, n: int) -> None:
  predictions, labels = _classes(seed, n, num_classes)
  assert metrics.accuracy(predictions, labels) == pytest.approx(skm.accuracy_score(labels, predictions),
                                                                abs=1e-12)
  assert metrics.matthews_corr(predictions, labels) == pytest.approx(
      skm.matthews_corrcoef(labels, predictions), abs=1e-12)


@pytest.mark.parametrize('seed', SEEDS)
@pytest.mark.parametrize('n', [5, 200])
def test_f1_matches_sklearn(seed: int, n: int) -> None:
  predictions, labels = _classes(seed, n, 2)
  assert metrics.f1(predictions, labels) == pytest.approx(skm.f1_score(labels, predictions), abs=1e-12)


@pytest.mark.parametrize('predictions, labels', [
    ([1, 1, 1, 1], [0, 1, 0, 1]),  # constant predictions
    ([0, 1, 0, 1], [1, 1, 1, 1]),  # constant labels
    ([2, 2, 2], [2, 2, 2]),        # a single class everywhere
    ([0, 0, 0], [0, 0, 0]),        # no positive at all: F1 ill-defined
    ([0, 0, 1], [0, 0, 0]),        # positives predicted, none labelled
    ([3, 7, 7, 3], [7, 7, 3, 9]),  # sparse class ids, a predicted class never labelled and vice versa
])
def test_degenerate_cases_match_sklearn(predictions: list[int], labels: list[int]) -> None:
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # sklearn warns on ill-defined F1 / single-class MCC; we only compare
    expected_mcc = skm.matthews_corrcoef(labels, predictions)
    expected_f1 = skm.f1_score(labels, predictions) if set(predictions + labels) <= {0, 1} else None
  assert metrics.matthews_corr(predictions, labels) == pytest.approx(expected_mcc, abs=1e-12)
  if expected_f1 is not None:
    assert metrics.f1(predictions, labels) == pytest.approx(expected_f1, abs=1e-12)
  if len(set(predictions)) == 1 or len(set(labels)) == 1:
    assert metrics.matthews_corr(predictions, labels) == 0.0


def test_exact_small_values() -> None:
  # TP=2, FP=1, FN=1, TN=1: F1 = 4/6, MCC = (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6.
  predictions, labels = [1, 1, 1, 0, 0], [1, 1, 0, 1, 0]
  assert metrics.accuracy(predictions, labels) == pytest.approx(3 / 5)
  assert metrics.f1(predictions, labels) == pytest.approx(4 / 6)
  assert metrics.matthews_corr(predictions, labels) == pytest.approx(1 / 6)
  assert metrics.matthews_corr(labels, labels) == 1.0
  assert metrics.matthews_corr([1 - x for x in labels], labels) == pytest.approx(-1.0)


# --- regression --------------------------------------------------------------------------------------


@pytest.mark.parametrize('seed', SEEDS)
@pytest.mark.parametrize('ties', [False, True])
@pytest.mark.parametrize('n', [3, 100])
def test_pearson_and_spearman_match_scipy(seed: int, ties: bool, n: int) -> None:
  rng = np.random.default_rng(seed)
  labels = rng.uniform(0, 5, n)
  predictions = labels + rng.normal(0, 1.5, n)
  if ties:  # STS-B labels come in steps of 0.2 and many predictions coincide once rounded
    labels, predictions = np.round(labels), np.round(predictions).astype(np.float32)
  if np.ptp(labels) == 0 or np.ptp(predictions) == 0:
    pytest.skip('constant draw; covered by test_constant_correlations')
  assert metrics.pearson(predictions, labels) == pytest.approx(stats.pearsonr(predictions, labels).statistic,
                                                               abs=1e-12)
  assert metrics.spearman(predictions, labels) == pytest.approx(
      stats.spearmanr(predictions, labels).statistic, abs=1e-12)


def test_spearman_average_ranks() -> None:
  # Ranks of [10, 20, 20, 30] are [1, 2.5, 2.5, 4]: a monotone map of the data gives rho = 1 exactly.
  assert metrics.spearman([10, 20, 20, 30], [1.0, 2.5, 2.5, 4.0]) == pytest.approx(1.0)
  assert metrics.spearman([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)


@pytest.mark.parametrize('fn', [metrics.pearson, metrics.spearman])
def test_constant_correlations(fn) -> None:
  # Undefined: scipy warns and gives nan; so do we (without the warning).
  assert math.isnan(fn([1.0, 1.0, 1.0], [0.5, 1.5, 2.5]))
  assert math.isnan(fn([0.5, 1.5, 2.5], [2.0, 2.0, 2.0]))
  assert math.isnan(fn([0.5, math.nan, 2.5], [1.0, 2.0, 3.0]))


# --- masks, compute, errors --------------------------------------------------------------------------


@pytest.mark.parametrize('metric', [Metric.ACCURACY, Metric.F1, Metric.MATTHEWS, Metric.PEARSON,
                                    Metric.SPEARMAN])
def test_mask_drops_padding(metric: Metric) -> None:
  predictions, labels = _classes(3, 40, 2)
  mask = np.random.default_rng(4).random(40) < 0.7
  got = metrics.compute([metric], predictions, labels, mask=mask.astype(np.float32))
  assert got == {metric.value: pytest.approx(metrics.compute([metric], predictions[mask], labels[mask])[metric])}


def test_compute_names_and_jax_like_inputs() -> None:
  predictions, labels = _classes(0, 50, 2)
  got = metrics.compute(['accuracy', Metric.F1, 'matthews_corr'], predictions.tolist(), labels)
  assert list(got) == ['accuracy', 'f1', 'matthews_corr']
  assert got['f1'] == pytest.approx(skm.f1_score(labels, predictions))


@pytest.mark.parametrize('call, message', [
    (lambda: metrics.accuracy([0, 1], [0, 1, 1]), r'shape \(2,\) but labels \(3,\)'),
    (lambda: metrics.accuracy(np.zeros((4, 3), np.int32), np.zeros(4, np.int32)), 'logits'),
    (lambda: metrics.pearson(np.zeros((4, 1)), np.zeros(4)), 'squeeze'),
    (lambda: metrics.accuracy([], []), 'no examples'),
    (lambda: metrics.accuracy([1, 0], [1, 0], mask=[0, 0]), 'no examples'),
    (lambda: metrics.accuracy([1, 0], [1, 0], mask=[0.5, 1]), 'mask must hold only 0/1'),
    (lambda: metrics.accuracy([1, 0], [1, 0], mask=[1, 1, 1]), 'mask has shape'),
    (lambda: metrics.accuracy([0.2, 0.9], [0, 1]), 'integer class ids'),
    (lambda: metrics.f1([0, 2], [0, 1]), r'in \{0, 1\}'),
    (lambda: metrics.pearson([1.0], [2.0]), 'at least 2'),
    (lambda: metrics.compute(['acc'], [0], [0]), "unknown metric 'acc'"),
    (lambda: metrics.compute([Metric.PERPLEXITY], [0], [0]), r'perplexity\(\)'),
    (lambda: metrics.compute(['bleu'], [0], [0]), 'text_metrics'),
    (lambda: metrics.perplexity(3.0, 0), 'num_tokens must be > 0'),
    (lambda: metrics.bits_per_byte(3.0, 0), 'num_bytes must be > 0'),
])
def test_errors_name_the_problem(call, message: str) -> None:
  with pytest.raises(ValueError, match=message):
    call()


# --- language models ---------------------------------------------------------------------------------


def test_perplexity_and_bits_per_byte_closed_forms() -> None:
  # A uniform model over V tokens loses ln V per token: perplexity V.
  assert metrics.perplexity(1000 * math.log(50257), 1000) == pytest.approx(50257)
  assert metrics.perplexity(0.0, 10) == 1.0
  # 8 bits per byte is a uniform byte model: loss ln(256) nats per byte.
  assert metrics.bits_per_byte(300 * math.log(256), 300) == pytest.approx(8.0)
  assert metrics.bits_per_byte(2 * 120 * math.log(2), 120) == pytest.approx(2.0)
  # A diverged run: capped at exp(700) rather than an OverflowError; nan stays nan.
  assert metrics.perplexity(1e6, 1) == pytest.approx(math.exp(700))
  assert math.isfinite(metrics.perplexity(math.inf, 1))
  assert math.isnan(metrics.perplexity(math.nan, 1))


# --- BLEU and ROUGE ----------------------------------------------------------------------------------


def test_bleu_hand_checked() -> None:
  # n-gram precisions 5/6, 3/5, 2/4, 1/3 at equal lengths (no brevity penalty): (1/12) ** (1/4).
  assert text_metrics.bleu(['the cat sat on the mat'], ['the cat sat on a mat']) == pytest.approx(
      100 * (1 / 12) ** 0.25, abs=1e-9)
  # Corpus level: counts summed over sentences (7/8, 4/6, 2/4, 1/3), brevity penalty exp(1 - 9/8).
  expected = 100 * math.exp(1 - 9 / 8) * (7 / 8 * 4 / 6 * 2 / 4 * 1 / 3) ** 0.25
  assert text_metrics.bleu(['the cat sat on the mat', 'a dog'],
                           ['the cat sat on a mat', 'a dog barks']) == pytest.approx(expected, abs=1e-9)
  assert text_metrics.bleu(['same words here .'], ['same words here .']) == pytest.approx(100.0)
  assert text_metrics.bleu(['alpha beta gamma delta'], ['one two three four']) == 0.0


def test_bleu_multiple_references() -> None:
  # Two references each: sacrebleu clips each n-gram to its largest count over the references.
  one = text_metrics.bleu(['the cat sat on the mat'], [['the cat sat on a mat', 'on the mat the cat sat']])
  assert one > text_metrics.bleu(['the cat sat on the mat'], ['the cat sat on a mat'])
  with pytest.raises(ValueError, match='same length'):
    text_metrics.bleu(['a', 'b'], [['a', 'x'], ['b']])


def test_chrf_hand_checked() -> None:
  """chrF2: character n-gram precision P and recall R (spaces removed) averaged over the orders 1..6 that both
  sides have, then (1 + 4) P R / (4 P + R)."""
  assert text_metrics.chrf(['ab'], ['ab']) == pytest.approx(100.0)
  assert text_metrics.chrf(['a b'], ['ab']) == pytest.approx(100.0)  # whitespace is not a character here
  # 1-grams: 2 of 3 match both ways; 2-grams 1 of 2; 3-grams 0 of 1: P = R = (2/3 + 1/2 + 0) / 3.
  assert text_metrics.chrf(['abc'], ['abd']) == pytest.approx(100 * (2 / 3 + 1 / 2) / 3)
  # P = 1 (orders 1, 2), R = (2/3 + 1/2) / 2 = 7/12: beta 2 weighs recall: 5 * 7/12 / (4 + 7/12) = 7/11.
  assert text_metrics.chrf(['ab'], ['abc']) == pytest.approx(100 * 7 / 11)
  # Corpus level: counts summed over sentences: 1-grams 2/3 (a, b of a, b, x), 2-grams 1/1.
  assert text_metrics.chrf(['ab', 'x'], ['ab', 'y']) == pytest.approx(100 * (2 / 3 + 1) / 2)
  assert text_metrics.chrf(['xyz'], ['abc']) == 0.0
  with pytest.raises(ValueError, match='chrf: 2 predictions but 1 references'):
    text_metrics.chrf(['a', 'b'], ['a'])


def test_rouge_identical_disjoint_and_known() -> None:
  assert text_metrics.rouge(['the cat sat on the mat'], ['the cat sat on the mat']) == {
      'rouge1': 100.0, 'rouge2': 100.0, 'rougeL': 100.0}
  assert text_metrics.rouge(['alpha beta gamma'], ['one two three']) == {
      'rouge1': 0.0, 'rouge2': 0.0, 'rougeL': 0.0}
  # Prediction 3 tokens, all in the 6-token reference: P = 1, R = 1/2, F = 2/3; bigrams P = 1, R = 2/5,
  # F = 4/7; the LCS is the 3 tokens.
  got = text_metrics.rouge(['the cat sat'], ['the cat sat on the mat'])
  assert got == pytest.approx({'rouge1': 200 / 3, 'rouge2': 400 / 7, 'rougeL': 200 / 3})
  # Porter stemming (cats -> cat, running -> run), then the mean over examples: (100 + 0) / 2.
  assert text_metrics.rouge(['Cats running', 'x y'], ['cat run', 'z w'], rouge_types=['rouge1']) == {
      'rouge1': 50.0}


@pytest.mark.parametrize('call, message', [
    (lambda: text_metrics.bleu([], []), 'no examples'),
    (lambda: text_metrics.bleu(['a', 'b'], ['a']), '2 predictions but 1 references'),
    (lambda: text_metrics.bleu('a b', 'a b'), 'not a single string'),
    (lambda: text_metrics.rouge([[1, 2]], ['a']), 'must be a str'),
    (lambda: text_metrics.rouge(['a'], [['a', 'b']]), 'single str'),
    (lambda: text_metrics.rouge(['a'], ['a'], rouge_types=['rougeLsum']), "unknown rouge type 'rougeLsum'"),
])
def test_text_metric_errors(call, message: str) -> None:
  with pytest.raises(ValueError, match=message):
    call()


def test_package_import_is_cheap() -> None:
  # eval.py imports evaluation on every run; the heavy packages load only when a metric needs them.
  code = ('import sys, evaluation; '
          "print(sorted(m for m in ('sacrebleu', 'rouge_score', 'nltk', 'sklearn', 'scipy', 'jax') "
          'if m in sys.modules))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert out.stdout.strip() == '[]'


# --- GLUE submission files ---------------------------------------------------------------------------

# The names the leaderboard expects, spelled out again here so a typo in the table fails a test.
EXPECTED_FILES = {
    'cola': 'CoLA.tsv', 'sst2': 'SST-2.tsv', 'mrpc': 'MRPC.tsv', 'stsb': 'STS-B.tsv', 'qqp': 'QQP.tsv',
    'mnli_matched': 'MNLI-m.tsv', 'mnli_mismatched': 'MNLI-mm.tsv', 'qnli': 'QNLI.tsv', 'rte': 'RTE.tsv',
    'wnli': 'WNLI.tsv', 'ax': 'AX.tsv',
}


@pytest.mark.parametrize('task', sorted(EXPECTED_FILES))
def test_submission_round_trip(task: str, tmp_path) -> None:
  spec = submission.submission_spec(task)
  assert submission.submission_filename(task) == spec.filename == EXPECTED_FILES[task]
  rng = np.random.default_rng(len(task))
  path = tmp_path / 'glue' / spec.filename  # the directory does not exist yet
  if spec.regression:
    predictions = rng.uniform(-0.5, 5.5, 50).astype(np.float32)
    expected = np.round(np.clip(predictions.astype(np.float64), 0, 5), 3)
  else:
    predictions = rng.integers(0, len(spec.label_names), 50)
    expected = predictions
  submission.write_predictions(path, predictions, spec.label_names, spec.regression)
  lines = path.read_text().split('\n')
  assert lines[0] == 'index\tprediction' and lines[-1] == '' and len(lines) == 52
  assert [line.split('\t')[0] for line in lines[1:-1]] == [str(i) for i in range(50)]
  got = submission.read_predictions(path, spec.label_names, spec.regression)
  np.testing.assert_array_equal(got, expected)
  assert os.listdir(path.parent) == [spec.filename]  # no temporary file left behind


@pytest.mark.parametrize('task, predictions, rows', [
    ('mnli_matched', [0, 2, 1], ['entailment', 'contradiction', 'neutral']),
    ('ax', [1], ['neutral']),
    ('qnli', [1, 0], ['not_entailment', 'entailment']),
    ('rte', np.array([0, 1], np.int32), ['entailment', 'not_entailment']),
    ('cola', np.array([True, False]), ['1', '0']),
    ('wnli', [0, 1], ['0', '1']),
    ('stsb', [5.2, -0.1, 2.34567, 3.0], ['5.000', '0.000', '2.346', '3.000']),
])
def test_submission_rows_exact(task: str, predictions, rows: list[str], tmp_path) -> None:
  spec = submission.submission_spec(task)
  path = tmp_path / spec.filename
  submission.write_predictions(path, predictions, spec.label_names, spec.regression)
  assert path.read_bytes().decode() == ''.join(
      ['index\tprediction\n'] + [f'{i}\t{row}\n' for i, row in enumerate(rows)])


def test_submission_overwrite_is_atomic(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
  path = tmp_path / 'CoLA.tsv'
  submission.write_predictions(path, [1, 0])
  submission.write_predictions(path, [0, 0, 1])  # a rewrite replaces the file whole
  np.testing.assert_array_equal(submission.read_predictions(path), [0, 0, 1])

  def failing_replace(src: str, dst: str) -> None:
    raise OSError('disk full')

  monkeypatch.setattr(os, 'replace', failing_replace)
  with pytest.raises(OSError, match='disk full'):
    submission.write_predictions(path, [1, 1, 1, 1])
  np.testing.assert_array_equal(submission.read_predictions(path), [0, 0, 1])  # the old file, untouched
  assert os.listdir(tmp_path) == ['CoLA.tsv']


def test_submission_errors(tmp_path) -> None:
  with pytest.raises(ValueError, match="unknown GLUE task 'sst-2'"):
    submission.submission_filename('sst-2')
  with pytest.raises(ValueError, match="'mnli_matched' and 'mnli_mismatched'"):
    submission.submission_spec('mnli')
  path = tmp_path / 'x.tsv'
  for kwargs, message in [
      (dict(predictions=[0, 3], label_names=('entailment', 'neutral', 'contradiction')), r'outside \[0, 3\)'),
      (dict(predictions=[-1, 0]), r'class id -1 at index 0'),
      (dict(predictions=[1, 2], label_names=submission.submission_spec('cola').label_names), r'index 1'),
      (dict(predictions=[0.3, 0.7]), 'integer ids'),
      (dict(predictions=np.zeros((2, 3), np.int32)), r'must be \(N,\)'),
      (dict(predictions=[]), 'no predictions'),
      (dict(predictions=[1.0, math.nan], regression=True), 'non-finite'),
      (dict(predictions=[1.0], regression=True, label_names=('a',)), 'label_names is for classification'),
  ]:
    with pytest.raises(ValueError, match=message):
      submission.write_predictions(path, **kwargs)
  assert not path.exists()

  path.write_text('idx\tprediction\n0\t1\n')
  with pytest.raises(ValueError, match='header'):
    submission.read_predictions(path)
  path.write_text('index\tprediction\n0\t1\n2\t0\n')
  with pytest.raises(ValueError, match='line 3'):
    submission.read_predictions(path)
  path.write_text('index\tprediction\n0\tentailment\n')
  with pytest.raises(ValueError, match="'entailment' is not an integer class id"):
    submission.read_predictions(path)
  with pytest.raises(ValueError, match='is not one of'):
    submission.read_predictions(path, label_names=('not_entailment', 'maybe'))


def test_metrics_json(tmp_path) -> None:
  path = tmp_path / 'eval' / 'metrics.json'
  submission.write_metrics_json(path, {'pearson': np.float32(0.5), 'accuracy': 0.75, 'count': np.int64(3),
                                       'spearman': math.nan, 'nested': {'b': 1, 'a': [np.float64(2.0)]}})
  text = path.read_text()
  assert text.endswith('}\n') and text.index('"accuracy"') < text.index('"count"') < text.index('"pearson"')
  assert json.loads(text) == {'accuracy': 0.75, 'count': 3, 'nested': {'a': [2.0], 'b': 1}, 'pearson': 0.5,
                              'spearman': 'NaN'}
  assert os.listdir(path.parent) == ['metrics.json']
