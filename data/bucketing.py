"""Length bucketing: batches of similar lengths, each cut to the smallest bucket that holds its longest example.

Fine-tuning pads every example to data.seq_len although most are much shorter (movie sentiment: ~26 of 64
tokens). Like fairseq's / tensor2tensor's `bucket_by_sequence_length`, the stream groups examples of similar
length into batches, and each batch is trimmed to a bucket length, so the model runs on far fewer pad tokens.
Unlike them, the order is a pure function of (seed, epoch, lengths): every process computes it alone, and a
resumed run continues it exactly. Per epoch e (N examples, G = global batch size, W = data.bucket_window):

  base = the usual seeded permutation of epoch e     grain's shuffle: exactly the unbucketed stream's order
  head = base[:h], h = (-e*N) mod G                  completes the global batch that epoch e-1 began (h = 0
                                                     when G divides N); kept in base order
  rest = base[h:] cut into windows of W*G positions  the last window may be shorter
  each window: sorted by length (stable), cut into   its full batches in an order drawn from (seed, epoch,
  global batches                                     window); a short last one (G does not divide N-h) stays
                                                     last, for the head of epoch e+1 to complete

The stream stays the concatenation of the epochs (each a permutation of the source), and global batch b is
still stream[b*G:(b+1)*G], so it is the same rows for any process count. Batch b is trimmed to the smallest
bucket >= its longest example, from `lengths` of the whole global batch: every process agrees on the shape
without communication. With shuffle=False (evaluation) base is the identity and the batches of a window stay
in sorted order: the order of predictions is then not that of the source. When G does not divide N, the one
batch per epoch that spans two epochs mixes a window's longest examples with random ones (often the largest
bucket), and with a finite num_epochs and drop_remainder the dropped last batch holds the last window's longest.

Which features are trimmed is explicit, `length_features` (default input_ids, attention_mask, token_type_ids),
not guessed from shapes: a seq2seq task's decoder features are often as long as its encoder ones
(data.decoder_seq_len defaults to seq_len) but are measured by other lengths. For seq2seq only the encoder side
is trimmed for now; the decoder keeps data.decoder_seq_len.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grain
import numpy as np

from data.batch import ENCODER_LENGTH  # the features trimmed by default

Batch = dict[str, np.ndarray]

MASK_FEATURE = 'attention_mask'  # 1 at real tokens: a trim that cuts one is a caller's wrong `lengths`.
# SeedSequence spawn key of the batch order: apart from the objectives' streams (data/examples.Stream: 1, 2).
_ORDER_STREAM = 1000
_CACHED_WINDOWS = 64  # grain's reader threads run up to hundreds of batches ahead, over many windows.


def check_config(buckets: tuple[int, ...], window: int, features: tuple[str, ...]) -> None:
  """The parts of `PipelineConfig` that bucketing reads; errors name the field and the fix."""
  if any(not isinstance(b, (int, np.integer)) or b < 1 for b in buckets):
    raise ValueError(f'data.length_buckets={buckets}: every bucket must be a positive integer, e.g. (16, 32, 64)')
  if list(buckets) != sorted(set(buckets)):
    raise ValueError(f'data.length_buckets={buckets}: buckets must be strictly increasing; use '
                     f'{tuple(sorted(set(buckets)))}')
  if window < 1:
    raise ValueError(f'data.bucket_window={window}: must be >= 1 (the global batches sorted together)')
  if buckets and not features:
    raise ValueError('data.length_features=(): name the features to trim, e.g. '
                     f'{ENCODER_LENGTH}, or set data.length_buckets=() to turn bucketing off')


def check_example(example: Mapping[str, np.ndarray], buckets: tuple[int, ...], features: tuple[str, ...]) -> None:
  """One transformed example against the buckets: the trimmed features exist and the last bucket is their length."""
  present = [name for name in features if name in example]
  if not present:
    raise ValueError(f'data.length_features={features}: none is a feature of the examples '
                     f'({sorted(example)}); name those whose length is the padded length')
  for name in present:
    shape = np.shape(example[name])
    if not shape or shape[0] != buckets[-1]:
      padded = shape[0] if shape else None
      raise ValueError(f'data.length_buckets={buckets}: the last bucket must be the padded length of '
                       f'{name!r} (shape {shape}); end the buckets with {padded} (data.seq_len)')


def check_lengths(lengths: np.ndarray | None, num_examples: int, buckets: tuple[int, ...]) -> np.ndarray:
  """`lengths` as int64 (N,), each clipped to the last bucket (the transform truncates longer examples)."""
  if lengths is None:
    raise ValueError(f'data.length_buckets={buckets} needs the length of every example: pass '
                     'make_dataset(..., lengths=) (e.g. data.bucketing.example_lengths(source, transform)), or '
                     'set data.length_buckets=()')
  lengths = np.asarray(lengths)
  if lengths.shape != (num_examples,) or not np.issubdtype(lengths.dtype, np.integer) or (lengths < 0).any():
    raise ValueError(f'lengths: {lengths.dtype} {lengths.shape}; need non-negative integers of shape '
                     f'({num_examples},), one per source example')
  return np.minimum(lengths.astype(np.int64), buckets[-1])


class BucketedOrder:
  """The bucketed stream (module docstring): position -> source index, global batch -> bucket length.

  lengths: (N,) of `check_lengths`. Picklable for grain's worker processes; windows are computed on first use
  and cached, under a lock because grain's reader threads ask concurrently.
  """

  def __init__(self, lengths: np.ndarray, *, global_batch_size: int, buckets: tuple[int, ...], window: int,
               seed: int, shuffle: bool, num_epochs: int | None) -> None:
    self._lengths = lengths
    self._n, self._g, self._w = len(self._lengths), global_batch_size, window * global_batch_size
    self._buckets = np.asarray(buckets, np.int64)
    self._seed, self._shuffle = seed, shuffle
    # grain's own epoch permutations (shuffle, reseeded by repeat): identical to the unbucketed stream's.
    self._base = grain.MapDataset.range(self._n).shuffle(seed=seed).repeat() if shuffle else None
    self.stream_length = sys.maxsize if num_epochs is None else num_epochs * self._n
    self._cache: dict[tuple[int, int], np.ndarray] = {}
    self._lock = threading.Lock()

  def __getstate__(self) -> dict[str, Any]:
    return {k: v for k, v in self.__dict__.items() if k not in ('_cache', '_lock')}

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state, _cache={}, _lock=threading.Lock())

  def _head(self, epoch: int) -> int:
    """Positions of epoch `epoch` that complete the global batch begun in the epoch before."""
    return min(-epoch * self._n % self._g, self._n)

  def _base_index(self, epoch: int, j: int) -> int:
    return self._base[epoch * self._n + j] if self._shuffle else j

  def source_index(self, position: int) -> int:
    """The source example at stream position `position`."""
    epoch, j = divmod(position, self._n)
    head = self._head(epoch)
    if j < head:
      return self._base_index(epoch, j)
    window, offset = divmod(j - head, self._w)
    return int(self._window(epoch, window)[offset])

  def batch_length(self, batch: int) -> int:
    """The bucket of global batch `batch`: the smallest >= its longest example (of all processes' rows)."""
    positions = range(batch * self._g, min((batch + 1) * self._g, self.stream_length))
    longest = max(self._lengths[self.source_index(p)] for p in positions)
    return int(self._buckets[np.searchsorted(self._buckets, longest)])

  def _window(self, epoch: int, window: int) -> np.ndarray:
    """Source indices of one window: sorted by length, its full batches in a seeded order.  (<= W*G,)"""
    key = (epoch, window)
    order = self._cache.get(key)
    if order is not None:
      return order
    with self._lock:
      if key in self._cache:
        return self._cache[key]
      start = self._head(epoch) + window * self._w
      base = np.array([self._base_index(epoch, j) for j in range(start, min(start + self._w, self._n))], np.int64)
      order = base[np.argsort(self._lengths[base], kind='stable')]
      full = len(order) // self._g
      if self._shuffle and full > 1:
        # Uniform doubles + argsort, not Generator.permutation: numpy keeps `random`'s stream across versions
        # (NEP 19), so a resumed run after an upgrade sees the same order (as data/examples.example_rng).
        rng = np.random.Generator(np.random.Philox(np.random.SeedSequence(
            self._seed, spawn_key=(_ORDER_STREAM, epoch, window))))
        batches = order[:full * self._g].reshape(full, self._g)
        order[:full * self._g] = batches[np.argsort(rng.random(full), kind='stable')].reshape(-1)
      while len(self._cache) >= _CACHED_WINDOWS:
        del self._cache[next(iter(self._cache))]  # the oldest: the stream moves forward
      self._cache[key] = order
      return order


def trim_batch(batch: Mapping[str, np.ndarray], length: int, features: Sequence[str]) -> Batch:
  """`features` (those present) cut to `length` along axis 1; the rest untouched.  (B, L, ...) -> (B, length, ...)"""
  out = dict(batch)
  for name in features:
    if name not in out:
      continue
    if name == MASK_FEATURE and out[name][:, length:].any():
      raise ValueError(f'a batch trimmed to {length} would cut real tokens ({name} is 1 beyond it): the `lengths` '
                       'given to make_dataset understate some examples; count every non-pad token')
    out[name] = np.ascontiguousarray(out[name][:, :length])
  return out


def bucket_shapes(batch_shapes: Mapping[str, tuple[int, ...]], buckets: Sequence[int],
                  features: Sequence[str] = ENCODER_LENGTH) -> list[dict[str, tuple[int, ...]]]:
  """Every batch shape the bucketed stream can give, one per bucket (to compile one step each).

  batch_shapes: the untrimmed shapes, e.g. {'input_ids': (B, 64), 'label': (B,)}; the features' axis 1 must be
  the last bucket.
  """
  for name in features:
    if name in batch_shapes and batch_shapes[name][1:2] != (buckets[-1],):
      raise ValueError(f'data.length_buckets={tuple(buckets)}: the last bucket must be the padded length, axis 1 '
                       f'of {name!r} {batch_shapes[name]}')
  return [{name: (shape[0], b, *shape[2:]) if name in features else tuple(shape)
           for name, shape in batch_shapes.items()} for b in buckets]


@dataclasses.dataclass(frozen=True)
class BucketChoice:
  """The buckets a run compiles, of data.length_buckets, from the training split's lengths (`choose_buckets`)."""

  buckets: tuple[int, ...]  # the chosen ones, the last always data.seq_len
  counts: dict[int, int]  # configured bucket -> training examples it holds (before merging)
  merged: dict[int, int]  # dropped bucket -> the chosen bucket its examples go to
  threshold: int  # a bucket holding fewer examples (with those merged into it) is merged into the next

  def line(self, configured: tuple[int, ...]) -> str:
    """'data.length_buckets=(16, 24, 32, 48, 64): compiling (16, 32, 64) ...; 24 (80 examples) merged into 32, ...'."""
    kept = ', '.join(f'{b} ({self.counts[b]:,})' for b in self.buckets)
    head = f'data.length_buckets={configured}: compiling {self.buckets}, training examples per bucket {kept}'
    empty = [b for b in self.merged if not self.counts[b]]
    few = [f'{b} ({self.counts[b]:,}) into {to}' for b, to in self.merged.items() if self.counts[b]]
    if few:
      head += f'; merged {", ".join(few)} (fewer than {self.threshold:,}: 2% of the split or one global batch)'
    return head + (f'; empty: {", ".join(map(str, empty))}' if empty else '')


MIN_BUCKET_SHARE = 0.02  # a bucket with fewer examples than this share of the split (or one global batch) is merged


def choose_buckets(lengths: np.ndarray, buckets: tuple[int, ...], global_batch_size: int) -> BucketChoice:
  """The buckets worth one compiled program each: a pure function of the lengths and the config, so a resumed
  run chooses the same ones (its batches are the same rows anyway: the order does not depend on the buckets).

  Smallest first, a bucket whose examples (with those of the smaller buckets merged into it) are fewer than
  max(2% of the split, one global batch) is dropped and its examples go to the next larger bucket; an empty
  bucket is always dropped; the last (data.seq_len) is always kept. lengths: (N,) of `check_lengths`.
  """
  lengths = np.minimum(np.asarray(lengths, np.int64), buckets[-1])
  per_bucket = np.bincount(np.searchsorted(np.asarray(buckets), lengths), minlength=len(buckets))
  counts = {b: int(c) for b, c in zip(buckets, per_bucket)}
  threshold = max(math.ceil(MIN_BUCKET_SHARE * len(lengths)), global_batch_size)
  chosen, merged, pending, carried = [], {}, [], 0
  for b in buckets:
    carried += counts[b]
    if b == buckets[-1] or carried >= threshold:
      chosen.append(b)
      merged |= {dropped: b for dropped in pending}
      pending, carried = [], 0
    else:
      pending.append(b)
  return BucketChoice(tuple(chosen), counts, merged, threshold)


def example_lengths(source: Sequence[Any], transform: Callable[[int, Any], Mapping[str, np.ndarray]],
                    feature: str = MASK_FEATURE) -> np.ndarray:
  """The real length of every example, the sum of its `feature` (the attention mask).  (N,) int64

  Runs the transform over the whole source once (tokenizes it): seconds for GLUE-sized tasks, so a caller with
  token counts at hand (e.g. from the tokenizer) may pass those instead.
  """
  return np.array([int(np.sum(transform(i, source[i])[feature])) for i in range(len(source))], np.int64)
