"""A classical baseline for causal LMs: an interpolated modified Kneser-Ney n-gram model over token ids (numpy).

Chen & Goodman (1998), "An empirical study of smoothing techniques for language modeling", section 3 / 4.1.5:
for a context h of the order-k model and a token w,

  p_k(w | h) = (max(c(hw) - D(c(hw)), 0) + gamma(h) * p_{k-1}(w | h')) / c(h.)
  gamma(h)   = D1 N1(h.) + D2 N2(h.) + D3+ N3+(h.)         (the mass taken from the counts)
  p_0(w)     = 1 / V                                       (uniform over the whole vocabulary)

with h' the context without its first token, c(h.) = sum_w c(hw), N_r(h.) the number of w with c(hw) = r, and
p_k = p_{k-1} where c(h.) = 0 (an unseen context). The highest order uses the raw counts; every lower order
uses continuation counts c(hw) = N1+(. hw), the number of distinct tokens seen before hw. Each order (and each
kind of count) has its own three discounts from its counts of counts n_1..n_4 (`modified_kn_discounts`).

Context and boundaries. N-grams never cross the boundary of a training sequence. A token is predicted from the
at most n-1 tokens before it in its own sequence; where fewer exist (the start of a sequence), it is scored by
the KN model of the order its context allows (order m+1 for m tokens of context: raw counts at that order),
which is what an order-(m+1) model trained on the same data gives.

Implementation: the k-grams seen in training are numbered in sorted order; k-gram keys are (index of its
(k-1)-gram context) * V + token in int64, so any order fits and every lookup is one `np.searchsorted`.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence

import numpy as np

# D_k where its closed form has a zero denominator (no n-gram of count k, or n_1 + 2 n_2 = 0) or is not
# positive: the middle of its valid range (0, k] (D_k <= k keeps every count non-negative).
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)


class CountKind(enum.Enum):
  RAW = 'raw'  # c(hw): the highest order, and the order a short context (a sequence start) allows
  CONTINUATION = 'continuation'  # N1+(. hw): the lower orders under a higher one


def modified_kn_discounts(counts: np.ndarray) -> tuple[float, float, float]:
  """(D1, D2, D3+) of Chen & Goodman from the counts of one order: Y = n1 / (n1 + 2 n2), D1 = 1 - 2Y n2/n1,
  D2 = 2 - 3Y n3/n2, D3+ = 3 - 4Y n4/n3, with n_r the number of n-grams of count exactly r (zero counts are
  ignored). Where a closed form is undefined or not positive: FALLBACK_DISCOUNTS."""
  counts = np.asarray(counts)
  n = [int(np.count_nonzero(counts == r)) for r in range(1, 5)]
  if n[0] + 2 * n[1] == 0:
    return FALLBACK_DISCOUNTS
  y = n[0] / (n[0] + 2 * n[1])
  out = []
  for k in (1, 2, 3):
    d = k - (k + 1) * y * n[k] / n[k - 1] if n[k - 1] else 0.0
    out.append(d if d > 0 else FALLBACK_DISCOUNTS[k - 1])
  return out[0], out[1], out[2]


@dataclasses.dataclass(frozen=True)
class _Level:
  """One order with one kind of count. Over the k-grams seen (the order's keys): the discounted counts;
  over the contexts (the (k-1)-grams seen, one empty context for k = 1): c(h.) and gamma(h)."""

  discounts: tuple[float, float, float]
  discounted: np.ndarray  # (G,) max(c - D(c), 0)
  total: np.ndarray  # (C,) c(h.)
  gamma: np.ndarray  # (C,) D1 N1(h.) + D2 N2(h.) + D3+ N3+(h.)

  @classmethod
  def of(cls, counts: np.ndarray, contexts: np.ndarray, num_contexts: int) -> _Level:
    d1, d2, d3 = discounts = modified_kn_discounts(counts)
    taken = np.select([counts >= 3, counts == 2, counts == 1], [d3, d2, d1], 0.0)
    return cls(discounts, counts - taken, np.bincount(contexts, weights=counts, minlength=num_contexts),
               np.bincount(contexts, weights=taken, minlength=num_contexts))

  def apply(self, lower: np.ndarray, context: np.ndarray, gram: np.ndarray) -> np.ndarray:
    """p_k at each position from p_{k-1} (`lower`), the context's index and the k-gram's (-1: not seen)."""
    out = lower.copy()
    where = np.flatnonzero(context >= 0)
    total = self.total[context[where]]
    where, total = where[total > 0], total[total > 0]  # elsewhere the context was never seen: p_k = p_{k-1}
    count = np.zeros(len(where))
    seen = gram[where] >= 0
    count[seen] = self.discounted[gram[where][seen]]
    out[where] = (count + self.gamma[context[where]] * lower[where]) / total
    return out


@dataclasses.dataclass(frozen=True)
class KneserNey:
  """An interpolated modified Kneser-Ney model of `order` over ids 0..vocab_size-1 (`KneserNey.fit`)."""

  order: int
  vocab_size: int
  keys: tuple[np.ndarray, ...]  # per order k = 1..n: (G_k,) sorted int64 keys of the k-grams seen
  raw: tuple[_Level, ...]  # per order k = 1..n
  continuation: tuple[_Level, ...]  # per order k = 1..n-1

  @classmethod
  def fit(cls, sequences: Sequence[np.ndarray], order: int, vocab_size: int) -> KneserNey:
    """Counts every k-gram (k <= order) inside each sequence of token ids; no n-gram spans two sequences."""
    if order < 1:
      raise ValueError(f'KneserNey order={order}: must be >= 1 (1 = unigram, 3 = trigram)')
    if vocab_size < 1:
      raise ValueError(f'KneserNey vocab_size={vocab_size}: must be >= 1')
    tokens, positions = _flatten(sequences, vocab_size, 'training sequence')
    keys, raw_counts, cont_counts = [], [], []
    index = np.zeros(len(tokens), np.int64)  # of the (k-1)-gram ending at each position (-1: none)
    for k in range(1, order + 1):
      _check_key_range(len(keys[-1]) if keys else 1, vocab_size)
      valid = np.flatnonzero(positions >= k - 1)
      context = index[valid - 1] if k > 1 else np.zeros(len(valid), np.int64)
      uniq, first, inverse, counts = np.unique(context * vocab_size + tokens[valid], return_index=True,
                                               return_inverse=True, return_counts=True)
      if k > 1:  # the (k-1)-gram ending where each distinct k-gram ends: one more left extension of it
        cont_counts.append(np.bincount(index[valid[first]], minlength=len(keys[-1])).astype(np.float64))
      index = np.full(len(tokens), -1, np.int64)
      index[valid] = inverse.reshape(-1)
      keys.append(uniq.astype(np.int64))
      raw_counts.append(counts.astype(np.float64))
    contexts = [(u // vocab_size, len(keys[k - 1]) if k else 1) for k, u in enumerate(keys)]
    raw = tuple(_Level.of(c, *contexts[k]) for k, c in enumerate(raw_counts))
    continuation = tuple(_Level.of(c, *contexts[k]) for k, c in enumerate(cont_counts))
    return cls(order, vocab_size, tuple(keys), raw, continuation)

  def discounts(self, order: int, kind: CountKind) -> tuple[float, float, float]:
    """(D1, D2, D3+) of the order-`order` counts of `kind` (continuation counts exist below `self.order`)."""
    levels = self.raw if kind is CountKind.RAW else self.continuation
    if not 1 <= order <= len(levels):
      raise ValueError(f'order={order}: this order-{self.order} model has {kind.value} counts for orders '
                       f'1..{len(levels)}')
    return levels[order - 1].discounts

  def log_probs(self, sequences: Sequence[np.ndarray]) -> list[np.ndarray]:
    """ln p(token | the at most order-1 tokens before it in its sequence), for every token of every sequence:
    a list of float64 arrays shaped like the sequences (the first token of each: its context-free p)."""
    tokens, positions = _flatten(sequences, self.vocab_size, 'scored sequence')
    top = np.minimum(positions + 1, self.order)  # the order each position's context allows
    p = np.full(len(tokens), 1.0 / self.vocab_size)
    index = np.zeros(len(tokens), np.int64)
    for k in range(1, self.order + 1):
      context = np.full(len(tokens), -1, np.int64)
      if k == 1:
        context[:] = 0
      else:
        context[1:] = np.where(positions[1:] >= k - 1, index[:-1], -1)
      gram = _lookup(self.keys[k - 1], context, tokens, self.vocab_size)
      as_top = self.raw[k - 1].apply(p, context, gram)
      as_lower = self.continuation[k - 1].apply(p, context, gram) if k < self.order else as_top
      p = np.select([top == k, top > k], [as_top, as_lower], p)
      index = gram
    out, start = [], 0
    for sequence in sequences:
      out.append(np.log(p[start:start + np.size(sequence)]).reshape(np.shape(sequence)))
      start += np.size(sequence)
    return out

  def distribution(self, context: Sequence[int]) -> np.ndarray:
    """(V,) p(w | context) for every w, from the last order-1 tokens of `context`."""
    context = list(context)[max(0, len(context) - (self.order - 1)):]
    rows = np.concatenate([np.tile(np.asarray(context, np.int64), (self.vocab_size, 1)),
                           np.arange(self.vocab_size)[:, None]], axis=1)
    return np.exp(np.stack([lp[-1] for lp in self.log_probs(list(rows))]))


def add_one_unigram(sequences: Sequence[np.ndarray], vocab_size: int) -> np.ndarray:
  """(V,) ln p(w) = ln (c(w) + 1) / (N + V): Laplace's add-one unigram, the simplest reference."""
  tokens, _ = _flatten(sequences, vocab_size, 'training sequence')
  counts = np.bincount(tokens, minlength=vocab_size).astype(np.float64)
  return np.log((counts + 1.0) / (len(tokens) + vocab_size))


def _flatten(sequences: Sequence[np.ndarray], vocab_size: int, what: str) -> tuple[np.ndarray, np.ndarray]:
  """All tokens in one int64 array, and each one's position in its own sequence."""
  arrays = [np.asarray(s).reshape(-1) for s in sequences]
  for i, a in enumerate(arrays):
    if a.size and not np.issubdtype(a.dtype, np.integer):
      raise ValueError(f'{what} {i}: token ids must be integers, not {a.dtype}')
    if a.size and (a.min() < 0 or a.max() >= vocab_size):
      bad = int(a[(a < 0) | (a >= vocab_size)][0])
      raise ValueError(f'{what} {i}: token id {bad} is outside the vocabulary 0..{vocab_size - 1}; pass the '
                       "tokenizer's vocab_size")
  tokens = np.concatenate(arrays).astype(np.int64) if arrays else np.zeros(0, np.int64)
  positions = np.concatenate([np.arange(len(a)) for a in arrays]) if arrays else np.zeros(0, np.int64)
  return tokens, positions


def _lookup(keys: np.ndarray, context: np.ndarray, tokens: np.ndarray, vocab_size: int) -> np.ndarray:
  """The index of each (context, token) k-gram among `keys`, or -1 where it (or its context) was not seen."""
  wanted = context * vocab_size + tokens
  where = np.searchsorted(keys, wanted)
  hit = (context >= 0) & (where < len(keys))
  hit[hit] = keys[where[hit]] == wanted[hit]
  return np.where(hit, where, -1)


def _check_key_range(num_contexts: int, vocab_size: int) -> None:
  if num_contexts * vocab_size >= 2**63:
    raise ValueError(f'{num_contexts:,} contexts x vocab_size {vocab_size:,} overflow the int64 n-gram keys; '
                     'train on fewer tokens or a lower order')
