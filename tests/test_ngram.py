"""evaluation/ngram.py: interpolated modified Kneser-Ney against a naive reference written from the formulas."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from evaluation.ngram import FALLBACK_DISCOUNTS, CountKind, KneserNey, add_one_unigram, modified_kn_discounts

V = 6  # toy vocabulary; id 5 never occurs in TOY, so contexts holding it are unseen
TOY = [np.array([0, 1, 2, 0, 1, 3, 0, 1, 2, 4, 2, 0, 1, 2, 0, 3, 3, 1, 2, 0, 1, 4, 0, 0, 1, 2, 2, 3]),
       np.array([1, 2, 0, 1, 2, 3, 4]), np.array([2]), np.array([], np.int64), np.array([4, 0, 1, 2, 0, 1])]
CONTEXTS = [(), (1,), (0, 1), (2, 0, 1), (4, 0, 1, 2), (3, 3, 3, 3), (5,), (5, 1), (5, 0, 1), (1, 5), (0, 1, 2, 5)]


class Reference:
  """Chen & Goodman's interpolated modified KN straight from the formulas: Counters of tuples, loops over the
  vocabulary. Raw counts at the top order, N1+(. g) continuation counts below it."""

  def __init__(self, sequences: list[np.ndarray], order: int, vocab: int):
    self.order, self.vocab = order, vocab
    self.raw = {k: Counter() for k in range(1, order + 1)}
    for seq in sequences:
      seq = [int(t) for t in seq]
      for k in range(1, order + 1):
        for i in range(len(seq) - k + 1):
          self.raw[k][tuple(seq[i:i + k])] += 1
    self.cont = {k: Counter() for k in range(1, order)}
    for k in range(1, order):
      for gram in self.raw[k + 1]:  # each distinct left extension (v, g) adds one to g
        self.cont[k][gram[1:]] += 1

  def counts(self, k: int, top: bool) -> Counter:
    return self.raw[k] if top else self.cont[k]

  @staticmethod
  def discounts(counts: Counter) -> tuple[float, float, float]:
    n = {r: sum(1 for c in counts.values() if c == r) for r in (1, 2, 3, 4)}
    if n[1] + 2 * n[2] == 0:
      return 0.5, 1.0, 1.5
    y = n[1] / (n[1] + 2 * n[2])
    d1 = 1 - 2 * y * n[2] / n[1] if n[1] else 0.0
    d2 = 2 - 3 * y * n[3] / n[2] if n[2] else 0.0
    d3 = 3 - 4 * y * n[4] / n[3] if n[3] else 0.0
    return d1 if d1 > 0 else 0.5, d2 if d2 > 0 else 1.0, d3 if d3 > 0 else 1.5

  def p(self, k: int, h: tuple[int, ...], w: int, top: bool) -> float:
    if k == 0:
      return 1.0 / self.vocab
    counts = self.counts(k, top)
    d1, d2, d3 = self.discounts(counts)

    def discount(c: int) -> float:
      return 0.0 if c == 0 else d1 if c == 1 else d2 if c == 2 else d3

    lower = self.p(k - 1, h[1:], w, top=False)
    total = sum(counts[h + (v,)] for v in range(self.vocab))
    if total == 0:
      return lower
    gamma = sum(discount(counts[h + (v,)]) for v in range(self.vocab))
    c = counts[h + (w,)]
    return (max(c - discount(c), 0.0) + gamma * lower) / total

  def prob(self, context: tuple[int, ...], w: int) -> float:
    m = min(len(context), self.order - 1)  # a shorter context: the model of the order it allows
    return self.p(m + 1, tuple(context[len(context) - m:]), w, top=True)


@pytest.fixture(scope='module', params=[2, 3, 4, 5])
def toy(request: pytest.FixtureRequest) -> tuple[KneserNey, Reference]:
  return KneserNey.fit(TOY, request.param, V), Reference(TOY, request.param, V)


def test_probabilities_sum_to_one_over_the_vocabulary(toy):
  model, _ = toy
  for context in CONTEXTS:  # seen, unseen (id 5), partly seen, shorter and longer than order - 1
    dist = model.distribution(context)
    assert dist.shape == (V,) and np.all(dist > 0), context
    assert abs(dist.sum() - 1.0) < 1e-12, (context, dist.sum())


@pytest.mark.parametrize('corpus', [[], [np.array([], np.int64)], [np.array([3])], [np.array([3, 1]), np.array([2])]],
                         ids=['no_sequences', 'empty_sequence', 'one_token', 'shorter_than_order'])
def test_tiny_corpora_give_proper_distributions(corpus):
  for order in (2, 3, 4, 5):
    model = KneserNey.fit(corpus, order, V)
    for context in [(), (3,), (3, 1), (5, 5, 5, 5)]:
      dist = model.distribution(context)
      assert abs(dist.sum() - 1.0) < 1e-12 and np.all(dist > 0), (order, context)
  assert np.allclose(KneserNey.fit(corpus[:0], 3, V).distribution((1, 2)), 1 / V)  # nothing seen: uniform


def test_matches_the_naive_reference(toy):
  model, ref = toy
  for context in CONTEXTS:
    dist = model.distribution(context)
    expected = [ref.prob(context, w) for w in range(V)]
    np.testing.assert_allclose(dist, expected, rtol=0, atol=1e-12, err_msg=str(context))
  held_out = [np.array([0, 1, 2, 3, 5, 1, 2, 0, 4]), np.array([2, 2]), np.array([1])]
  for seq, log_probs in zip(held_out, model.log_probs(held_out)):  # a sequence start shortens the context
    expected = [math.log(ref.prob(tuple(seq[:i]), int(seq[i]))) for i in range(len(seq))]
    np.testing.assert_allclose(log_probs, expected, rtol=0, atol=1e-12)


def test_discounts_are_chen_and_goodmans_closed_form():
  rng = np.random.default_rng(0)
  corpus = [rng.zipf(1.6, 3000) % 40]  # counts of counts n1..n4 all positive at every order used below
  model = KneserNey.fit(corpus, 3, 40)
  trigrams = Counter(tuple(corpus[0][i:i + 3]) for i in range(len(corpus[0]) - 2))
  bigram_continuations = Counter(g[1:] for g in trigrams)
  for kind, order, counts in [(CountKind.RAW, 3, trigrams), (CountKind.CONTINUATION, 2, bigram_continuations)]:
    n1, n2, n3, n4 = (sum(1 for c in counts.values() if c == r) for r in (1, 2, 3, 4))
    assert min(n1, n2, n3, n4) > 0
    y = n1 / (n1 + 2 * n2)
    expected = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    assert model.discounts(order, kind) == pytest.approx(expected, rel=1e-15, abs=0)
    assert expected[0] == pytest.approx(n1 / (n1 + 2 * n2))


def test_discount_fallbacks():
  assert modified_kn_discounts(np.array([5, 7, 0])) == FALLBACK_DISCOUNTS  # no count 1 or 2: Y undefined
  d1, d2, d3 = modified_kn_discounts(np.array([1, 1, 2, 5]))  # n1=2, n2=1, no count 3 though a count of 5
  assert (d1, d2, d3) == (pytest.approx(0.5), pytest.approx(2.0), FALLBACK_DISCOUNTS[2])


def test_perplexity_of_a_repeated_sequence_approaches_one():
  perplexities = []
  for repeats in (10, 100, 1000):
    stream = np.tile(np.arange(5), repeats)
    model = KneserNey.fit([stream], 3, 8)
    (log_probs,) = model.log_probs([stream])
    perplexities.append(math.exp(-log_probs[2:].mean()))
  assert perplexities[0] > perplexities[1] > perplexities[2] > 1.0
  assert perplexities[2] < 1.002, perplexities


def test_add_one_unigram():
  log_probs = add_one_unigram([np.array([0, 0, 1]), np.array([0])], 4)
  np.testing.assert_allclose(np.exp(log_probs), [4 / 8, 2 / 8, 1 / 8, 1 / 8])


@pytest.mark.parametrize('call, message', [
    (lambda: KneserNey.fit([np.array([0, 6])], 3, 6), 'training sequence 0: token id 6 is outside the vocabulary 0..5'),
    (lambda: KneserNey.fit(TOY, 3, V).log_probs([np.array([-1])]), 'scored sequence 0: token id -1 is outside'),
    (lambda: KneserNey.fit(TOY, 0, V), 'order=0: must be >= 1'),
    (lambda: KneserNey.fit(TOY, 3, V).discounts(3, CountKind.CONTINUATION), 'continuation counts for orders 1..2'),
])
def test_errors_name_the_value(call, message):
  with pytest.raises(ValueError, match=message.replace('.', r'\.')):
    call()


def test_every_context_of_a_small_vocabulary_sums_to_one():
  model = KneserNey.fit([np.array([0, 1, 0, 0, 2, 1, 0, 2, 2])], 3, 3)
  for context in itertools.product(range(3), repeat=2):
    assert abs(model.distribution(context).sum() - 1.0) < 1e-12, context


@pytest.fixture(scope='module')
def script():
  """bench/lm_baselines.py as a module (bench/ is no package)."""
  spec = importlib.util.spec_from_file_location('lm_baselines', Path(__file__).resolve().parents[1] / 'bench' /
                                                'lm_baselines.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_script_flags_and_the_gpt_figures_beside(script, tmp_path: Path):
  assert script.parse_orders('5,3,4,3') == (3, 4, 5)
  for bad in ('1,3', 'three', ''):
    with pytest.raises(SystemExit, match='--orders=.*: give comma-separated n-gram orders of at least 2'):
      script.parse_orders(bad)
  with pytest.raises(SystemExit, match=r'no tokenizer/spm_unigram_identity_v8000_x100\.model, the tokenizer of a '
                     'gpt_tiny run'):
    script.load_tasks(tmp_path, 'validation')  # and nothing is trained into someone's workdir
  assert not (tmp_path / 'tokenizer').exists()
  for step, loss in ((300, 5.4), (100, 6.0)):
    (tmp_path / 'eval' / f'step_{step}').mkdir(parents=True)
    figures = {'validation': {'loss': loss, 'perplexity': math.exp(loss), 'bits_per_byte': 1.5, 'tokens': 512.0}}
    (tmp_path / 'eval' / f'step_{step}' / 'metrics.json').write_text(json.dumps(figures))
  rows = script.gpt_rows(tmp_path, 'validation')
  assert [r[0].split(' (')[0] for r in rows] == ['gpt_tiny step 100', 'gpt_tiny step 300']
  assert rows[1][1:4] == (512.0, pytest.approx(math.exp(5.4)), 1.5)


def test_script_draws_every_row(script, tmp_path: Path):
  import matplotlib.image  # pylint: disable=import-outside-toplevel
  rows = [('5-gram, interpolated modified KN', 100.0, 84.9, 1.30, '1.9'),
          ('gpt_tiny step 400 (eval.py, runs/x)', 100.0, 76.4, 1.27, '')]
  script.plot(rows, tmp_path / 'figure.png')
  assert matplotlib.image.imread(tmp_path / 'figure.png').shape[:2] == (220, 1000)
