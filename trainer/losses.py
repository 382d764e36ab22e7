"""Losses of every objective as *sums* with their weights, so that means over microbatches, devices and
evaluation batches are exact: mean = sum of per-token losses / sum of weights, never a mean of means.

  token objectives (causal_lm, mlm, span_corruption, seq2seq): cross-entropy of logits (B, T, V) against
      targets (B, T), weighted by loss_weights (B, T) (0 at padding, at unmasked MLM tokens, across packed rows)
  classification: cross-entropy of logits (B, C) against label (B,) int32; every example weighs 1
  regression: squared error of logits[:, 0] against label (B,) float32; every example weighs 1

Optional z-loss (PaLM, ST-MoE; T5X's `z_loss`): coefficient * log(Z)^2 per token, Z the softmax
normaliser, added to the cross-entropy; it keeps log Z near 0 so bf16 logits do not drift.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp

import objectives
from data.tasks import Objective
from objectives import LossKind

Sums = dict[str, jax.Array]


def loss_kind(objective: Objective | str) -> LossKind:
  """The loss of a `data.objective` (an Objective or its string): its spec's."""
  return objectives.spec(objective).loss


def total_weight(kind: LossKind, batch: Mapping[str, jax.Array]) -> jax.Array:
  """The denominator of the batch mean: sum of loss_weights (tokens) or the number of examples. () float32."""
  if kind is LossKind.TOKENS:
    return jnp.sum(batch['loss_weights'].astype(jnp.float32))
  return jnp.asarray(batch['label'].shape[0], jnp.float32)


def cross_entropy_sums(logits: jax.Array, labels: jax.Array, weights: jax.Array, z_loss: float = 0.0, *,
                       per_example: bool = False) -> Sums:
  """logits (..., V) float32; labels (...) int; weights (...) float. Returns sums over every position of
  'loss' (weighted cross-entropy + z-loss), 'z_loss', 'correct' (weighted argmax hits) and 'weight'; with
  `per_example`, over every position of each example: (B,) each."""
  logits = logits.astype(jnp.float32)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  # A gather of the label's logit: on the CPU a one-hot product over the vocabulary cost a third of the
  # tiny configs' step (bench/train_throughput.py); SPMD partitions the gather when vocab is sharded.
  label_logit = jnp.take_along_axis(logits, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
  weights = weights.astype(jnp.float32)
  z_term = z_loss * jnp.square(log_z) if z_loss else jnp.zeros_like(log_z)
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  total = functools.partial(jnp.sum, axis=tuple(range(1, weights.ndim)) if per_example else None)
  return {'loss': total((log_z - label_logit + z_term) * weights), 'z_loss': total(z_term * weights),
          'correct': total(correct * weights), 'weight': total(weights)}


def loss_sums(kind: LossKind, logits: jax.Array, batch: Mapping[str, jax.Array], z_loss: float = 0.0, *,
              per_example: bool = False) -> Sums:
  """The objective's sums ('loss', 'z_loss', 'weight', and 'correct' except for regression): over the
  batch, or with `per_example` (eval.py, which scores every example once) over each example, (B,) each.

  logits: (B, T, V) for TOKENS, (B, C) for CLASSIFICATION, (B, 1) for REGRESSION (the model's 'logits').
  """
  match kind:
    case LossKind.TOKENS:
      return cross_entropy_sums(logits, batch['targets'], batch['loss_weights'], z_loss, per_example=per_example)
    case LossKind.CLASSIFICATION:
      labels = batch['label']
      return cross_entropy_sums(logits, labels, jnp.ones(labels.shape, jnp.float32), z_loss,
                                per_example=per_example)
    case LossKind.REGRESSION:
      squared = jnp.square(logits[:, 0].astype(jnp.float32) - batch['label'].astype(jnp.float32))
      ones = jnp.ones_like(squared)
      if per_example:
        return {'loss': squared, 'z_loss': jnp.zeros_like(squared), 'weight': ones}
      return {'loss': jnp.sum(squared), 'z_loss': jnp.zeros((), jnp.float32), 'weight': jnp.sum(ones)}
  raise ValueError(f'unknown loss kind {kind}')
