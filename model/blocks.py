"""The transformer layer (self-attention, optional cross-attention, feed-forward) and the stack of them.

One `TransformerLayer` serves the encoder, the decoder-only model and the encoder-decoder decoder; a
`Stack` owns what is per-stack: absolute positions and token types, the relative-position bias (computed
once and shared by all layers, as in T5), the masks, the decode cache bookkeeping, and the final norm.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from model import masks
from model import partitioning as P
from model.attention import MultiHeadAttention
from model.config import Inputs, ModelConfig, NormPlacement, Position, Remat
from model.layers import Dropout, FeedForward, dense, embed, norm, partitioned
from model.positions import interpolate_grid_positions, offset_positions, relative_position_bucket, sinusoidal_table

_REMAT_POLICIES = {
    Remat.FULL: jax.checkpoint_policies.nothing_saveable,
    Remat.DOTS: jax.checkpoint_policies.checkpoint_dots,
    Remat.DOTS_NO_BATCH: jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}
# TransformerLayer.__call__ argument indices of `deterministic` and `rows`, counting self as 0 (for nn.remat).
_DETERMINISTIC_ARGNUM, _ROWS_ARGNUM = 7, 9


class TransformerLayer(nn.Module):
  """x -> x + SelfAttn -> x + CrossAttn (if cross) -> x + FFN, each sub-layer pre- or post-normed."""

  cfg: ModelConfig
  cross: bool
  causal_flag: bool = False  # self-attention's causal triangle is the kernel's flag, not in self_mask (masks.py)

  @nn.compact
  def __call__(self, x: jax.Array, self_mask: jax.Array | None, self_bias: jax.Array | None,
               memory: jax.Array | None, cross_mask: jax.Array | None, positions: jax.Array,
               deterministic: bool, decode_index: jax.Array | None,
               rows: int | None = None) -> tuple[jax.Array, None]:
    """x: (B, T, D); memory: (B, S, D) encoder output. Returns (x, None), the shape nn.scan expects.

    rows: compute the output of the first `rows` positions only, (B, rows, D): their queries attend over
    the keys and values of every position, so the result is exactly those rows of the full output.
    """
    cfg = self.cfg
    if rows is not None and decode_index is not None:
      raise ValueError('rows (the first positions only) is for a whole-sequence pass, not cached decoding')
    attn_kw = dict(num_heads=cfg.num_heads, head_dim=cfg.kv_dim, use_bias=cfg.use_bias,
                   scale_logits=cfg.scale_attention, dropout_rate=cfg.attention_dropout_rate,
                   init_std=cfg.init_std, impl=cfg.attention_impl, dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    rope = cfg.rope_base if cfg.position is Position.ROPE else None

    def sublayer(x: jax.Array, name: str, fn, residual_rows: int | None = None) -> jax.Array:
      """x + fn(x), pre- or post-normed; fn may return the first `residual_rows` positions only."""
      norm_ = norm(cfg.norm, eps=cfg.norm_eps, use_bias=cfg.use_bias, dtype=cfg.dtype,
                   param_dtype=cfg.param_dtype, name=f'{name}_norm')
      drop = Dropout(cfg.dropout_rate)
      residual = x if residual_rows is None else x[:, :residual_rows]
      if cfg.norm_placement is NormPlacement.PRE:
        return residual + drop(fn(norm_(x)), deterministic=deterministic)
      return norm_(residual + drop(fn(x), deterministic=deterministic))

    def self_attn(h: jax.Array) -> jax.Array:
      attn = MultiHeadAttention(rope_base=rope, name='self_attn', **attn_kw)
      if rows is None:
        return attn(h, mask=self_mask, bias=self_bias, q_positions=positions, deterministic=deterministic,
                    decode_index=decode_index, causal=self.causal_flag)
      # The first rows' queries over every position's keys and values: the same projections, read as
      # attention with a separate key/value input.
      return attn(h[:, :rows], h, mask=_first_query_rows(self_mask, rows), bias=_first_query_rows(self_bias, rows),
                  q_positions=positions[:, :rows], kv_positions=positions, deterministic=deterministic,
                  causal=self.causal_flag)  # the first rows: the top-left triangle is theirs

    # Everything after self-attention is per position, so it runs on the kept rows alone.
    x = sublayer(x, 'self_attn', self_attn, rows)
    if self.cross:
      # Cross-attention has no position information of its own (T5, Vaswani et al.).
      x = sublayer(x, 'cross_attn', lambda h: MultiHeadAttention(name='cross_attn', **attn_kw)(
          h, memory, mask=cross_mask, deterministic=deterministic))
    ffn = FeedForward(d_ff=cfg.d_ff, activation=cfg.activation, gated=cfg.gated_ffn, use_bias=cfg.use_bias,
                      dropout_rate=cfg.ffn_dropout_rate, init_std=cfg.init_std, dtype=cfg.dtype,
                      param_dtype=cfg.param_dtype, name='ffn')
    x = sublayer(x, 'ffn', lambda h: ffn(h, deterministic))
    x = nn.with_logical_constraint(x, (P.BATCH, P.LENGTH, P.EMBED))
    return x, None


def _first_query_rows(t: jax.Array | None, rows: int) -> jax.Array | None:
  """A mask or bias broadcastable to (B, N, T, S), cut to its first `rows` queries (axis -2)."""
  return t if t is None or t.shape[-2] == 1 else t[..., :rows, :]


class Stack(nn.Module):
  """Embedded tokens -> (+ positions, token types, norm, dropout) -> layers -> final norm (pre-norm)."""

  cfg: ModelConfig
  num_layers: int
  causal: bool  # decoder self-attention: a token sees only the past
  cross: bool  # cross-attention over `memory` (the encoder-decoder's decoder)
  # Each parameter set runs this many layers in a row (ALBERT's cross-layer sharing): num_layers // repeats sets.
  repeats: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, *, valid: jax.Array | None = None, segment_ids: jax.Array | None = None,
               positions: jax.Array | None = None, token_type_ids: jax.Array | None = None,
               memory: jax.Array | None = None, memory_valid: jax.Array | None = None,
               memory_segment_ids: jax.Array | None = None, deterministic: bool = True,
               decode: bool = False, first_rows: int | None = None,
               grid: tuple[int, int] | None = None) -> jax.Array:
    """x: (B, T, D) token embeddings; valid: (B, T) real tokens; segment_ids: (B, T) packed examples (0 =
    padding); positions: (B, T) per-token positions (default 0..T-1, or the cache slots when decoding);
    memory: (B, S, D) encoder output with memory_valid / memory_segment_ids. Returns (B, T, D).

    first_rows: return only the first `first_rows` positions, (B, first_rows, D), exactly those rows of the
    full output. Unscanned, the last layer then computes them alone (every earlier layer's keys and values
    feed them): for a classifier reading [CLS], most of that layer's work is skipped. A scanned stack runs
    every layer alike and cuts the output.

    grid: model.inputs=patches: x is [CLS] and a (rows, columns) grid of patches, row-major. The position table
    is laid out on the config's grid; another grid reads it interpolated (`interpolate_grid_positions`).
    """
    cfg = self.cfg
    length = x.shape[1]
    slots = jnp.arange(length)
    decode_index = None
    if decode:
      if not self.causal:
        raise ValueError('decode=True needs a causal (decoder) stack')
      if segment_ids is not None:
        raise ValueError('packed segment ids are not supported while decoding with the cache')
      decode_index, valid, key_slots = self._advance_cache(valid, x.shape[0], length)
      slots = decode_index + slots
      self_mask, causal_flag = masks.self_attention_mask(causal=True, kv_valid=valid, q_slots=slots,
                                                         k_slots=key_slots)
    else:
      key_slots = slots
      self_mask, causal_flag = masks.self_attention_mask(causal=self.causal, kv_valid=valid, segment_ids=segment_ids)
    # Rows of the learned table with an offset (RoBERTa): counted over the mask from it, padding just below.
    table_rows = offset_positions(positions, valid, cfg.position_offset, length) if cfg.position_offset else None
    if positions is None:
      positions = slots[None, :]
    cross_mask = None
    if self.cross:
      cross_mask = masks.attention_mask(kv_valid=memory_valid, q_segment_ids=segment_ids,
                                        kv_segment_ids=memory_segment_ids)

    x = self._embed_positions(x, positions if table_rows is None else table_rows, token_type_ids,
                              key_slots.shape[0], grid)
    x = Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
    if cfg.embedding_size is not None:  # ALBERT: the E-wide embeddings into the d_model-wide stack
      x = dense(cfg.d_model, (None, P.EMBED), use_bias=cfg.use_bias, std=cfg.init_std, dtype=cfg.dtype,
                param_dtype=cfg.param_dtype, name='embed_proj')(x)
    x = nn.with_logical_constraint(x, (P.BATCH, P.LENGTH, P.EMBED))
    bias = self._relative_bias(slots, key_slots) if cfg.position is Position.RELATIVE else None
    x = self._layers(x, self_mask, causal_flag, bias, memory, cross_mask, positions, deterministic, decode_index,
                     first_rows)
    if cfg.norm_placement is NormPlacement.PRE:
      x = norm(cfg.norm, eps=cfg.norm_eps, use_bias=cfg.use_bias, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
               name='final_norm')(x)
    if cfg.final_dropout:
      x = Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
    return x

  def _advance_cache(self, valid: jax.Array | None, batch: int,
                     length: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Decode bookkeeping: the write index and which cache slots hold real tokens. The first (init) call
    fixes the cache length to that call's input length."""
    index_var = self.variable('cache', 'index', lambda: jnp.zeros((), jnp.int32))
    valid_var = self.variable('cache', 'key_valid', jnp.zeros, (batch, length), bool)
    new_valid = jnp.ones((batch, length), bool) if valid is None else valid
    index = index_var.value
    valid_var.value = lax.dynamic_update_slice(valid_var.value, new_valid, (0, index))
    index_var.value = index + length
    return index, valid_var.value, jnp.arange(valid_var.value.shape[1])

  def _embed_positions(self, x: jax.Array, positions: jax.Array, token_type_ids: jax.Array | None,
                       max_slots: int, grid: tuple[int, int] | None) -> jax.Array:
    cfg = self.cfg
    if (grid is not None) != (cfg.inputs is Inputs.PATCHES):
      raise ValueError(f'Stack: a patch grid is given for, and only for, model.inputs=patches (got grid={grid})')
    kw = dict(std=cfg.init_std, dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    if grid is not None:  # an image: the table's [CLS] row and grid, resized to this image's grid if it differs
      table = embed(cfg.position_rows, cfg.embed_width, (None, P.EMBED), name='position_embed', **kw).embedding
      x = x + interpolate_grid_positions(table, cfg.patch_grid, grid).astype(x.dtype)
      return self._embed_norm(x)
    if cfg.position in (Position.LEARNED, Position.SINUSOIDAL) and max_slots + cfg.position_offset > cfg.max_len:
      offset = f' from row model.position_offset={cfg.position_offset}' if cfg.position_offset else ''
      raise ValueError(f'sequence length {max_slots}{offset} exceeds model.max_len={cfg.max_len}, the size of the '
                       'position table: shorten the sequences or raise model.max_len')
    if cfg.position is Position.LEARNED:
      x = x + embed(cfg.max_len, cfg.embed_width, (None, P.EMBED), name='position_embed', **kw)(positions)
    elif cfg.position is Position.SINUSOIDAL:
      table = jnp.asarray(sinusoidal_table(cfg.max_len, cfg.embed_width))
      x = x + table[positions].astype(x.dtype)
    if cfg.num_token_types:
      ids = jnp.zeros(x.shape[:2], jnp.int32) if token_type_ids is None else token_type_ids
      x = x + embed(cfg.num_token_types, cfg.embed_width, (None, P.EMBED), name='type_embed', **kw)(ids)
    return self._embed_norm(x)

  def _embed_norm(self, x: jax.Array) -> jax.Array:
    cfg = self.cfg
    if cfg.embed_norm:
      x = norm(cfg.norm, eps=cfg.norm_eps, use_bias=cfg.use_bias, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
               name='embed_norm')(x)
    return x

  def _relative_bias(self, q_slots: jax.Array, k_slots: jax.Array) -> jax.Array:
    """T5 bias from bucketed key-minus-query distances: (1, N, T, S), shared by every layer of the stack."""
    cfg = self.cfg
    table = self.param('relpos_bias', partitioned(nn.initializers.normal(cfg.init_std), (None, P.HEADS)),
                       (cfg.relative_buckets, cfg.num_heads), cfg.param_dtype)
    buckets = relative_position_bucket(k_slots[None, :] - q_slots[:, None], bidirectional=not self.causal,
                                       num_buckets=cfg.relative_buckets, max_distance=cfg.relative_max_distance)
    return jnp.transpose(table[buckets], (2, 0, 1))[None].astype(cfg.dtype)

  def _layers(self, x, self_mask, causal_flag, bias, memory, cross_mask, positions, deterministic, decode_index,
              first_rows):
    cfg = self.cfg
    layer_cls = TransformerLayer
    if cfg.remat is not Remat.NONE:
      layer_cls = nn.remat(layer_cls, policy=_REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers,
                           # rows is passed (and static) in the unscanned stack only
                           static_argnums=(_DETERMINISTIC_ARGNUM,) + (() if cfg.scan_layers else (_ROWS_ARGNUM,)))
    args = (self_mask, bias, memory, cross_mask, positions, deterministic, decode_index)
    # Shared layers (repeats > 1) keep the unshared tree, one entry per parameter set ('layers' stacked over the
    # groups, or layers_{g}), so stack_layers, the HF tables and checkpoints treat them alike. Scanned, each set
    # is a scan over its applications with the parameters broadcast (one copy; compile time flat in depth).
    groups = self.num_layers // self.repeats
    if cfg.scan_layers:
      body = layer_cls
      if self.repeats > 1:  # one parameter set, applied `repeats` times: its parameters broadcast to every step
        body = nn.scan(layer_cls, variable_broadcast='params', split_rngs={'params': False, 'dropout': True},
                       in_axes=(nn.broadcast,) * len(args), length=self.repeats)
      scanned = nn.scan(body, variable_axes={'params': 0, 'cache': 0},
                        split_rngs={'params': True, 'dropout': True}, in_axes=(nn.broadcast,) * len(args),
                        length=groups, metadata_params={nn.PARTITION_NAME: P.LAYERS})
      x, _ = scanned(self.cfg, self.cross, causal_flag, name='layers')(x, *args)
      return x if first_rows is None else x[:, :first_rows]
    for g in range(groups):
      layer = layer_cls(self.cfg, self.cross, causal_flag, name=f'layers_{g}')
      for r in range(self.repeats):  # calling one module again re-uses its parameters
        rows = first_rows if (g, r) == (groups - 1, self.repeats - 1) else None
        x, _ = layer(x, *args, rows)
    return x
