"""The input pipeline: grain over a random-access source, deterministic and resumable, sharded by process.

  stream = shuffle(source, seed, epoch) repeated      every process sees the same global order
  example i of the stream -> transform(i, example)    i is the stream position: random objectives (MLM,
                                                      span corruption) seed from it (data/tasks.py), so a
                                                      resumed run redraws exactly the same masks
  global batch b = stream[b*G : (b+1)*G]              G = global batch size
  process p feeds rows [p*G/P : (p+1)*G/P] of it      P processes; batch b is the same for any P

The iterator's state is a small JSON-able dict (grain's), saved with every checkpoint; restoring it makes
the next batch exactly the one that would have come. Host-local numpy batches become global `jax.Array`s
with the batch sharding of the mesh (`to_global`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import flax.linen as nn
import grain
import jax
import numpy as np
from absl import flags

from model import partitioning as P

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

  def __post_init__(self) -> None:
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
                 config: PipelineConfig, *, process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
  """Batches of this process: dicts of numpy arrays with a leading (global_batch_size / process_count) axis."""
  if len(source) == 0:
    raise ValueError('the data source is empty: check data.source and the split')
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} is not in [0, {process_count})')
  local = per_process_batch_size(config.global_batch_size, process_count)
  ds = grain.MapDataset.source(source)
  if config.shuffle:
    ds = ds.shuffle(seed=config.seed)  # reshuffled for every epoch by repeat(), from the same seed
  ds = ds.repeat(config.num_epochs)
  ds = ds.map_with_index(lambda i, example: dict(transform(i, example)))
  # Consecutive local batches of the stream, dealt round-robin: process p takes local batch b*P + p, which
  # are rows p*local .. (p+1)*local-1 of global batch b.
  ds = ds.batch(local, drop_remainder=config.drop_remainder)[process_index::process_count]
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


def batch_sharding(mesh: jax.sharding.Mesh, rules: P.Rules, ndim: int) -> jax.sharding.NamedSharding:
  """Leading axis over the mesh axes of the logical 'batch' axis (the rules table), the rest replicated."""
  spec = nn.logical_to_mesh_axes((P.BATCH,) + (None,) * (ndim - 1), rules)
  return jax.sharding.NamedSharding(mesh, spec)


def to_global(batch: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh,
              rules: P.Rules = P.DEFAULT_RULES) -> dict[str, jax.Array]:
  """This process's rows -> global arrays sharded along the batch axis (every process calls this)."""
  return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, rules, v.ndim), v)
          for k, v in batch.items()}

