"""`generate`: decoding a `model.Transformer` on its key/value cache, one jitted `lax.while_loop`.

Decoder-only prompts arrive right-padded; they are left-padded internally, so that every row's last prompt
token sits in the same cache slot and every new token of every row is written to one shared slot per step:

  right-padded  [a b c _ _]      left-padded  [_ _ a b c]   slots 0..P-2 prefilled in one call with the mask
                [d e f g h]                   [d e f g h]   (pad slots stay invalid in the cache's key_valid),
                                                            then c / h fed at slot P-1, new tokens after it.

Each row's tokens carry their own positions (slot - left padding), passed as position ids, so learned,
sinusoidal and rotary positions are those the row has alone; T5's relative bias depends only on slot
differences, which left-padding keeps equal to position differences. No model change was needed.
An encoder-decoder encodes the source once and starts its decoder from cfg.decoder_start_id.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from decoding.beam import Axes, beam_search
from decoding.config import GenerateConfig, Strategy
from decoding.sampling import State, StepFn, sample_loop
from model.config import Family, Head, Position
from model.params import Params, init_cache
from model.transformer import Transformer


def generate(module: Transformer, params: Params, batch: dict[str, jax.Array], cfg: GenerateConfig,
             rng: jax.Array | None = None) -> dict[str, jax.Array]:
  """Continues the prompts (decoder-only) or translates the sources (encoder-decoder) of `batch`.

  batch: input_ids (B, P) int with attention_mask (B, P), 1 on real tokens: decoder-only prompts, right-padded,
  each with at least one real token; or the encoder-decoder's source. rng: needed by strategy=sample.
  Returns tokens (B, N) int32 (N = cfg.max_new_tokens) padded with cfg.pad_id after EOS, lengths (B,) int32
  (EOS included), scores (B,) float32 (log-probability of `tokens` under the model; for beam search divided by
  the length penalty), and steps () int32, the decoding steps run (fewer than N when all rows ended early).
  """
  ids, mask = _checked_inputs(module, batch, cfg)
  if cfg.strategy is Strategy.SAMPLE and rng is None:
    raise ValueError('generate.strategy=sample needs an rng')
  return _generate(module, cfg, params, ids, mask, rng)


def _checked_inputs(module: Transformer, batch: dict[str, jax.Array],
                    cfg: GenerateConfig) -> tuple[jax.Array, jax.Array]:
  """input_ids and attention_mask (ones if absent) as int32, after the checks that need no compile."""
  mcfg = module.cfg
  if not mcfg.has_decoder or mcfg.head is not Head.LM:
    raise ValueError(f'generate needs a model with a decoder and head=lm, got family={mcfg.family.value}, '
                     f'head={mcfg.head.value}')
  if cfg.top_k > mcfg.vocab_size:
    raise ValueError(f'generate.top_k={cfg.top_k}: must be <= model.vocab_size={mcfg.vocab_size}')
  ids = jnp.asarray(batch['input_ids'], jnp.int32)
  mask = batch.get('attention_mask')
  mask = jnp.ones_like(ids) if mask is None else jnp.asarray(mask, jnp.int32)
  if ids.ndim != 2 or mask.shape != ids.shape:
    raise ValueError(f'input_ids must be (batch, length) with an attention_mask of the same shape, got '
                     f'{ids.shape} and {mask.shape}')
  if mcfg.family is Family.DECODER and not isinstance(mask, jax.core.Tracer):  # checkable outside a jit
    real = np.asarray(mask).astype(bool)
    empty = np.flatnonzero(~real.any(1))
    if empty.size:
      raise ValueError(f'decoder-only prompts need at least one real token; rows {empty.tolist()} have none')
    holes = np.flatnonzero((real[:, 1:] & ~real[:, :-1]).any(1))
    if holes.size:
      raise ValueError(f'decoder-only prompts must be right-padded (attention_mask 1...1 0...0); rows '
                       f'{holes.tolist()} are not')
  # The cache has (prompt width - 1 + max_new_tokens) slots for a decoder-only model; an absolute position
  # table must cover them (the model would refuse too, but could not name the generate setting).
  slots = cfg.max_new_tokens + (ids.shape[1] - 1 if mcfg.family is Family.DECODER else 0)
  if mcfg.position in (Position.LEARNED, Position.SINUSOIDAL) and slots > mcfg.max_len:
    raise ValueError(f'generate.max_new_tokens={cfg.max_new_tokens}: with a prompt of width {ids.shape[1]}, '
                     f'decoding needs {slots} positions but model.max_len={mcfg.max_len}; lower max_new_tokens')
  return ids, mask


@functools.partial(jax.jit, static_argnums=(0, 1))
def _generate(module: Transformer, cfg: GenerateConfig, params: Params, ids: jax.Array, mask: jax.Array,
              rng: jax.Array | None) -> dict[str, jax.Array]:
  beams = cfg.num_beams if cfg.strategy is Strategy.BEAM else 1
  if module.cfg.family is Family.DECODER:
    step_fn, tokens, state, axes = _decoder_start(module, params, ids, mask, cfg.max_new_tokens)
  else:
    step_fn, tokens, state, axes = _encoder_decoder_start(module, params, ids, mask, cfg, beams)
  if cfg.strategy is Strategy.BEAM:
    return beam_search(step_fn, tokens, state, cfg, state_axes=axes)
  return sample_loop(step_fn, tokens, state, cfg, rng)


@functools.lru_cache(maxsize=64)  # modules hash by their config; tracing the model for shapes is not free
def _cache_layout(module: Transformer, max_length: int, encoder_length: int | None) -> tuple[Any, Axes]:
  """The cache's leaf shapes for a batch of 1, and the batch axis of every leaf (None for the write index),
  found by tracing `init_cache` once with a symbolic batch size: scanned layers put a layer axis first, so the
  batch axis is not always 0."""
  (batch,) = jax.export.symbolic_shape('batch')
  shapes = jax.eval_shape(lambda: init_cache(module, batch, max_length, encoder_length))

  def axis(leaf: jax.ShapeDtypeStruct) -> int | None:
    symbolic = [i for i, d in enumerate(leaf.shape) if not isinstance(d, int)]
    if len(symbolic) > 1 or any(str(leaf.shape[i]) != 'batch' for i in symbolic):
      raise ValueError(f'a cache leaf of shape {leaf.shape} has no single batch axis')
    return symbolic[0] if symbolic else None

  one = jax.tree.map(lambda s: jax.ShapeDtypeStruct(tuple(d if isinstance(d, int) else 1 for d in s.shape),
                                                     s.dtype), shapes)
  return one, jax.tree.map(axis, shapes)


def cache_batch_axes(module: Transformer, max_length: int, encoder_length: int | None = None) -> Axes:
  """The batch axis of every leaf of `model.init_cache(module, ...)`, None where a leaf has none: the
  `state_axes` that beam search needs to repeat and reorder the cache along the beams."""
  return _cache_layout(module, max_length, encoder_length)[1]


def _zero_cache(module: Transformer, batch: int, max_length: int,
                encoder_length: int | None = None) -> tuple[Params, Axes]:
  """`model.init_cache(module, batch, ...)` and its batch axes, from the cached layout (no tracing)."""
  one, axes = _cache_layout(module, max_length, encoder_length)

  def zeros(axis: int | None, leaf: jax.ShapeDtypeStruct) -> jax.Array:
    shape = list(leaf.shape)
    if axis is not None:
      shape[axis] = batch
    return jnp.zeros(shape, leaf.dtype)

  return jax.tree.map(zeros, axes, one, is_leaf=lambda x: x is None), axes


def _decode_step(module: Transformer, params: Params, **fixed: Any) -> StepFn:
  """step_fn over the cache: state = {'cache', 'positions' (B,) of the fed tokens}; `fixed` are further
  apply() arguments (the encoder output and its mask)."""
  decoder_only = module.cfg.family is Family.DECODER

  def step(tokens: jax.Array, state: State) -> tuple[jax.Array, State]:
    ids, positions = tokens[:, None], state['positions'][:, None]  # (B, 1)
    kw = dict(input_ids=ids, position_ids=positions) if decoder_only else dict(
        decoder_input_ids=ids, decoder_position_ids=positions)
    out, variables = module.apply({'params': params, 'cache': state['cache']}, decode=True, mutable=['cache'],
                                  **kw, **fixed)
    return out['logits'][:, 0], {'cache': variables['cache'], 'positions': state['positions'] + 1}

  return step


def _decoder_start(module: Transformer, params: Params, ids: jax.Array, mask: jax.Array,
                   max_new_tokens: int) -> tuple[StepFn, jax.Array, State, Axes]:
  """Left-pads the right-padded prompts (B, P), prefills all but their last token into a cache of
  P - 1 + max_new_tokens slots, and returns the step function, its first inputs (each row's last prompt
  token), its state and the state's batch axes."""
  batch, width = ids.shape
  lengths = mask.sum(1)  # (B,)
  shift = width - lengths  # left padding of each row
  slots = jnp.arange(width)[None, :]
  source = (slots - shift[:, None]) % width  # rolls each row right by its shift: pads wrap to the front
  ids = jnp.take_along_axis(ids, source, axis=1)
  valid = (slots >= shift[:, None]).astype(jnp.int32)
  positions = jnp.maximum(slots - shift[:, None], 0)  # pad slots get 0: in range, and never attended
  cache, cache_axes = _zero_cache(module, batch, width - 1 + max_new_tokens)
  if width > 1:
    _, variables = module.apply({'params': params, 'cache': cache}, input_ids=ids[:, :-1],
                                attention_mask=valid[:, :-1], position_ids=positions[:, :-1], decode=True,
                                mutable=['cache'])
    cache = variables['cache']
  state = {'cache': cache, 'positions': lengths - 1}
  axes = {'cache': cache_axes, 'positions': 0}
  return _decode_step(module, params), ids[:, -1], state, axes


def _encoder_decoder_start(module: Transformer, params: Params, ids: jax.Array, mask: jax.Array,
                           cfg: GenerateConfig, beams: int) -> tuple[StepFn, jax.Array, State, Axes]:
  """Encodes the source once; the encoder output is repeated for the `beams` beams of each row (row b*K + k)
  and closed over by the step function, since it never changes and needs no reordering."""
  batch, source_length = ids.shape
  encoded = module.apply({'params': params}, ids, mask, method=Transformer.encode)  # (B, S, D)
  encoded, mask = jnp.repeat(encoded, beams, axis=0), jnp.repeat(mask, beams, axis=0)
  step_fn = _decode_step(module, params, encoder_hidden=encoded, attention_mask=mask)
  cache, cache_axes = _zero_cache(module, batch, cfg.max_new_tokens, source_length)
  state = {'cache': cache, 'positions': jnp.zeros((batch,), jnp.int32)}
  axes = {'cache': cache_axes, 'positions': 0}
  return step_fn, jnp.full((batch,), cfg.decoder_start_id, jnp.int32), state, axes
