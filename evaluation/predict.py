"""Every example of a split through the model, in order, on any mesh: what eval.py scores.

  predictor = Predictor(module, mesh)                     # mesh: trainer.mesh.MeshContext
  batches = split_batches(task, global_batch_size)        # in source order; the last one padded
  preds = predictor.classes(params, batches, regression=False)   # (N,) class ids (or regression values)
  sums = predictor.token_sums(params, batches)            # language models: per-example loss, weight, hits (+ SOP)
  logits = predictor.span_logits(params, batches)         # extractive QA: (N, T, 2) start and end logits

Unlike the training pipeline (data/pipeline.py), which shuffles and drops the last partial batch, evaluation
must see each example exactly once and keep the order (GLUE submission files are indexed by position).
Global batch b holds examples [b*G, (b+1)*G); process p feeds rows [p*G/P, (p+1)*G/P) of it; rows past the
end repeat the last example and carry `valid` = 0. The model's outputs come back replicated, so every
process holds all the predictions (process 0 writes the files).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import model
from data import tasks
from data.pipeline import per_process_batch_size
from trainer import losses
from trainer.mesh import MeshContext
from trainer.step import apply_model, compile_forward

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class SplitBatch:
  """One global batch of a split: this process's rows and which rows of the global batch are real."""
  local: Batch  # this process's rows of every feature
  valid: np.ndarray  # (G,) bool over the *global* batch: False on the padding rows of the last batch
  indices: np.ndarray  # (G,) int: the source index of each global row (padding repeats the last one)


def split_batches(task: tasks.Task, global_batch_size: int, *, process_index: int | None = None,
                  process_count: int | None = None, limit: int | None = None) -> Iterator[SplitBatch]:
  """The examples of `task` (the first `limit` of them, if given) in order, in global batches."""
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  local = per_process_batch_size(global_batch_size, process_count)
  total = len(task.source) if limit is None else min(limit, len(task.source))
  if total == 0:
    raise ValueError(f'data.source={task.config.source!r}: the split is empty')
  for start in range(0, total, global_batch_size):
    indices = np.minimum(np.arange(start, start + global_batch_size), total - 1)
    valid = np.arange(start, start + global_batch_size) < total
    mine = indices[process_index * local:(process_index + 1) * local]
    examples = [task.transform(int(i), task.source[int(i)]) for i in mine]
    yield SplitBatch({k: np.stack([e[k] for e in examples]) for k in examples[0]}, valid, indices)


class Predictor:
  """The model's predictions on split batches; each function is compiled once per batch shape and reused
  across splits (validation, test, MNLI's matched and mismatched)."""

  def __init__(self, module: model.Transformer, mesh: MeshContext) -> None:
    self.module, self.mesh = module, mesh
    self._compiled: dict[tuple[Any, ...], Any] = {}
    self._fns = {'classes': functools.partial(_classify, module=module, regression=False),
                 'values': functools.partial(_classify, module=module, regression=True),
                 'tokens': functools.partial(_token_sums, module=module),
                 'spans': functools.partial(_span_logits, module=module)}

  def classes(self, params: Any, batches: Iterator[SplitBatch], *, regression: bool) -> np.ndarray:
    """(N,) predictions of every example, in source order (int32 class ids, or float32 values)."""
    return np.concatenate(list(self._run('values' if regression else 'classes', params, batches)))

  def token_sums(self, params: Any, batches: Iterator[SplitBatch]) -> dict[str, np.ndarray]:
    """Language models: (N,) per-example loss sums (nats), weights (predicted tokens) and correct tokens."""
    parts = list(self._run('tokens', params, batches))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def span_logits(self, params: Any, batches: Iterator[SplitBatch]) -> np.ndarray:
    """Extractive QA: (N, T, 2) float32 start ([..., 0]) and end ([..., 1]) logits of every feature, in order."""
    return np.concatenate(list(self._run('spans', params, batches)))

  def _run(self, name: str, params: Any, batches: Iterator[SplitBatch]) -> Iterator[Any]:
    """The function over every batch, with the padding rows of the last batch dropped."""
    for split_batch in batches:
      key = (name,) + tuple((k, v.shape, v.dtype.str) for k, v in sorted(split_batch.local.items()))
      if key not in self._compiled:
        self._compiled[key] = self._compile(self._fns[name], params, split_batch.local)
      out = jax.device_get(self._compiled[key](params, self.mesh.to_global(split_batch.local)))
      yield jax.tree.map(lambda x: np.asarray(x)[split_batch.valid], out)

  def _compile(self, fn: Any, params: Any, batch: Batch) -> Any:
    """`fn(params, batch)` compiled for this batch's global shapes (the train loop's compile path)."""
    count = jax.process_count()
    shapes = {k: jax.ShapeDtypeStruct((v.shape[0] * count,) + v.shape[1:], v.dtype) for k, v in batch.items()}
    abstract_params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), params)
    return compile_forward(fn, self.mesh, abstract_params, shapes)


def _classify(params: Any, batch: Mapping[str, jax.Array], *, module: model.Transformer,
              regression: bool) -> jax.Array:
  """(B,) the predicted class (argmax of the logits) or, for regression, the predicted value."""
  logits = apply_model(module, params, batch, deterministic=True)['logits']
  return logits[:, 0] if regression else jnp.argmax(logits, axis=-1).astype(jnp.int32)


def _span_logits(params: Any, batch: Mapping[str, jax.Array], *, module: model.Transformer) -> jax.Array:
  """(B, T, 2) the span head's start and end logits, float32."""
  return apply_model(module, params, batch, deterministic=True)['logits'].astype(jnp.float32)


def _token_sums(params: Any, batch: Mapping[str, jax.Array], *, module: model.Transformer) -> dict[str, jax.Array]:
  """Per-example sums of token cross-entropy (nats), weight and hits: (B,) each (the training loss's); with a
  pretraining head, also the sentence order's ('sop_loss', 'sop_correct', 'sop_weight')."""
  out = apply_model(module, params, batch, deterministic=True)
  sums = losses.loss_sums(losses.LossKind.TOKENS, out['logits'], batch, per_example=True)
  sums = {name: sums[name] for name in ('loss', 'weight', 'correct')}
  if 'sop_logits' in out:
    sums |= losses.sentence_order_sums(out['sop_logits'], batch['sentence_order_label'], per_example=True)
  return sums
