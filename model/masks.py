"""Boolean attention masks, (B, 1, T, S) with True = may attend, built from per-token facts."""

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


def token_validity(attention_mask: jax.Array | None, segment_ids: jax.Array | None) -> jax.Array | None:
  """(B, T) bool of real tokens: from an HF-style 0/1 attention mask, or segment ids (0 = padding)."""
  valid = None
  if attention_mask is not None:
    valid = attention_mask.astype(bool)
  if segment_ids is not None:
    seg_valid = segment_ids > 0
    valid = seg_valid if valid is None else valid & seg_valid
  return valid
