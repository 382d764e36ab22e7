"""Attention against a naive einsum + softmax reference, with and without masks, bias and segment ids."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model import layers, masks, random_bits
from model.attention import MultiHeadAttention, attend
from model.config import AttentionImpl


def naive_attention(q, k, v, mask=None, bias=None, scale=1.0):
  """softmax(scale q k^T + bias) v in float64 numpy, masked positions excluded from the softmax."""
  q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
  logits = np.einsum('btnh,bsnh->bnts', q, k) * scale
  if bias is not None:
    logits = logits + np.asarray(bias, np.float64)
  if mask is not None:
    logits = np.where(np.broadcast_to(mask, logits.shape), logits, -np.inf)
  logits = logits - logits.max(-1, keepdims=True)
  probs = np.exp(logits)
  probs /= probs.sum(-1, keepdims=True)
  return np.einsum('bnts,bsnh->btnh', probs, v)


B, T, S, N, H, D = 2, 5, 7, 3, 4, 10


@pytest.fixture(scope='module')
def qkv():
  rng = np.random.default_rng(0)
  return (rng.normal(size=(B, T, N, H)).astype(np.float32), rng.normal(size=(B, S, N, H)).astype(np.float32),
          rng.normal(size=(B, S, N, H)).astype(np.float32))


def _mask(kind: str):
  rng = np.random.default_rng(1)
  kv_valid = np.ones((B, S), bool)
  kv_valid[0, 5:] = False  # padded keys
  q_seg = np.array([[1, 1, 2, 2, 2], [1, 1, 1, 1, 1]])
  kv_seg = np.array([[1, 1, 1, 2, 2, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
  match kind:
    case 'none':
      return None
    case 'padding':
      return masks.attention_mask(kv_valid=jnp.asarray(kv_valid))
    case 'segments':
      return masks.attention_mask(kv_valid=jnp.asarray(kv_seg > 0), q_segment_ids=jnp.asarray(q_seg),
                                  kv_segment_ids=jnp.asarray(kv_seg))
    case 'causal':  # queries at slots 2..6 of a 7-slot sequence (as when decoding after a prefix)
      return masks.attention_mask(kv_valid=jnp.asarray(kv_valid), q_slots=jnp.arange(2, 7), k_slots=jnp.arange(S))
    case 'random':
      m = rng.random((B, 1, T, S)) < 0.7
      m[..., 0] = True  # every query sees at least one key
      return jnp.asarray(m)


@pytest.mark.parametrize('mask_kind', ['none', 'padding', 'segments', 'causal', 'random'])
@pytest.mark.parametrize('with_bias', [False, True])
@pytest.mark.parametrize('scale', [1.0, H ** -0.5])
def test_attend_matches_naive(qkv, mask_kind, with_bias, scale):
  q, k, v = qkv
  mask = _mask(mask_kind)
  bias = np.random.default_rng(2).normal(size=(1, N, T, S)).astype(np.float32) if with_bias else None
  got = attend(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), mask=mask, bias=bias, scale=scale,
               impl=AttentionImpl.XLA)
  want = naive_attention(q, k, v, None if mask is None else np.asarray(mask), bias, scale)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('padding', [False, True])
@pytest.mark.parametrize('with_bias', [False, True])
@pytest.mark.parametrize('dropout_rate', [0.0, 0.3])
def test_causal_flag_equals_the_dense_causal_mask(padding, with_bias, dropout_rate):
  """attend(causal=True) with the key-validity mask alone gives the values and gradients of the dense causal
  mask (masks.attention_mask with slots), on the fused XLA route and, with the same key, the dropout route."""
  rng = np.random.default_rng(6)
  q, k, v = (jnp.asarray(rng.normal(size=(B, S, N, H)), jnp.float32) for _ in range(3))  # self-attention: T == S
  kv_valid = np.ones((B, S), bool)
  kv_valid[0, 4:] = False  # a right-padded row
  valid = jnp.asarray(kv_valid) if padding else None
  bias = jnp.asarray(rng.normal(size=(1, N, S, S)), jnp.float32) if with_bias else None  # T5's relative bias
  flag_mask, flag = masks.self_attention_mask(causal=True, kv_valid=valid)
  assert flag and (flag_mask is None) != padding and (flag_mask is None or flag_mask.shape == (B, 1, 1, S))
  dense = masks.attention_mask(kv_valid=valid, q_slots=jnp.arange(S), k_slots=jnp.arange(S))
  kw = dict(scale=H ** -0.5, impl=AttentionImpl.XLA, dropout_rate=dropout_rate,
            dropout_rng=jax.random.key(3) if dropout_rate else None)

  def loss(fn, q, k, v, bias):
    return jnp.sum(jnp.sin(fn(q, k, v, bias)))

  with_flag = lambda q, k, v, bias: attend(q, k, v, mask=flag_mask, bias=bias, causal=True, **kw)
  with_dense = lambda q, k, v, bias: attend(q, k, v, mask=dense, bias=bias, **kw)
  np.testing.assert_allclose(with_flag(q, k, v, bias), with_dense(q, k, v, bias), atol=1e-6, rtol=0)
  argnums = (0, 1, 2, 3) if with_bias else (0, 1, 2)
  got = jax.grad(functools.partial(loss, with_flag), argnums)(q, k, v, bias)
  want = jax.grad(functools.partial(loss, with_dense), argnums)(q, k, v, bias)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, atol=1e-6, rtol=0)
  # ... and the flag did the masking: without it the first query sees the future.
  unmasked = attend(q, k, v, mask=flag_mask, bias=bias, **kw)
  assert not np.allclose(unmasked[:, 0], with_dense(q, k, v, bias)[:, 0], atol=1e-3)


def test_cached_decoding_keeps_the_triangle_in_the_mask():
  """Queries at an offset in the cache see keys up to their own slot, not the kernel's top-left triangle."""
  mask, flag = masks.self_attention_mask(causal=True, q_slots=jnp.arange(2, 4), k_slots=jnp.arange(6))
  assert not flag
  np.testing.assert_array_equal(mask[0, 0], np.arange(6)[None, :] <= np.arange(2, 4)[:, None])
  assert masks.self_attention_mask(causal=False) == (None, False)
  with pytest.raises(ValueError, match='give both q_slots and k_slots'):
    masks.self_attention_mask(causal=True, q_slots=jnp.arange(2))
  with pytest.raises(ValueError, match='causal=True with the key/value cache'):
    x = jnp.ones((B, T, D))
    _module().init(jax.random.key(0), x, decode_index=jnp.zeros((), jnp.int32), causal=True)


def test_cudnn_route_gets_the_key_mask_over_every_query(monkeypatch):
  """cuDNN refuses a (B, 1, 1, S) mask (it becomes a bias that must span (T, S), jax issue 28974): attend
  broadcasts it over the queries there, and passes causal on as is_causal. Checked at the call, as no GPU runs
  the tests."""
  seen = {}

  def spy(q, k, v, *, bias, mask, scale, is_causal, implementation):
    seen.update(mask=mask.shape, is_causal=is_causal, implementation=implementation)
    return q

  monkeypatch.setattr(jax.nn, 'dot_product_attention', spy)
  q = jnp.ones((B, S, N, H), jnp.bfloat16)
  mask, flag = masks.self_attention_mask(causal=True, kv_valid=jnp.ones((B, S), bool))
  attend(q, q, q, mask=mask, bias=None, scale=1.0, impl=AttentionImpl.CUDNN, causal=flag)
  assert seen == dict(mask=(B, 1, S, S), is_causal=True, implementation='cudnn')
  attend(q, q, q, mask=mask, bias=None, scale=1.0, impl=AttentionImpl.XLA, causal=flag)
  assert seen == dict(mask=(B, 1, 1, S), is_causal=True, implementation='xla')  # XLA broadcasts it itself


def test_attention_dropout_is_unbiased(qkv):
  """The dropout path (probabilities dropped and rescaled) averages to the deterministic output."""
  q, k, v = (jnp.asarray(t) for t in qkv)
  mask = _mask('padding')
  deterministic = attend(q, k, v, mask=mask, bias=None, scale=H ** -0.5, impl=AttentionImpl.XLA)
  rngs = jax.random.split(jax.random.key(0), 4000)
  samples = jax.vmap(lambda r: attend(q, k, v, mask=mask, bias=None, scale=H ** -0.5, impl=AttentionImpl.XLA,
                                      dropout_rate=0.3, dropout_rng=r))(rngs)
  assert not np.allclose(samples[0], deterministic, atol=1e-3)  # dropout did something
  np.testing.assert_allclose(samples.mean(0), deterministic, atol=0.05)


@pytest.mark.parametrize('rate', [0.1, 0.5])
def test_dropout_masks_keep_one_minus_rate_and_preserve_the_mean(rate):
  """Two 16-bit uniforms per PRNG word (model.layers.dropout_keep): the kept share is 1 - rate to sampling
  noise, the scale is exactly 1 / (the kept probability), an odd last axis works, and masks differ by key.
  On an array sharded over 8 devices the mask is the one drawn on a single device."""
  shape = (64, 3, 129)  # 24,768 elements, odd last axis
  keep, scale = layers.dropout_keep(jax.random.key(0), rate, shape)
  threshold = round((1 - rate) * 65536)
  assert keep.shape == shape and scale == 65536 / threshold
  # The definition, pinned (runs keep their masks across changes of how they are computed): the low halves
  # of jax.random.bits' words for the first half of the last axis, the high halves for the rest.
  words = np.asarray(jax.random.bits(jax.random.key(0), shape[:-1] + (65,), jnp.uint32))
  want = np.concatenate([(words & 0xFFFF) < threshold, (words >> 16) < threshold], axis=-1)[..., :129]
  np.testing.assert_array_equal(np.asarray(keep), want)
  assert abs(float(keep.mean()) - (1 - rate)) < 4 * np.sqrt(rate * (1 - rate) / keep.size)
  assert not np.array_equal(keep, layers.dropout_keep(jax.random.key(1), rate, shape)[0])
  x = jnp.ones(shape)
  out = layers.dropout(x, rate, jax.random.key(0))
  np.testing.assert_allclose(float(out.mean()), float(keep.mean()) * scale, rtol=1e-6)
  sharding = jax.sharding.NamedSharding(jax.make_mesh((8,), ('data',)), jax.sharding.PartitionSpec('data'))
  sharded = jax.jit(lambda k: layers.dropout_keep(k, rate, shape)[0], out_shardings=sharding)(jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(sharded), np.asarray(keep))


@pytest.mark.parametrize('shape', [(), (7,), (3, 5), (2, 3, 4, 5), (32, 4, 16, 9)])
def test_random_words_are_jax_random_bits(shape):
  """model.random_bits.words, the unrolled threefry behind the dropout masks, gives jax.random.bits' words bit
  for bit: typed and raw keys, folded keys, under jit and sharded over 8 devices; an rbg key (no threefry)
  takes jax.random.bits itself."""
  keys = [jax.random.key(0), jax.random.fold_in(jax.random.key(123), 9), jax.random.PRNGKey(7),
          jax.random.key(5, impl='rbg')]
  for key in keys:
    want = np.asarray(jax.random.bits(key, shape, jnp.uint32))
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda k: random_bits.words(k, shape))(key)), want)
  if shape and shape[0] % 8 == 0:
    sharding = jax.sharding.NamedSharding(jax.make_mesh((8,), ('data',)), jax.sharding.PartitionSpec('data'))
    sharded = jax.jit(lambda k: random_bits.words(k, shape), out_shardings=sharding)(keys[0])
    np.testing.assert_array_equal(np.asarray(sharded), np.asarray(jax.random.bits(keys[0], shape, jnp.uint32)))


def _module(**kw) -> MultiHeadAttention:
  defaults = dict(num_heads=N, head_dim=H, use_bias=True, scale_logits=True, dropout_rate=0.0, init_std=0.5,
                  impl=AttentionImpl.XLA, dtype=jnp.float32, param_dtype=jnp.float32)
  return MultiHeadAttention(**(defaults | kw))


def _project(params, x, memory):
  """The module's projections written out by hand."""
  p = jax.tree.map(np.asarray, params)
  q = np.einsum('btd,dnh->btnh', x, p['query']['kernel']) + p['query']['bias']
  k = np.einsum('bsd,dnh->bsnh', memory, p['key']['kernel']) + p['key']['bias']
  v = np.einsum('bsd,dnh->bsnh', memory, p['value']['kernel']) + p['value']['bias']
  return q, k, v


@pytest.mark.parametrize('cross', [False, True])
@pytest.mark.parametrize('mask_kind', ['none', 'segments'])
def test_module_self_and_cross_attention_match_naive(cross, mask_kind):
  rng = np.random.default_rng(3)
  x = rng.normal(size=(B, T, D)).astype(np.float32)
  memory = rng.normal(size=(B, S, D)).astype(np.float32) if cross else None
  mask = _mask(mask_kind)
  if not cross and mask is not None:
    mask = mask[..., :T]
  bias = rng.normal(size=(1, N, T, S if cross else T)).astype(np.float32)
  module = _module()
  params = nn.unbox(module.init(jax.random.key(0), x, memory)['params'])
  got = module.apply({'params': params}, x, memory, mask=mask, bias=bias)
  q, k, v = _project(params, x, x if memory is None else memory)
  ctx = naive_attention(q, k, v, None if mask is None else np.asarray(mask), bias, H ** -0.5)
  want = np.einsum('btnh,nhd->btd', ctx, np.asarray(params['out']['kernel'])) + np.asarray(params['out']['bias'])
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=1e-4)


def test_head_dim_independent_of_width_and_unscaled_logits():
  """T5: head_dim * num_heads != d_model, no 1/sqrt(head_dim), no biases."""
  x = np.random.default_rng(4).normal(size=(B, T, D)).astype(np.float32)
  module = _module(head_dim=6, use_bias=False, scale_logits=False)
  params = nn.unbox(module.init(jax.random.key(1), x)['params'])
  assert params['query']['kernel'].shape == (D, N, 6) and params['out']['kernel'].shape == (N, 6, D)
  assert 'bias' not in params['query']
  got = module.apply({'params': params}, x)
  p = jax.tree.map(np.asarray, params)
  q, k, v = (np.einsum('btd,dnh->btnh', x, p[n]['kernel']) for n in ('query', 'key', 'value'))
  want = np.einsum('btnh,nhd->btd', naive_attention(q, k, v, scale=1.0), p['out']['kernel'])
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('rope,cross', [(False, False), (False, True), (True, False)])  # RoPE: self-attention
def test_key_bias_takes_no_gradient_unless_rotated(rope, cross):
  """The softmax cancels a key bias (it adds q . b to every key's score of a query), so its exact gradient is
  zero; it is held at exactly zero instead of round-off that Adam would amplify. Under RoPE it matters."""
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
  memory = jnp.asarray(rng.normal(size=(B, S, D)), jnp.float32) if cross else None
  module = _module(rope_base=10_000.0 if rope else None)
  positions = jnp.broadcast_to(jnp.arange(T), (B, T)) if rope else None
  params = nn.unbox(module.init(jax.random.key(0), x, memory, q_positions=positions)['params'])
  params = jax.tree.map(lambda p: p + 0.1, params)  # a non-zero key bias, as an HF checkpoint has

  def loss(p):
    out = module.apply({'params': p}, x, memory, q_positions=positions)
    return jnp.sum(jnp.sin(out))

  grads = jax.grad(loss)(params)
  if rope:
    assert float(jnp.abs(grads['key']['bias']).max()) > 1e-3
  else:
    assert not np.any(np.asarray(grads['key']['bias']))  # exactly zero
    # ... and the bias still changes nothing the model computes, so it may be kept as loaded.
    moved = jax.tree.map(lambda p: p, params)
    moved['key']['bias'] = params['key']['bias'] + 3.0
    np.testing.assert_allclose(loss(moved), loss(params), rtol=1e-5)
  assert float(jnp.abs(grads['value']['bias']).max()) > 1e-3 and float(jnp.abs(grads['query']['bias']).max()) > 1e-3
