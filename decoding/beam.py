"""Beam search with a GNMT length penalty, as a pure function of a step function.

As in the Flax WMT example and T5X, each batch row keeps two pools of `num_beams` (K) hypotheses: the live
ones, still growing, ranked by log-probability, and the finished ones (ended by EOS, or cut at
max_new_tokens), ranked by length-penalised score. Every step expands each live hypothesis by every token,
takes the 2K best (at most K of them end in EOS, so K live ones always survive), moves the EOS ones into the
finished pool and keeps the K best others alive.

Stopping: a row is done when its finished pool is full and no live hypothesis can still beat the worst
finished one. Log-probabilities only fall as a hypothesis grows and, with alpha >= 0, the penalty is largest
at the longest length, so the best any extension of the top live hypothesis can score is
live_log_prob / penalty(max_new_tokens) (the Flax WMT criterion; T5X's default is the same bound). The loop
exits when every row is done, or after max_new_tokens steps, when the surviving live hypotheses are scored as
finished (truncated) ones, so the result is the best of all hypotheses the search kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from decoding.config import GenerateConfig, Strategy
from decoding.sampling import State, StepFn

# Per-leaf batch axes of a state: an int for every leaf, or a pytree prefix of the state with int leaves and
# None where a leaf has no batch axis (e.g. the cache's write index).
Axes = Any


def length_penalty(length: jax.Array | int, alpha: float) -> jax.Array:
  """GNMT (Wu et al. 2016) / T5X brevity penalty ((5 + length) / 6) ** alpha; scores are log p / penalty."""
  return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def map_batch(fn: Callable[[jax.Array, int], jax.Array], state: State, axes: Axes) -> State:
  """fn(leaf, batch_axis) on every leaf of `state` that has a batch axis (see `Axes`); others unchanged."""
  def subtree(axis: int | None, sub: State) -> State:
    return sub if axis is None else jax.tree.map(lambda x: fn(x, axis), sub)

  return jax.tree.map(subtree, axes, state, is_leaf=lambda a: a is None)


def _gather(x: jax.Array, index: jax.Array) -> jax.Array:
  """x: (B, C, ...), index: (B, K) -> (B, K, ...), x[b, index[b, k]]."""
  return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)


def _init(init_tokens: jax.Array, init_state: State, cfg: GenerateConfig, axes: Axes) -> dict:
  batch, beams, steps = init_tokens.shape[0], cfg.num_beams, cfg.max_new_tokens
  # All K beams start identical; only beam 0 may expand at the first step, or the pool would fill with copies.
  live_log_probs = jnp.full((batch, beams), -jnp.inf, jnp.float32).at[:, 0].set(0.0)
  pad = jnp.full((batch, beams, steps), cfg.pad_id, jnp.int32)
  return dict(step=jnp.zeros((), jnp.int32), last=jnp.repeat(init_tokens.astype(jnp.int32)[:, None], beams, 1),
              state=map_batch(lambda x, a: jnp.repeat(x, beams, axis=a), init_state, axes),  # row b*K + k
              live=pad, live_log_probs=live_log_probs, finished=pad,
              finished_scores=jnp.full((batch, beams), -jnp.inf, jnp.float32))


def _step(step_fn: StepFn, c: dict, cfg: GenerateConfig, axes: Axes) -> dict:
  """Expand every live hypothesis by every token; update both pools; reorder the state along the beams."""
  batch, beams = c['live_log_probs'].shape
  step = c['step']
  logits, state = step_fn(c['last'].reshape(batch * beams), c['state'])
  vocab = logits.shape[-1]
  if vocab < 2:  # 2K candidates out of K * vocab
    raise ValueError(f'beam search needs a vocabulary of at least 2 tokens, got {vocab}')
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(batch, beams, vocab)
  candidates = (c['live_log_probs'][:, :, None] + log_probs).reshape(batch, beams * vocab)
  top_log_probs, top = lax.top_k(candidates, 2 * beams)  # (B, 2K)
  parent, token = top // vocab, (top % vocab).astype(jnp.int32)
  seqs = _gather(c['live'], parent).at[:, :, step].set(token)  # (B, 2K, N)
  ends = token == cfg.eos_id if cfg.eos_id is not None else jnp.zeros_like(token, bool)

  # Finished pool: EOS hypotheses, and at the last step every hypothesis (cut at max_new_tokens).
  done = ends | (step + 1 == cfg.max_new_tokens)
  new_scores = jnp.where(done, top_log_probs / length_penalty(step + 1, cfg.length_penalty), -jnp.inf)
  finished_scores, keep = lax.top_k(jnp.concatenate([c['finished_scores'], new_scores], 1), beams)
  finished = _gather(jnp.concatenate([c['finished'], seqs], 1), keep)

  # Live pool: the best K that did not end; the state of each is that of its parent.
  live_log_probs, keep = lax.top_k(jnp.where(ends, -jnp.inf, top_log_probs), beams)
  parent = _gather(parent, keep)  # (B, K)
  rows = (jnp.arange(batch)[:, None] * beams + parent).reshape(-1)
  state = map_batch(lambda x, a: jnp.take(x, rows, axis=a), state, axes)
  return dict(step=step + 1, last=_gather(token, keep), state=state, live=_gather(seqs, keep),
              live_log_probs=live_log_probs, finished=finished, finished_scores=finished_scores)


def _searching(c: dict, cfg: GenerateConfig) -> jax.Array:
  """True while some row's live hypotheses might still beat its worst finished one (see the module doc)."""
  best_possible = c['live_log_probs'][:, 0] / length_penalty(cfg.max_new_tokens, cfg.length_penalty)
  worst_finished = c['finished_scores'][:, -1]  # -inf until the pool is full
  return (c['step'] < cfg.max_new_tokens) & jnp.any(best_possible > worst_finished)


def beam_search(step_fn: StepFn, init_tokens: jax.Array, init_state: State, cfg: GenerateConfig,
                state_axes: Axes = 0, early_stopping: bool = True) -> dict[str, jax.Array]:
  """Beam search with cfg.num_beams (K) beams per row and length penalty cfg.length_penalty.

  init_tokens: (B,) the first inputs of step_fn; init_state: step_fn's state for B rows, with batch axes
  `state_axes`. step_fn sees B*K rows, row b*K + k being beam k of row b (the state is repeated K times along
  its batch axes, and reordered along them as beams are kept). early_stopping=False runs all max_new_tokens
  steps (the result is the same; tests compare). Returns the best hypothesis of each row:
  tokens (B, N) int32 padded with cfg.pad_id after EOS, lengths (B,) int32 (EOS included), scores (B,)
  float32 (log-probability / length penalty), and steps () int32, the number of step_fn calls.
  """
  if cfg.strategy is not Strategy.BEAM:
    raise ValueError(f'beam_search needs strategy=beam, got {cfg.strategy.value}; use sampling.sample_loop')
  searching = (lambda c: _searching(c, cfg)) if early_stopping else (lambda c: c['step'] < cfg.max_new_tokens)
  out = lax.while_loop(searching, lambda c: _step(step_fn, c, cfg, state_axes),
                       _init(init_tokens, init_state, cfg, state_axes))
  tokens = out['finished'][:, 0]  # top_k keeps the pool sorted, best first
  lengths = jnp.full(tokens.shape[:1], cfg.max_new_tokens, jnp.int32)
  if cfg.eos_id is not None:  # live hypotheses never hold EOS, so the first EOS ends a finished one
    is_eos = tokens == cfg.eos_id
    lengths = jnp.where(is_eos.any(1), jnp.argmax(is_eos, 1) + 1, lengths).astype(jnp.int32)
  return dict(tokens=tokens, lengths=lengths, scores=out['finished_scores'][:, 0], steps=out['step'])
