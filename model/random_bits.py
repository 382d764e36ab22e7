"""Random 32-bit words for dropout masks: `jax.random.bits(key, shape, uint32)`, bit for bit, computed faster.

Why not jax.random.bits itself: on the CPU, JAX 0.10.2 lowers its threefry hash as a rolled loop of 5 steps
(`use_rolled_loops=True` for platform 'cpu', to keep compiles small), so every step writes the hash's two
state arrays to memory and reads them back. The same hash written out here in jnp operations is one
elementwise loop that XLA fuses with the comparison after it: 2M dropout probabilities take 3.1 ms instead
of 6.4 ms on one core. On GPUs JAX already emits the unrolled hash, so the program is the same there.

The words equal jax.random.bits' under JAX's default `jax_threefry_partitionable=True` (each word the XOR of
the two outputs of threefry2x32(key, (hi, lo) of the element's flat index)); tests/test_attention.py checks it.
Keys of other implementations (train.prng_impl rbg / unsafe_rbg), and arrays of 2^32 elements or more (the
flat index needs its high word), go to jax.random.bits.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))  # Salmon et al.'s Threefry-2x32, 20 rounds in 5 groups of 4
_PARITY = np.uint32(0x1BD11BDA)


def _rotate_left(x: jax.Array, bits: int) -> jax.Array:
  return (x << np.uint32(bits)) | (x >> np.uint32(32 - bits))


def threefry2x32(key: tuple[jax.Array, jax.Array], x0: jax.Array, x1: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The Threefry-2x32 hash of the counter pairs (x0, x1) under a key of two words, unrolled."""
  ks = (key[0], key[1], key[0] ^ key[1] ^ _PARITY)
  x0, x1 = x0 + ks[0], x1 + ks[1]
  for group in range(5):
    for rotation in _ROTATIONS[group % 2]:
      x0 = x0 + x1
      x1 = x0 ^ _rotate_left(x1, rotation)
    x0 = x0 + ks[(group + 1) % 3]
    x1 = x1 + ks[(group + 2) % 3] + np.uint32(group + 1)
  return x0, x1


def words(rng: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """uint32 words of `shape`, equal to jax.random.bits(rng, shape, jnp.uint32); `rng` a key (typed or raw)."""
  if not jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    rng = jax.random.wrap_key_data(rng)
  size = math.prod(shape)
  if str(jax.random.key_impl(rng)) != 'threefry2x32' or size >= 2**32 or not jax.config.jax_threefry_partitionable:
    return jax.random.bits(rng, shape, jnp.uint32)
  key = jax.random.key_data(rng)
  # The flat (row-major) index's low word, from one iota per axis rather than a reshaped 1-D iota, so that
  # under a sharded mask each device computes its own part; its high word is 0.
  index = jnp.zeros(shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(len(shape))):
    index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * np.uint32(stride)
    stride *= shape[axis]
  high, low = threefry2x32((key[0], key[1]), jnp.zeros_like(index), index)
  return high ^ low
