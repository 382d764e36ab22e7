"""Losses of every objective as *sums* with their weights, so that means over microbatches, devices and
evaluation batches are exact: mean = sum of per-token losses / sum of weights, never a mean of means.

  token objectives (causal_lm, mlm, span_corruption, seq2seq): cross-entropy of logits (B, T, V) against
      targets (B, T), weighted by loss_weights (B, T) (0 at padding, at unmasked MLM tokens, across packed rows)
  classification: cross-entropy of logits (B, C) against label (B,) int32; every labelled example weighs 1, an
      unlabelled one (data.batch.UNLABELED) 0: it can never train as the last class (a gather at -1 wraps)
  regression: squared error of logits[:, 0] against label (B,) float32; every example weighs 1
  mlm_sop (PRETRAINING): the token loss of the MLM logits, plus the sentence order's cross-entropy of sop_logits
      (B, 2) against sentence_order_label (B,) with every example weighing 1 ('sop_loss', 'sop_correct',
      'sop_weight'); the training loss is the sum of the two means (`mean_loss`)
  span (extractive QA): the cross-entropy over the T positions of logits[..., 0] (B, T, 2) against start_positions
      (B,) and of logits[..., 1] against end_positions, averaged; an example weighs 1 when both positions lie in
      [0, T), else 0 (HF clamps a position beyond the window to T and ignores that half alone: the same loss
      unless only one end of a span is outside; a negative position is data.batch.UNLABELED, which HF would clamp
      to 0); 'correct' where both positions are right (an exact-span accuracy)

Optional z-loss (PaLM, ST-MoE; T5X's `z_loss`): coefficient * log(Z)^2 per token, Z the softmax
normaliser, added to the cross-entropy; it keeps log Z near 0 so bf16 logits do not drift.

Accuracy counts a position as correct when its label's logit is the largest and the logits are not all
equal: argmax without XLA's variadic (value, index) reduce, which cost as much as the softmax on the CPU
(bench/RESULTS.md), from the max that log Z computes anyway and a min. A collapsed model that outputs one
value everywhere scores 0, not 1; an exact tie of the label with another logit (two equal float logits) counts
as correct, where argmax would break it by index.

`projected_cross_entropy_sums` is the same token loss from the head's *inputs* (hidden states and the
vocabulary projection) instead of its logits: it computes the logits `chunk` positions per row at a time in
the forward pass and again in the backward pass (a custom VJP), so the (B, T, V) logits and their gradient
never exist whole (GPT-2's are 3.3 GB in float32 at 16 x 1024), and each chunk stays in cache on a CPU.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from jax import lax

import objectives
from data.tasks import Objective
from objectives import LossKind

Sums = dict[str, jax.Array]


def loss_kind(objective: Objective | str) -> LossKind:
  """The loss of a `data.objective` (an Objective or its string): its spec's."""
  return objectives.spec(objective).loss


def position_weights(kind: LossKind, batch: Mapping[str, jax.Array]) -> jax.Array:
  """How much each prediction counts, float32: loss_weights (B, T) (tokens; pretraining's MLM part), 1 per
  labelled example (B,) (classification), 1 per example whose span lies in the window (B,) (span), 1 per example
  (B,) (regression)."""
  if kind.tokens:
    return batch['loss_weights'].astype(jnp.float32)
  if kind is LossKind.CLASSIFICATION:
    return _labelled(batch['label'])
  if kind is LossKind.SPAN:  # the logits' positions are the input's (length bucketing trims both alike)
    return _in_window(batch['start_positions'], batch['end_positions'], batch['input_ids'].shape[1])
  return jnp.ones(batch['label'].shape, jnp.float32)


def total_weight(kind: LossKind, batch: Mapping[str, jax.Array]) -> jax.Array:
  """The denominator of the batch mean: sum of loss_weights (tokens) or the number of examples. () float32."""
  return jnp.sum(position_weights(kind, batch))


def total_weights(kind: LossKind, batch: Mapping[str, jax.Array]) -> Sums:
  """The denominators of the batch means, () float32 each, named as the weights of the sums: 'weight'
  (`total_weight`) and, for PRETRAINING, 'sop_weight' (the examples, each of which has a sentence order)."""
  out = {'weight': total_weight(kind, batch)}
  if kind is LossKind.PRETRAINING:
    out['sop_weight'] = jnp.asarray(batch['sentence_order_label'].shape[0], jnp.float32)
  return out


def mean_loss(sums: Sums, denominators: Sums) -> jax.Array:
  """The loss the step minimises from a (micro)batch's sums and the *whole* batch's `total_weights` (none 0):
  the mean over the weighted tokens or examples, plus, with a sentence order ('sop_loss'), its mean over the
  examples (ALBERT: the MLM and SOP losses added, unweighted)."""
  loss = sums['loss'] / denominators['weight']
  if 'sop_loss' in sums:
    loss = loss + sums['sop_loss'] / denominators['sop_weight']
  return loss


def _labelled(labels: jax.Array) -> jax.Array:
  """1.0 where a class label is a class, 0.0 at data.batch.UNLABELED (or any negative value)."""
  return (labels >= 0).astype(jnp.float32)


def _in_window(starts: jax.Array, ends: jax.Array, length: int) -> jax.Array:
  """(B,) float32: 1.0 where both positions of a span are positions of a window of `length` tokens."""
  return ((starts >= 0) & (starts < length) & (ends >= 0) & (ends < length)).astype(jnp.float32)


def _label_stats(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """logits (..., V) float32, labels (...) int -> log Z, the label's logit, and 1.0 where the label's logit is
  the largest of logits that are not all equal (the module docstring), (...) each."""
  log_z = jax.nn.logsumexp(logits, axis=-1)
  labels = labels.astype(jnp.int32)
  # A gather of the label's logit: on the CPU a one-hot product over the vocabulary cost a third of the
  # tiny configs' step (bench/train_throughput.py); SPMD partitions the gather when vocab is sharded.
  label_logit = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
  # Not the strict "above every other logit": the select it takes was materialised, +75% on the CPU's softmax.
  largest = jnp.max(logits, axis=-1)
  correct = (label_logit >= largest) & (largest > jnp.min(logits, axis=-1))
  correct = lax.stop_gradient(correct.astype(jnp.float32))
  return log_z, label_logit, correct


def _weighted_sums(log_z: jax.Array, label_logit: jax.Array, correct: jax.Array, weights: jax.Array,
                   z_loss: float, per_example: bool) -> Sums:
  weights = weights.astype(jnp.float32)
  z_term = z_loss * jnp.square(log_z) if z_loss else jnp.zeros_like(log_z)
  total = functools.partial(jnp.sum, axis=tuple(range(1, weights.ndim)) if per_example else None)
  return {'loss': total((log_z - label_logit + z_term) * weights), 'z_loss': total(z_term * weights),
          'correct': total(correct * weights), 'weight': total(weights)}


def cross_entropy_sums(logits: jax.Array, labels: jax.Array, weights: jax.Array, z_loss: float = 0.0, *,
                       per_example: bool = False) -> Sums:
  """logits (..., V) float32; labels (...) int; weights (...) float. Returns sums over every position of
  'loss' (weighted cross-entropy + z-loss), 'z_loss', 'correct' (weighted hits, see the module docstring)
  and 'weight'; with `per_example`, over every position of each example: (B,) each."""
  log_z, label_logit, correct = _label_stats(logits.astype(jnp.float32), labels)
  return _weighted_sums(log_z, label_logit, correct, weights, z_loss, per_example)


def span_sums(logits: jax.Array, starts: jax.Array, ends: jax.Array, z_loss: float = 0.0, *,
              per_example: bool = False) -> Sums:
  """logits (B, T, 2) float32 (start, end); starts, ends (B,) int. Sums over the examples (or, with
  `per_example`, (B,) each) of 'loss' (the mean of the start's and the end's cross-entropy over the T positions,
  + z-loss, HF *ForQuestionAnswering's total_loss per example), 'z_loss', 'correct' (1 where both are right) and
  'weight' (1 per example whose positions both lie in [0, T), see the module docstring)."""
  length = logits.shape[1]
  weights = _in_window(starts, ends, length)
  positions = jnp.clip(jnp.stack([starts, ends], axis=-1), 0, length - 1)  # (B, 2); out of the window weighs 0
  log_z, label_logit, correct = _label_stats(jnp.swapaxes(logits.astype(jnp.float32), 1, 2), positions)
  both = jnp.broadcast_to(jnp.min(correct, axis=-1, keepdims=True), correct.shape)  # (B, 2)
  # Each half weighs half the example: the sums over the last axis are the example's mean and its weight.
  return _weighted_sums(log_z, label_logit, both, jnp.broadcast_to(weights[:, None] / 2, correct.shape), z_loss,
                        per_example)


def projected_cross_entropy_sums(hidden: jax.Array, kernel: jax.Array, bias: jax.Array | None, labels: jax.Array,
                                 weights: jax.Array, z_loss: float = 0.0, *, chunk: int,
                                 per_example: bool = False) -> Sums:
  """`cross_entropy_sums` of the logits hidden @ kernel.T (+ bias), computed `chunk` positions per row at a time.

  hidden (B, T, D) in the compute dtype; kernel (V, D) (a tied embedding as it is, an untied head transposed);
  bias (V,) or None; labels, weights (B, T). The products accumulate in float32 (preferred_element_type).
  Rows stay whole in every chunk, so a batch sharded by rows stays sharded; T need not divide by chunk (the
  last chunk is padded with weight-0 positions).

  Gradients: only the total 'loss' is differentiable (the training loss); 'z_loss', 'correct', 'weight' and
  every per-example sum are metrics, constant to autodiff. That is what lets the forward pass compute the
  gradients of each chunk while its logits are at hand (the loss is linear in its cotangent, a scalar): the
  backward pass only scales them, and no logits are kept or recomputed.
  """
  if chunk < 1:
    raise ValueError(f'chunk={chunk}: must be >= 1 positions')
  length = labels.shape[1]
  pad = -length % chunk
  if pad:
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    labels, weights = (jnp.pad(x, ((0, 0), (0, pad))) for x in (labels, weights))
  with_bias = bias is not None
  bias = jnp.zeros(kernel.shape[:1], kernel.dtype) if bias is None else bias
  total, each = _projected_loss(hidden, kernel, bias, labels.astype(jnp.int32), weights.astype(jnp.float32),
                                z_loss, chunk, with_bias)
  each = dict(zip(('loss', 'z_loss', 'correct', 'weight'), each))
  if per_example:
    return each
  return {name: jnp.sum(value) for name, value in each.items()} | {'loss': total}


def _chunks(x: jax.Array, chunk: int) -> jax.Array:
  """(B, T, ...) -> (T / chunk, B, chunk, ...): the scanned axis first, rows kept whole."""
  return jnp.swapaxes(x.reshape((x.shape[0], x.shape[1] // chunk, chunk) + x.shape[2:]), 0, 1)


def _unchunk(x: jax.Array) -> jax.Array:
  x = jnp.swapaxes(x, 0, 1)
  return x.reshape((x.shape[0], x.shape[1] * x.shape[2]) + x.shape[3:])


def _projected_scan(hidden, kernel, bias, labels, weights, z_loss, chunk, with_bias, grads):
  """Per-example sums (loss, z_loss, correct, weight), (B,) each, and with `grads` the gradients of the
  total loss with respect to hidden, kernel and bias."""
  def body(carry, xs):
    h, y, w = xs
    logits = jnp.einsum('bcd,vd->bcv', h, kernel, preferred_element_type=jnp.float32)
    if with_bias:
      logits = logits + bias.astype(jnp.float32)
    log_z, label_logit, correct = _label_stats(logits, y)
    sums = _weighted_sums(log_z, label_logit, correct, w, z_loss, per_example=True)
    sums = (sums['loss'], sums['z_loss'], sums['correct'], sums['weight'])
    if not grads:
      return carry, (sums, None)
    # d/dlogits of w * (log Z - logit[y] + z log Z^2) = w * (softmax * (1 + 2 z log Z) - onehot(y))
    coef = 1.0 + 2.0 * z_loss * log_z if z_loss else jnp.ones_like(log_z)
    is_label = lax.broadcasted_iota(jnp.int32, logits.shape, 2) == y[..., None]
    d_logits = w[..., None] * (jnp.exp(logits - log_z[..., None]) * coef[..., None] - is_label)
    d_kernel, d_bias = carry
    if with_bias:
      d_bias = d_bias + jnp.sum(d_logits, axis=(0, 1))
    d_logits = d_logits.astype(h.dtype)
    # Accumulated transposed, (D, V): a (V, D) product made XLA's CPU backend copy each chunk's d_logits into
    # (V, rows) order first (29 of gpt_tiny's 595 ms per step); one transpose of the sum at the end instead.
    d_kernel = d_kernel + jnp.einsum('bcd,bcv->dv', h, d_logits, preferred_element_type=jnp.float32)
    d_h = jnp.einsum('bcv,vd->bcd', d_logits, kernel, preferred_element_type=jnp.float32).astype(h.dtype)
    return (d_kernel, d_bias), (sums, d_h)

  zeros = (jnp.zeros(kernel.shape[::-1], jnp.float32), jnp.zeros(bias.shape, jnp.float32))
  xs = (_chunks(hidden, chunk), _chunks(labels, chunk), _chunks(weights, chunk))
  (d_kernel, d_bias), (sums, d_hidden) = lax.scan(body, zeros, xs)
  each = tuple(jnp.sum(x, axis=0) for x in sums)  # over the chunks: (B,) each
  if not grads:
    return each, None
  return each, (_unchunk(d_hidden), d_kernel.T.astype(kernel.dtype), d_bias.astype(bias.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _projected_loss(hidden, kernel, bias, labels, weights, z_loss, chunk, with_bias):
  """(total loss, per-example sums): the primal, when nothing is differentiated (evaluation)."""
  each, _ = _projected_scan(hidden, kernel, bias, labels, weights, z_loss, chunk, with_bias, grads=False)
  return jnp.sum(each[0]), each


def _projected_loss_fwd(hidden, kernel, bias, labels, weights, z_loss, chunk, with_bias):
  each, grads = _projected_scan(hidden, kernel, bias, labels, weights, z_loss, chunk, with_bias, grads=True)
  return (jnp.sum(each[0]), each), grads


def _projected_loss_bwd(z_loss, chunk, with_bias, grads, cotangents):
  del z_loss, chunk, with_bias  # static: already in the gradients
  g = cotangents[0]  # of the total loss; the per-example sums are metrics (see projected_cross_entropy_sums)
  return tuple(g.astype(x.dtype) * x for x in grads) + (None, None)


_projected_loss.defvjp(_projected_loss_fwd, _projected_loss_bwd)


def loss_sums(kind: LossKind, logits: jax.Array, batch: Mapping[str, jax.Array], z_loss: float = 0.0, *,
              per_example: bool = False) -> Sums:
  """The objective's sums ('loss', 'z_loss', 'weight', and 'correct' except for regression): over the
  batch, or with `per_example` (eval.py, which scores every example once) over each example, (B,) each.

  logits: (B, T, V) for TOKENS and PRETRAINING (its MLM part: `sentence_order_sums` adds the rest), (B, C) for
  CLASSIFICATION, (B, 1) for REGRESSION, (B, T, 2) for SPAN (the model's 'logits').
  """
  match kind:
    case LossKind.TOKENS | LossKind.PRETRAINING:
      return cross_entropy_sums(logits, batch['targets'], batch['loss_weights'], z_loss, per_example=per_example)
    case LossKind.CLASSIFICATION:
      labels = batch['label']
      return cross_entropy_sums(logits, jnp.maximum(labels, 0), _labelled(labels), z_loss, per_example=per_example)
    case LossKind.SPAN:
      return span_sums(logits, batch['start_positions'], batch['end_positions'], z_loss, per_example=per_example)
    case LossKind.REGRESSION:
      squared = jnp.square(logits[:, 0].astype(jnp.float32) - batch['label'].astype(jnp.float32))
      ones = jnp.ones_like(squared)
      if per_example:
        return {'loss': squared, 'z_loss': jnp.zeros_like(squared), 'weight': ones}
      return {'loss': jnp.sum(squared), 'z_loss': jnp.zeros((), jnp.float32), 'weight': jnp.sum(ones)}
  raise ValueError(f'unknown loss kind {kind}')


def sentence_order_sums(logits: jax.Array, labels: jax.Array, *, per_example: bool = False) -> Sums:
  """ALBERT's sentence order: cross-entropy of logits (B, 2) against labels (B,) int (0 = in order, 1 = swapped),
  each example weighing 1, as sums over the batch (or, with `per_example`, (B,) each): 'sop_loss', 'sop_correct',
  'sop_weight'. No z-loss: it keeps a large vocabulary's log Z from drifting; two logits need none."""
  sums = cross_entropy_sums(logits, labels, jnp.ones(labels.shape, jnp.float32), per_example=per_example)
  return {'sop_loss': sums['loss'], 'sop_correct': sums['correct'], 'sop_weight': sums['weight']}
