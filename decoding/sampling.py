"""Greedy decoding and ancestral sampling (temperature, top-k, top-p) as pure functions of a step function.

The loop knows nothing about models: `step_fn(tokens (B,), state) -> (logits (B, V), state)` feeds the last
tokens and returns the next-token logits, so tests can drive it with a hand-made distribution. It runs as one
`lax.while_loop` that stops as soon as every row has emitted EOS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from decoding.config import GenerateConfig, Strategy

State = Any
StepFn = Callable[[jax.Array, State], tuple[jax.Array, State]]


def truncate_logits(logits: jax.Array, *, top_k: int = 0, top_p: float = 1.0) -> tuple[jax.Array, jax.Array]:
  """The candidates that top-k and then top-p keep, most likely first.

  logits: (B, V). Returns (values, ids), both (B, C) with C = top_k or V: the candidates' logits, -inf where
  top-p drops one, and their token ids. Top-k keeps exactly k tokens (ties broken towards the lower id, as
  `lax.top_k` does); top-p then keeps, of the renormalised top-k distribution, the smallest set of most likely
  tokens whose probability is >= top_p, which always includes the most likely token.
  """
  values, ids = lax.top_k(logits, top_k or logits.shape[-1])  # sorted, so the nucleus is a prefix
  if top_p < 1.0:
    probs = jax.nn.softmax(values, axis=-1)
    # Probability of the strictly more likely candidates: a candidate is needed while that is still < top_p.
    # It is exactly 0 for the top candidate (x - x), so that one is always kept.
    before = jnp.cumsum(probs, axis=-1) - probs
    values = jnp.where(before < top_p, values, -jnp.inf)
  return values, ids


def sample_token(logits: jax.Array, rng: jax.Array, *, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0) -> jax.Array:
  """One draw per row from softmax(logits / temperature), truncated to the top-k / top-p set and renormalised.

  logits: (B, V) float; rng: a PRNG key. Returns (B,) int32 token ids.
  """
  logits = logits.astype(jnp.float32) / temperature
  if top_k == 0 and top_p >= 1.0:  # nothing to truncate: skip the sort
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)
  values, ids = truncate_logits(logits, top_k=top_k, top_p=top_p)
  choice = jax.random.categorical(rng, values, axis=-1)  # (B,) index into the candidates
  return jnp.take_along_axis(ids, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)


def sample_loop(step_fn: StepFn, init_tokens: jax.Array, init_state: State, cfg: GenerateConfig,
                rng: jax.Array | None = None) -> dict[str, jax.Array]:
  """Greedy (cfg.strategy=greedy) or sampled (cfg.strategy=sample) decoding of cfg.max_new_tokens tokens.

  init_tokens: (B,) the first inputs of step_fn (the last prompt token, or the decoder start id); init_state:
  step_fn's state; rng: needed for sampling, each step uses fold_in(rng, step). Returns tokens (B, N) int32
  padded with cfg.pad_id after EOS, lengths (B,) int32 (EOS included), scores (B,) float32, the log-probability
  of the returned tokens under the model's own distribution (temperature 1, no truncation), and steps ()
  int32, the number of step_fn calls (fewer than N when every row finished early).
  """
  if cfg.strategy not in (Strategy.GREEDY, Strategy.SAMPLE):
    raise ValueError(f'sample_loop decodes greedy or sample, not {cfg.strategy.value}; use beam.beam_search')
  if cfg.strategy is Strategy.SAMPLE and rng is None:
    raise ValueError('strategy=sample needs an rng')
  batch, steps = init_tokens.shape[0], cfg.max_new_tokens
  carry = dict(step=jnp.zeros((), jnp.int32), last=init_tokens.astype(jnp.int32), state=init_state,
               tokens=jnp.full((batch, steps), cfg.pad_id, jnp.int32), finished=jnp.zeros((batch,), bool),
               lengths=jnp.zeros((batch,), jnp.int32), scores=jnp.zeros((batch,), jnp.float32))

  def cond(c: dict) -> jax.Array:
    return (c['step'] < steps) & ~jnp.all(c['finished'])

  def body(c: dict) -> dict:
    logits, state = step_fn(c['last'], c['state'])
    logits = logits.astype(jnp.float32)
    if cfg.strategy is Strategy.GREEDY:
      token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    else:
      token = sample_token(logits, jax.random.fold_in(rng, c['step']), temperature=cfg.temperature,
                           top_k=cfg.top_k, top_p=cfg.top_p)
    log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), token[:, None], axis=-1)[:, 0]
    alive = ~c['finished']
    token = jnp.where(alive, token, cfg.pad_id)
    finished = c['finished'] | (alive & (token == cfg.eos_id)) if cfg.eos_id is not None else c['finished']
    return dict(step=c['step'] + 1, last=token, state=state, tokens=c['tokens'].at[:, c['step']].set(token),
                finished=finished, lengths=c['lengths'] + alive, scores=c['scores'] + jnp.where(alive, log_prob, 0.0))

  out = lax.while_loop(cond, body, carry)
  return dict(tokens=out['tokens'], lengths=out['lengths'], scores=out['scores'], steps=out['step'])
