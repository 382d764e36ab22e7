"""The input pipeline: grain over a random-access source, deterministic and resumable, sharded by process.

  stream = shuffle(source, seed, epoch) repeated      every process sees the same global order
  example i of the stream -> transform(i, example)    i is the stream position: random objectives (MLM,
                                                      span corruption) seed from it (data/tasks.py), so a
                                                      resumed run redraws exactly the same masks
  global batch b = stream[b*G : (b+1)*G]              G = global batch size
  process p feeds rows [p*G/P : (p+1)*G/P] of it      P processes; batch b is the same for any P

With data.length_buckets (opt-in, for classification / regression / seq2seq fine-tuning; data/bucketing.py),
each epoch of the stream is reordered so that a global batch holds examples of similar length: windows of
data.bucket_window global batches are sorted by length and their batches put in a seeded order. Batch b is then
cut to the smallest bucket that holds its longest example (known from `lengths`, so every process agrees),
along axis 1 of data.length_features; the other features keep their shapes. Everything above still holds:
each epoch is a permutation of the source, batch b is the same for any P, and a resume is exact.

The iterator's state is a small JSON-able dict (grain's), saved with every checkpoint; restoring it makes
the next batch exactly the one that would have come. Batches are host-local numpy arrays; trainer/mesh.py's
`to_global` makes them global `jax.Array`s with the batch sharding of the mesh.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import grain
import numpy as np
from absl import flags

from data import bucketing
from data.batch import ENCODER_LENGTH

Batch = dict[str, np.ndarray]


class RandomAccessSource(Protocol):
  def __len__(self) -> int: ...
  def __getitem__(self, index: int) -> Any: ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class PipelineConfig:
  """How examples become batches. `global_batch_size` counts every process's rows together."""

  global_batch_size: int
  seed: int = 0
  shuffle: bool = True
  num_epochs: int | None = None  # None: repeat forever (training); 1: one pass (evaluation).
  worker_count: int = 0  # grain worker processes; 0 runs the transforms in the main process.
  drop_remainder: bool = True  # a last partial batch is dropped (fixed shapes: one compiled step).
  # Length bucketing (data/bucketing.py), off when empty: strictly increasing lengths, the last the padded
  # length (data.seq_len), e.g. (16, 32, 64); one compiled step per bucket (`bucketing.bucket_shapes`).
  length_buckets: tuple[int, ...] = ()
  # Global batches sorted by length together: more, less padding but batches less random in length.
  bucket_window: int = 32
  # Features cut to the bucket along their length axis; named, not found by shape, because a seq2seq
  # decoder feature may have the encoder's length without being measured by `lengths`.
  length_features: tuple[str, ...] = ENCODER_LENGTH

  def __post_init__(self) -> None:
    # Config trees hold lists; the dataclass is frozen and compared, so store tuples.
    object.__setattr__(self, 'length_buckets', tuple(self.length_buckets))
    object.__setattr__(self, 'length_features', tuple(self.length_features))
    bucketing.check_config(self.length_buckets, self.bucket_window, self.length_features)
    if self.global_batch_size < 1:
      raise ValueError(f'train.batch_size={self.global_batch_size}: must be a positive integer')
    if self.num_epochs is not None and self.num_epochs < 1:
      raise ValueError(f'num_epochs={self.num_epochs}: must be >= 1, or None to repeat forever')
    if self.worker_count < 0:
      raise ValueError(f'data.worker_count={self.worker_count}: must be >= 0')


def per_process_batch_size(global_batch_size: int, process_count: int) -> int:
  if global_batch_size % process_count:
    raise ValueError(f'train.batch_size={global_batch_size} is not divisible by the {process_count} processes; '
                     f'use a multiple of {process_count}')
  return global_batch_size // process_count


def make_dataset(source: RandomAccessSource, transform: Callable[[int, Any], Mapping[str, np.ndarray]],
                 config: PipelineConfig, *, process_index: int = 0, process_count: int = 1,
                 lengths: np.ndarray | None = None) -> grain.IterDataset:
  """Batches of this process: dicts of numpy arrays with a leading (global_batch_size / process_count) axis.

  lengths: (N,) ints, the real token count of each source example (e.g. its attention mask's sum,
  `bucketing.example_lengths`); required with config.length_buckets, unused without.
  """
  if len(source) == 0:
    raise ValueError('the data source is empty: check data.source and the split')
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} is not in [0, {process_count})')
  local = per_process_batch_size(config.global_batch_size, process_count)
  if config.length_buckets:
    return _prefetched(_bucketed(source, transform, config, lengths, local, process_index, process_count), config)
  ds = grain.MapDataset.source(source)
  if config.shuffle:
    ds = ds.shuffle(seed=config.seed)  # reshuffled for every epoch by repeat(), from the same seed
  ds = ds.repeat(config.num_epochs)
  ds = ds.map_with_index(lambda i, example: dict(transform(i, example)))
  # Consecutive local batches of the stream, dealt round-robin: process p takes local batch b*P + p, which
  # are rows p*local .. (p+1)*local-1 of global batch b.
  ds = ds.batch(local, drop_remainder=config.drop_remainder)[process_index::process_count]
  return _prefetched(ds, config)


def _bucketed(source: RandomAccessSource, transform: Callable[[int, Any], Mapping[str, np.ndarray]],
              config: PipelineConfig, lengths: np.ndarray | None, local: int, process_index: int,
              process_count: int) -> grain.MapDataset:
  """The bucketed stream's batches of this process (module docstring), each trimmed to its bucket."""
  buckets, features = config.length_buckets, config.length_features
  order = bucketing.BucketedOrder(bucketing.check_lengths(lengths, len(source), buckets),
                                  global_batch_size=config.global_batch_size, buckets=buckets,
                                  window=config.bucket_window, seed=config.seed, shuffle=config.shuffle,
                                  num_epochs=config.num_epochs)
  # One example now, so that a wrong bucket or feature name fails here rather than in a worker process.
  bucketing.check_example(transform(0, source[order.source_index(0)]), buckets, features)
  ds = grain.MapDataset.range(order.stream_length).map(lambda position: source[order.source_index(position)])
  ds = ds.map_with_index(lambda i, example: dict(transform(i, example)))
  # As unbucketed: local batch b*P + p is process p's rows of global batch b, so after the slice the index
  # of a batch is that of its global batch, whose bucket every process computes alike.
  ds = ds.batch(local, drop_remainder=config.drop_remainder)[process_index::process_count]
  return ds.map_with_index(lambda b, batch: bucketing.trim_batch(batch, order.batch_length(b), features))


def _prefetched(ds: grain.MapDataset, config: PipelineConfig) -> grain.IterDataset:
  it = ds.to_iter_dataset()
  if config.worker_count:
    _absl_flags_for_grain()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.worker_count))
  return it


def _absl_flags_for_grain() -> None:
  """grain's worker processes read absl flags; outside an absl app (tests, notebooks) nobody parsed them."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


class InputIterator:
  """Iterates host-local batches; `get_state` / `set_state` checkpoint the position exactly."""

  def __init__(self, dataset: grain.IterDataset) -> None:
    self._iterator = iter(dataset)

  def __iter__(self) -> Iterator[Batch]:
    return self

  def __next__(self) -> Batch:
    return next(self._iterator)

  def get_state(self) -> dict[str, Any]:
    return self._iterator.get_state()

  def set_state(self, state: Mapping[str, Any]) -> None:
    self._iterator.set_state(dict(state))

  def close(self) -> None:
    """Stops worker processes (if any) now rather than at interpreter exit."""
    close = getattr(self._iterator, 'close', None)
    if close is not None:
      close()
