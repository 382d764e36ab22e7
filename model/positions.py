"""Position encodings: sinusoidal tables, offset rows of a learned table, T5 relative-position buckets and
rotary embeddings.

Learned absolute positions are a plain embedding table (see `blocks.Stack`); everything here is a pure
function of integer positions so that packed rows (per-example positions) and the KV cache (positions
offset by the cache index) use the same code as a plain forward pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def sinusoidal_table(length: int, dim: int, base: float = 10000.0) -> np.ndarray:
  """Vaswani et al. (2017) §3.5: PE[p, 2i] = sin(p / base^(2i/d)), PE[p, 2i+1] = cos(same). (length, dim)."""
  pos = np.arange(length, dtype=np.float64)[:, None]
  inv_freq = base ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)  # (ceil(dim/2),)
  table = np.zeros((length, dim), np.float64)
  table[:, 0::2] = np.sin(pos * inv_freq)
  table[:, 1::2] = np.cos(pos * inv_freq)[:, : dim // 2]
  return table.astype(np.float32)


def offset_positions(positions: jax.Array | None, valid: jax.Array | None, offset: int,
                     length: int) -> jax.Array:
  """Rows of a learned position table with `offset` >= 1 (RoBERTa; HF's create_position_ids_from_input_ids).

  A real token reads row offset + its position: the given one (packed rows restart it per example), else its
  index among the real tokens of its row, counted over `valid` as HF counts the non-pad ids. Padding reads
  row offset - 1 (HF's padding_idx). positions: (B, T) or None; valid: (B, T) bool or None (all real).
  Returns (B, T), or (1, T) when neither is given.
  """
  if positions is None:
    positions = jnp.arange(length)[None, :] if valid is None else jnp.cumsum(valid, axis=1, dtype=jnp.int32) - 1
  rows = positions + offset
  return rows if valid is None else jnp.where(valid, rows, offset - 1)


def relative_position_bucket(relative_position: jax.Array, *, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> jax.Array:
  """T5's bucketing of `key_pos - query_pos`: exact buckets for small distances, log-spaced up to max_distance.

  Matches `T5Attention._relative_position_bucket` of the reference implementation bucket for bucket.
  Bidirectional (encoder) buckets split in half by the sign; causal (decoder) ones see only the past.
  """
  bucket = jnp.zeros_like(relative_position)
  if bidirectional:
    num_buckets //= 2
    bucket += (relative_position > 0).astype(relative_position.dtype) * num_buckets
    distance = jnp.abs(relative_position)
  else:
    distance = -jnp.minimum(relative_position, 0)
  max_exact = num_buckets // 2
  is_small = distance < max_exact
  # Log-spaced buckets for max_exact <= distance < max_distance; the float math mirrors the reference.
  log_ratio = jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact) / float(np.log(max_distance / max_exact))
  large = max_exact + (log_ratio * (num_buckets - max_exact)).astype(relative_position.dtype)
  large = jnp.minimum(large, num_buckets - 1)
  return bucket + jnp.where(is_small, distance, large)


def rope_frequencies(positions: jax.Array, dim: int, base: float) -> tuple[jax.Array, jax.Array]:
  """cos and sin of position * base^(-2i/dim), (..., T, dim/2), in float32 whatever the compute dtype."""
  inv_freq = base ** (-jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
  angles = positions.astype(jnp.float32)[..., None] * inv_freq
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, positions: jax.Array, base: float) -> jax.Array:
  """Rotates (x[..., :d/2], x[..., d/2:]) pairs by position-dependent angles (the rotate-half convention).

  x: (B, T, N, H); positions: (B, T) or (1, T). Then q·k depends on positions only through their difference.
  """
  cos, sin = rope_frequencies(positions, x.shape[-1], base)  # (B, T, H/2)
  cos, sin = cos[:, :, None, :], sin[:, :, None, :]  # broadcast over heads
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


_CUBIC_A = -0.75  # torch's bicubic kernel (Keys' a), which HF's interpolate_pos_encoding uses


def bicubic_weights(size_in: int, size_out: int) -> np.ndarray:
  """(size_out, size_in) float64 matrix of torch's bicubic resize along one axis (`F.interpolate(mode='bicubic',
  align_corners=False)` given an output size: a = -0.75, no antialiasing, edge samples repeated)."""
  scale = size_in / size_out
  src = (np.arange(size_out) + 0.5) * scale - 0.5  # output pixel centres in input coordinates (not clamped)
  left = np.floor(src)
  t = src - left
  a = _CUBIC_A
  near = lambda x: ((a + 2) * x - (a + 3)) * x * x + 1  # |x| <= 1
  far = lambda x: ((a * x - 5 * a) * x + 8 * a) * x - 4 * a  # 1 < |x| < 2
  taps = np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=1)  # (size_out, 4)
  cols = np.clip(left[:, None].astype(int) + np.arange(-1, 3), 0, size_in - 1)
  weights = np.zeros((size_out, size_in))
  np.add.at(weights, (np.repeat(np.arange(size_out), 4), cols.reshape(-1)), taps.reshape(-1))
  return weights


def interpolate_grid_positions(table: jax.Array, grid: tuple[int, int], new_grid: tuple[int, int]) -> jax.Array:
  """A ViT position table for another patch grid, as HF's `interpolate_pos_encoding`: the [CLS] row kept, the
  grid rows resized bicubically (torch's kernel, `bicubic_weights`). table: (1 + rows * cols, D), the grid
  row-major after [CLS]; returns (1 + new_rows * new_cols, D), `table` itself when the grids are equal."""
  if tuple(new_grid) == tuple(grid):
    return table
  (rows, cols), (new_rows, new_cols) = grid, new_grid
  if table.shape[0] != 1 + rows * cols:
    raise ValueError(f'a position table of {table.shape[0]} rows is not [CLS] + a {rows}x{cols} grid')
  patches = table[1:].reshape(rows, cols, -1).astype(jnp.float32)
  wr = jnp.asarray(bicubic_weights(rows, new_rows), jnp.float32)
  wc = jnp.asarray(bicubic_weights(cols, new_cols), jnp.float32)
  resized = jnp.einsum('ir,jc,rcd->ijd', wr, wc, patches).astype(table.dtype)
  return jnp.concatenate([table[:1], resized.reshape(new_rows * new_cols, -1)], axis=0)
