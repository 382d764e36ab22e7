"""Position encodings against closed forms and the reference T5 bucketing."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from model.positions import apply_rope, offset_positions, relative_position_bucket, sinusoidal_table


def test_sinusoidal_closed_form():
  table = sinusoidal_table(50, 16)
  pos, i = 37, 3
  assert table.shape == (50, 16)
  np.testing.assert_allclose(table[pos, 2 * i], np.sin(pos / 10000 ** (2 * i / 16)), rtol=1e-6)
  np.testing.assert_allclose(table[pos, 2 * i + 1], np.cos(pos / 10000 ** (2 * i / 16)), rtol=1e-6)
  np.testing.assert_array_equal(table[0, 0::2], 0.0)
  np.testing.assert_array_equal(table[0, 1::2], 1.0)


def test_offset_positions_count_real_tokens_from_the_offset():
  """RoBERTa's rows (offset 2 = pad id 1 + 1): real tokens count from the offset over the mask, wherever the
  padding is; padding reads offset - 1; given (packed) positions are offset as they are."""
  valid = jnp.asarray([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 0, 1, 0, 1]], bool)
  np.testing.assert_array_equal(offset_positions(None, valid, 2, 5),
                                [[2, 3, 4, 1, 1], [1, 1, 2, 3, 4], [2, 1, 3, 1, 4]])
  packed, packed_valid = jnp.asarray([[0, 1, 0, 1, 2, 0]]), jnp.asarray([[1, 1, 1, 1, 1, 0]], bool)  # 2 examples, pad
  np.testing.assert_array_equal(offset_positions(packed, packed_valid, 1, 6), [[1, 2, 1, 2, 3, 0]])
  np.testing.assert_array_equal(offset_positions(None, None, 2, 3), [[2, 3, 4]])


@pytest.mark.parametrize('bidirectional', [True, False])
@pytest.mark.parametrize('num_buckets,max_distance', [(32, 128), (8, 20)])
def test_relative_buckets_match_reference(bidirectional, num_buckets, max_distance):
  torch = pytest.importorskip('torch')
  from transformers.models.t5.modeling_t5 import T5Attention
  rel = np.arange(-300, 301)
  want = T5Attention._relative_position_bucket(torch.tensor(rel), bidirectional=bidirectional,
                                               num_buckets=num_buckets, max_distance=max_distance).numpy()
  got = relative_position_bucket(jnp.asarray(rel), bidirectional=bidirectional, num_buckets=num_buckets,
                                 max_distance=max_distance)
  np.testing.assert_array_equal(np.asarray(got), want)
  assert got.min() >= 0 and got.max() < num_buckets


def test_rope_is_a_rotation_that_sees_only_relative_positions():
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.normal(size=(1, 1, 2, 8)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(1, 1, 2, 8)), jnp.float32)

  def score(m: int, n: int) -> np.ndarray:
    qm = apply_rope(q, jnp.array([[m]]), 10000.0)
    kn = apply_rope(k, jnp.array([[n]]), 10000.0)
    return np.asarray(jnp.sum(qm * kn, -1))

  np.testing.assert_allclose(score(3, 1), score(12, 10), rtol=1e-5)
  np.testing.assert_allclose(score(0, 0), np.asarray(jnp.sum(q * k, -1)), rtol=1e-6)
  assert not np.allclose(score(3, 1), score(1, 3))
  rotated = apply_rope(q, jnp.array([[5]]), 10000.0)
  np.testing.assert_allclose(jnp.linalg.norm(rotated, axis=-1), jnp.linalg.norm(q, axis=-1), rtol=1e-6)


def test_rope_matches_complex_multiplication():
  """x_j + i x_{j+d/2} times exp(i p theta_j), theta_j = base^(-2j/d)."""
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 3, 1, 8)).astype(np.float32)
  pos = np.array([[0, 4, 9], [2, 3, 100]])
  z = (x[..., :4] + 1j * x[..., 4:]) * np.exp(1j * pos[..., None, None] * 10000.0 ** (-np.arange(0, 8, 2) / 8))
  want = np.concatenate([z.real, z.imag], -1)
  np.testing.assert_allclose(np.asarray(apply_rope(jnp.asarray(x), jnp.asarray(pos), 10000.0)), want,
                             atol=1e-5)
