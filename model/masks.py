"""Boolean attention masks, (B, 1, T, S) with True = may attend, built from per-token facts; and the rule for
when a causal self-attention's triangle is the kernel's flag instead of part of the mask."""

from __future__ import annotations

import jax


def attention_mask(*, kv_valid: jax.Array | None = None, q_segment_ids: jax.Array | None = None,
                   kv_segment_ids: jax.Array | None = None, q_slots: jax.Array | None = None,
                   k_slots: jax.Array | None = None) -> jax.Array | None:
  """AND of: key is a real token; query and key are in the same packed segment; key is not in the future.

  kv_valid: (B, S) bool. q_segment_ids: (B, T), kv_segment_ids: (B, S) ints (packed examples).
  q_slots: (T,), k_slots: (S,) sequence slots; when given, a query at slot t only sees keys at slots <= t.
  Returns None when nothing is masked, so the attention kernel can skip the mask.
  """
  mask = None

  def conj(m: jax.Array) -> None:
    nonlocal mask
    mask = m if mask is None else mask & m

  if kv_valid is not None:
    conj(kv_valid.astype(bool)[:, None, None, :])
  if q_segment_ids is not None:
    if kv_segment_ids is None:
      raise ValueError('segment ids must be given for both queries and keys')
    conj(q_segment_ids[:, None, :, None] == kv_segment_ids[:, None, None, :])
  if q_slots is not None:
    conj((k_slots[None, :] <= q_slots[:, None])[None, None])
  return mask


def self_attention_mask(*, causal: bool, kv_valid: jax.Array | None = None, segment_ids: jax.Array | None = None,
                        q_slots: jax.Array | None = None,
                        k_slots: jax.Array | None = None) -> tuple[jax.Array | None, bool]:
  """A self-attention's dense mask (or None) and whether the kernel applies the causal triangle (`attend`'s causal).

  kv_valid: (B, S) bool; segment_ids: (B, T) packed examples (T == S). q_slots: (T,), k_slots: (S,) are given
  when the queries sit at an offset in a longer sequence of keys (decoding with the cache, `causal` only).

  A whole-sequence causal pass (query t and key t are position t) leaves the triangle to the kernel:
  jax.nn.dot_product_attention(is_causal=True) is cuDNN's CAUSAL mask type, which skips the blocks above the
  diagonal, where the same triangle in a dense mask reaches cuDNN as an additive bias over all of them. Key
  validity and packed segments stay dense, (B, 1, 1, S) and (B, 1, T, S). Queries at an offset see keys up to
  their own slot, not the kernel's top-left triangle, so the cache path's mask keeps the triangle.
  """
  if (q_slots is None) != (k_slots is None):
    raise ValueError('self_attention_mask: give both q_slots and k_slots (decoding with the cache) or neither')
  if q_slots is not None and not causal:
    raise ValueError('self_attention_mask: query and key slots are for causal decoding with the cache')
  dense = attention_mask(kv_valid=kv_valid, q_segment_ids=segment_ids, kv_segment_ids=segment_ids,
                         q_slots=q_slots, k_slots=k_slots)
  return dense, causal and q_slots is None


def token_validity(attention_mask: jax.Array | None, segment_ids: jax.Array | None) -> jax.Array | None:
  """(B, T) bool of real tokens: from an HF-style 0/1 attention mask, or segment ids (0 = padding)."""
  valid = None
  if attention_mask is not None:
    valid = attention_mask.astype(bool)
  if segment_ids is not None:
    seg_valid = segment_ids > 0
    valid = seg_valid if valid is None else valid & seg_valid
  return valid
