"""Scaled dot-product multi-head attention: one module for encoder self-attention, causal decoder
self-attention (with a key/value cache for incremental decoding) and encoder-decoder cross-attention.

Masks and additive biases are built by the caller (`masks.py`, the relative-position bias of a stack), so
the module only projects, optionally rotates (RoPE), attends and projects back.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from model import partitioning as P
from model.config import AttentionImpl
from model.layers import Dtype, dense, dropout
from model.positions import apply_rope


def attend(q: jax.Array, k: jax.Array, v: jax.Array, *, mask: jax.Array | None, bias: jax.Array | None,
           scale: float, impl: AttentionImpl, causal: bool = False, dropout_rate: float = 0.0,
           dropout_rng: jax.Array | None = None) -> jax.Array:
  """softmax(scale * q k^T + bias, masked) v.

  q: (B, T, N, H); k, v: (B, S, N, H); mask: bool, broadcastable to (B, N, T, S), True = may attend;
  bias: broadcastable to (B, N, T, S). causal: query t also sees only keys s <= t (the top-left triangle, ANDed
  with the mask), applied by the kernel (is_causal; cuDNN skips the blocks above the diagonal). Returns (B, T, N, H).
  """
  if bias is not None:
    bias = bias.astype(q.dtype)
  if dropout_rng is None or dropout_rate == 0.0:
    if impl is AttentionImpl.CUDNN and mask is not None:
      # cuDNN reads the mask as an additive bias, which must span (T, S): a key-validity mask (B, 1, 1, S) is
      # refused unbroadcast ("Bias must have same seq length as QKV", jax issue 28974).
      mask = jnp.broadcast_to(mask, mask.shape[:-2] + (q.shape[1], k.shape[1]))
    return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=scale, is_causal=causal,
                                        implementation=impl.value)
  # jax.nn.dot_product_attention has no dropout on the probabilities; BERT-style training needs it.
  if causal:  # the triangle jax.nn.dot_product_attention builds for is_causal on its XLA route
    triangle = jnp.tril(jnp.ones((q.shape[1], k.shape[1]), bool))
    mask = triangle if mask is None else mask & triangle
  logits = jnp.einsum('BTNH,BSNH->BNTS', q, k, preferred_element_type=jnp.float32) * scale
  if bias is not None:
    logits = logits + bias.astype(jnp.float32)
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  probs = dropout(probs, dropout_rate, dropout_rng).astype(v.dtype)
  return jnp.einsum('BNTS,BSNH->BTNH', probs, v)


class MultiHeadAttention(nn.Module):
  """Multi-head attention with head width independent of the model width (T5's d_kv).

  Parameters: query/key/value kernels (embed, heads, kv), out kernel (heads, kv, embed), biases if asked.
  """

  num_heads: int
  head_dim: int
  use_bias: bool
  scale_logits: bool  # False for T5: the 1/sqrt(head_dim) lives in the query initialisation instead.
  dropout_rate: float
  init_std: float
  impl: AttentionImpl
  dtype: Dtype
  param_dtype: Dtype
  rope_base: float | None = None  # rotate queries and keys (RoPE) when set.

  @nn.compact
  def __call__(self, x: jax.Array, memory: jax.Array | None = None, *, mask: jax.Array | None = None,
               bias: jax.Array | None = None, q_positions: jax.Array | None = None,
               kv_positions: jax.Array | None = None, deterministic: bool = True,
               decode_index: jax.Array | None = None, causal: bool = False) -> jax.Array:
    """x: (B, T, D) queries; memory: (B, S, D) keys/values for cross-attention (None = self-attention).

    With `decode_index` (self-attention only), the new keys/values are written into the cache at that
    index and the queries attend over the whole cache; `mask` must then cover (T, cache length), causality
    included. causal: query t sees keys 0..t only, the kernel's flag (`attend`; see masks.self_attention_mask).
    """
    d_model = x.shape[-1]
    kw = dict(use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype)
    # T5 does not scale logits, so its query init carries the 1/sqrt(head_dim) (Mesh TF's convention).
    q_std = self.init_std if self.scale_logits else self.init_std * self.head_dim ** -0.5
    heads = (self.num_heads, self.head_dim)
    qkv_names = (P.EMBED, P.HEADS, P.KV)
    kv_in = x if memory is None else memory
    q = dense(heads, qkv_names, std=q_std, name='query', **kw)(x)
    # A key bias adds q . b to every key's score of a query alike, which the softmax cancels: its exact
    # gradient is zero, and the round-off it gets instead would be blown up by Adam's normalisation into a
    # random walk that differs between machines. It stays (HF checkpoints have it) but takes no gradient;
    # under RoPE the bias is rotated by the key's position, no longer cancels, and trains.
    k = dense(heads, qkv_names, std=self.init_std, name='key', bias_grad=self.rope_base is not None, **kw)(kv_in)
    v = dense(heads, qkv_names, std=self.init_std, name='value', **kw)(kv_in)
    if self.rope_base is not None:
      q = apply_rope(q, q_positions, self.rope_base)
      k = apply_rope(k, q_positions if memory is None else kv_positions, self.rope_base)
    q, k, v = (nn.with_logical_constraint(t, (P.BATCH, P.LENGTH, P.HEADS, P.KV)) for t in (q, k, v))

    if decode_index is not None:
      if memory is not None:
        raise ValueError('the key/value cache is for self-attention; cross-attention reads the encoder output')
      if causal:
        raise ValueError('causal=True with the key/value cache: the queries sit at an offset in the cache, so '
                         'the mask must hold the triangle (masks.self_attention_mask with q_slots, k_slots)')
      k, v = self._update_cache(k, v, decode_index)

    dropout_rng = None
    if not deterministic and self.dropout_rate > 0.0:
      dropout_rng = self.make_rng('dropout')
    out = attend(q, k, v, mask=mask, bias=bias, scale=self.head_dim ** -0.5 if self.scale_logits else 1.0,
                 impl=self.impl, causal=causal, dropout_rate=self.dropout_rate, dropout_rng=dropout_rng)
    out = nn.with_logical_constraint(out, (P.BATCH, P.LENGTH, P.HEADS, P.KV))
    return dense(d_model, (P.HEADS, P.KV, P.EMBED), axis=(-2, -1), std=self.init_std, name='out', **kw)(out)

  def _update_cache(self, k: jax.Array, v: jax.Array, index: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Writes k, v (B, T, N, H) at `index` of the cache and returns the full cache (B, S, N, H).

    The cache is created by the first call with the shape of that call's keys: initialise it with an
    input as long as the longest sequence to decode (see `model.init_cache`).
    """
    cached_k = self.variable('cache', 'cached_key', jnp.zeros, k.shape, k.dtype)
    cached_v = self.variable('cache', 'cached_value', jnp.zeros, v.shape, v.dtype)
    cached_k.value = lax.dynamic_update_slice(cached_k.value, k.astype(cached_k.value.dtype), (0, index, 0, 0))
    cached_v.value = lax.dynamic_update_slice(cached_v.value, v.astype(cached_v.value.dtype), (0, index, 0, 0))
    return cached_k.value, cached_v.value
