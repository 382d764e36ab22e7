"""Model-level properties of every family: causality, padding and packing invariance, incremental decoding
with the cache, and scanned / unscanned / rematerialised stacks giving the same numbers."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model
from model import attention, masks
from tests.tiny import DECODERS, TINY, VOCAB, inputs_for, params_for, random_ids


# RoBERTa's positions (rows from 2 over the mask; packed rows restart them): in the packing test only, as
# tests/test_hf.py compares its padding, left and right, with HF's at every position.
CFGS = dict(TINY, roberta=TINY['bert'].replace(position_offset=2, num_token_types=1))


@functools.cache
def params_of(name: str) -> dict:
  return params_for(CFGS[name])


@functools.cache
def forward(cfg: model.ModelConfig):
  module = model.build(cfg)
  return jax.jit(lambda params, kw: module.apply({'params': params}, **kw))


def _hidden_of(name: str, kw: dict) -> np.ndarray:
  return np.asarray(forward(CFGS[name])(params_of(name), kw)['hidden'])


# --- causality -------------------------------------------------------------------------------------------

@pytest.mark.parametrize('name', DECODERS + ('bert',))
def test_causality_by_gradient(name):
  """d hidden[t] / d embedding[t'] is zero exactly when t' > t, for decoders; never zero for an encoder."""
  cfg, params = TINY[name], params_of(name)
  module = model.build(cfg)
  length = 6
  ids = jnp.arange(1, length + 1)[None]  # distinct ids: embedding row i+1 feeds position i only
  inputs = inputs_for(cfg, jnp.full_like(ids, 7), decoder_ids=ids) if cfg.has_encoder else None
  inputs = inputs_for(cfg, ids) if cfg.family is not model.Family.ENCODER_DECODER else inputs

  def energy_per_position(table: jax.Array) -> jax.Array:  # (T,)
    p = dict(params, token_embed={'embedding': table})
    return jnp.sum(module.apply({'params': p}, **inputs)['hidden'][0] ** 2, axis=-1)

  jacobian = jax.jit(jax.jacrev(energy_per_position))(params['token_embed']['embedding'])  # (T, V, D)
  for t in range(length):
    per_position = np.abs(np.asarray(jacobian[t, 1:length + 1])).sum(-1)  # position i <- row i+1
    if cfg.family is model.Family.ENCODER:
      assert (per_position > 0).all()
    else:
      assert (per_position[:t + 1] > 0).all(), f'{name}: position {t} ignores its past'
      np.testing.assert_array_equal(per_position[t + 1:], 0.0, err_msg=f'{name}: position {t} sees the future')


# --- causal self-attention as the kernel's flag ----------------------------------------------------------

def _dense_triangle(*, causal, kv_valid=None, segment_ids=None, q_slots=None, k_slots=None):
  """masks.self_attention_mask as it was: the causal triangle always in the dense mask, never the flag."""
  if causal and q_slots is None:
    q_slots = k_slots = jnp.arange(kv_valid.shape[1])
  return masks.attention_mask(kv_valid=kv_valid, q_segment_ids=segment_ids, kv_segment_ids=segment_ids,
                              q_slots=q_slots if causal else None, k_slots=k_slots), False


@pytest.mark.parametrize('name', ['gpt2', 't5'])
@pytest.mark.parametrize('scan', [True, False])
def test_causal_flag_gives_the_dense_masks_logits(name, scan, monkeypatch):
  """A whole-sequence causal self-attention reaches attend as causal=True with the key-validity mask alone; its
  logits are the dense causal mask's for a right-padded batch, and a later token changes no earlier logit."""
  cfg = TINY[name].replace(scan_layers=scan)
  params = params_of(name) if scan else model.unstack_layers(params_of(name))
  ids = np.array(random_ids((3, 8), seed=11))
  ids[2] = ids[0]
  ids[2, 5] = ids[0, 5] % (VOCAB - 1) + 1  # row 2: row 0 with position 5 changed
  mask = jnp.asarray(np.arange(8)[None, :] < np.array([7, 4, 7])[:, None], jnp.int32)
  source = np.array(random_ids((3, 6), seed=12))
  source[2] = source[0]
  kw = (inputs_for(cfg, jnp.asarray(source), decoder_ids=jnp.asarray(ids), decoder_mask=mask)
        if cfg.has_encoder else inputs_for(cfg, jnp.asarray(ids), mask))
  calls = []
  attend = attention.attend

  def spy(q, k, v, *, mask, causal=False, **kw):
    calls.append((causal, None if mask is None else mask.shape))
    return attend(q, k, v, mask=mask, causal=causal, **kw)

  monkeypatch.setattr(attention, 'attend', spy)
  run = lambda: np.asarray(jax.jit(lambda p: model.build(cfg).apply({'params': p}, **kw)['logits'])(params))
  flag = run()
  assert (True, (3, 1, 1, 8)) in calls  # the decoder's self-attention: the flag and key validity alone
  assert all(shape != (3, 1, 8, 8) for _, shape in calls)  # no dense (T, S) mask is left
  monkeypatch.setattr(masks, 'self_attention_mask', _dense_triangle)
  calls.clear()
  dense = run()
  assert not any(causal for causal, _ in calls)
  real = np.asarray(mask, bool)
  np.testing.assert_allclose(flag[real], dense[real], atol=1e-6, rtol=0)
  np.testing.assert_array_equal(flag[2, :5], flag[0, :5])
  assert not np.allclose(flag[2, 5], flag[0, 5], atol=1e-3)


# --- padding and packing ---------------------------------------------------------------------------------

@pytest.mark.parametrize('name', list(TINY))
def test_padding_changes_nothing_at_real_positions(name):
  cfg = TINY[name]
  ids = random_ids((2, 6), seed=1)
  padded = jnp.concatenate([ids, random_ids((2, 3), seed=2)], axis=1)  # junk tokens, masked out
  mask = jnp.concatenate([jnp.ones((2, 6), jnp.int32), jnp.zeros((2, 3), jnp.int32)], axis=1)
  plain = _hidden_of(name, inputs_for(cfg, ids))
  with_padding = _hidden_of(name, inputs_for(cfg, padded, mask, decoder_mask=mask))
  np.testing.assert_allclose(with_padding[:, :6], plain, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize('name', list(CFGS))
def test_packed_examples_never_attend_to_each_other(name):
  """A row packing examples a (len 4) and b (len 3) gives each the output it has on its own."""
  cfg = CFGS[name]
  a, b = random_ids((1, 4), seed=3), random_ids((1, 3), seed=4)
  packed = jnp.concatenate([a, b, jnp.zeros((1, 2), jnp.int32)], axis=1)
  segments = jnp.array([[1, 1, 1, 1, 2, 2, 2, 0, 0]])
  positions = jnp.array([[0, 1, 2, 3, 0, 1, 2, 0, 0]])
  kw = {'input_ids': packed, 'segment_ids': segments, 'position_ids': positions}
  if cfg.family is model.Family.ENCODER_DECODER:
    kw |= {'decoder_input_ids': packed, 'decoder_segment_ids': segments, 'decoder_position_ids': positions}
  out = _hidden_of(name, kw)
  np.testing.assert_allclose(out[:, :4], _hidden_of(name, inputs_for(cfg, a)), atol=2e-5, rtol=2e-5)
  np.testing.assert_allclose(out[:, 4:7], _hidden_of(name, inputs_for(cfg, b)), atol=2e-5, rtol=2e-5)


# --- incremental decoding --------------------------------------------------------------------------------

@pytest.mark.parametrize('name', DECODERS)
@pytest.mark.parametrize('prefill', [1, 3])
def test_cached_decoding_equals_full_forward(name, prefill):
  """Prefill `prefill` tokens, then feed one token at a time through the cache: the logits equal those of
  one full forward pass, including a batch row whose prompt ends in padding."""
  cfg, params = TINY[name], params_of(name)
  module = model.build(cfg)
  length, batch = 7, 2
  ids = random_ids((batch, length), seed=5)
  mask = jnp.ones((batch, length), jnp.int32).at[1, prefill - 1].set(0 if prefill > 1 else 1)
  source = random_ids((batch, 5), seed=6)
  if cfg.family is model.Family.ENCODER_DECODER:
    full = forward(cfg)(params, {'input_ids': source, 'decoder_input_ids': ids, 'decoder_attention_mask': mask})
    encoded = full['encoder_hidden']
    cache = model.init_cache(module, batch, length, encoder_length=source.shape[1])
    step_kw = lambda i, j: {'decoder_input_ids': ids[:, i:j], 'decoder_attention_mask': mask[:, i:j],
                            'encoder_hidden': encoded}
  else:
    full = forward(cfg)(params, {'input_ids': ids, 'attention_mask': mask})
    cache = model.init_cache(module, batch, length)
    step_kw = lambda i, j: {'input_ids': ids[:, i:j], 'attention_mask': mask[:, i:j]}

  step = jax.jit(lambda p, c, kw: module.apply({'params': p, 'cache': c}, decode=True, mutable=['cache'], **kw))
  logits = []
  bounds = [(0, prefill)] + [(i, i + 1) for i in range(prefill, length)]
  for i, j in bounds:
    out, variables = step(params, cache, step_kw(i, j))
    cache = variables['cache']
    logits.append(out['logits'])
  logits = np.concatenate(logits, axis=1)
  real = np.asarray(mask, bool)
  np.testing.assert_allclose(logits[real], np.asarray(full['logits'])[real], atol=1e-4, rtol=1e-4)


def test_init_cache_of_an_encoder_is_an_error():
  with pytest.raises(ValueError, match='has no decoder'):
    model.init_cache(model.build(TINY['bert']), 1, 8)


# --- scan, remat -----------------------------------------------------------------------------------------

@pytest.mark.parametrize('name', list(TINY))
def test_scanned_and_unscanned_stacks_agree(name):
  cfg = TINY[name]
  assert cfg.scan_layers
  unscanned_cfg = cfg.replace(scan_layers=False)
  scanned = params_of(name)
  unscanned = model.unstack_layers(scanned)
  assert jax.tree.structure(unscanned) == jax.tree.structure(
      model.init_params(model.build(unscanned_cfg), jax.random.key(0)))
  jax.tree.map(np.testing.assert_array_equal, model.stack_layers(unscanned), scanned)
  kw = inputs_for(cfg, random_ids((2, 6), seed=7))
  a = forward(cfg)(scanned, kw)
  b = forward(unscanned_cfg)(unscanned, kw)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-5, rtol=1e-5), a, b)


@pytest.mark.parametrize('remat', [model.Remat.FULL, model.Remat.DOTS])
@pytest.mark.parametrize('scan', [True, False])
def test_remat_changes_no_value_or_gradient(remat, scan):
  cfg = TINY['t5']
  params = params_of('t5') if scan else model.unstack_layers(params_of('t5'))
  kw = inputs_for(cfg, random_ids((2, 6), seed=8))

  def loss(c, p):
    return jnp.mean(model.build(c).apply({'params': p}, **kw)['logits'] ** 2)

  base = cfg.replace(scan_layers=scan)
  want_value, want_grad = jax.jit(jax.value_and_grad(functools.partial(loss, base)))(params)
  value, grad = jax.jit(jax.value_and_grad(functools.partial(loss, base.replace(remat=remat))))(params)
  np.testing.assert_allclose(value, want_value, rtol=1e-6)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6, rtol=1e-5), grad, want_grad)


# --- head_only: a classifier's last layer computes [CLS] alone ---------------------------------------------

_CLASSIFIERS = {
    'bert': TINY['bert'].replace(head=model.Head.CLASSIFIER, num_labels=3, pooler=True,
                                 lm_head_bias=False),
    # pre-norm, rotary positions (per-row query positions), rematerialised layers (rows is a static argument)
    'pre_rope_remat': TINY['bert'].replace(head=model.Head.CLASSIFIER, num_labels=3, pooler=True, lm_head_bias=False,
                                           norm_placement='pre', position='rope', remat='full'),
}


# The scanned stack only cuts its output: one scanned case is enough.
@pytest.mark.parametrize('name,scan', [('bert', False), ('pre_rope_remat', False), ('bert', True)])
def test_head_only_classifier_gives_the_same_logits_and_gradients(name, scan):
  cfg = _CLASSIFIERS[name].replace(scan_layers=scan)
  module = model.build(cfg)
  params = model.init_params(module, jax.random.key(0))
  rng = np.random.default_rng(0)  # perturb norms and biases too (numpy: no compile per leaf)
  params = jax.tree.map(lambda x: x + 0.1 * rng.standard_normal(x.shape).astype(x.dtype), params)
  mask = jnp.asarray([[1] * 7, [1] * 4 + [0] * 3], jnp.int32)  # a padded row: the mask is cut to row 0 too
  kw = dict(input_ids=random_ids((2, 7), seed=3), attention_mask=mask)

  def run(head_only, p):
    out = module.apply({'params': p}, **kw, head_only=head_only)
    return jnp.sum(out['logits'] * jnp.arange(1.0, 4.0)), out

  grad_fn = jax.jit(jax.grad(run, argnums=1, has_aux=True), static_argnums=0)
  (want_grad, want), (grad, got) = grad_fn(False, params), grad_fn(True, params)
  assert want['hidden'].shape == (2, 7, 32) and got['hidden'].shape == (2, 1, 32)
  np.testing.assert_allclose(got['logits'], want['logits'], atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(got['hidden'][:, 0], want['hidden'][:, 0], atol=1e-5, rtol=1e-5)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-5, rtol=1e-4), grad, want_grad)


def test_head_only_leaves_other_heads_alone():
  """An encoder with the MLM head reads every position: head_only changes nothing (decoders never look at it)."""
  kw = inputs_for(TINY['bert'], random_ids((2, 5), seed=4))
  module = model.build(TINY['bert'])
  out = jax.jit(lambda p, kw: module.apply({'params': p}, **kw, head_only=True))(params_of('bert'), kw)
  want = forward(TINY['bert'])(params_of('bert'), kw)
  assert out['hidden'].shape == want['hidden'].shape
  np.testing.assert_allclose(out['logits'], want['logits'], atol=1e-6, rtol=1e-6)


# --- training mode ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('name', ['bert', 't5'])
def test_dropout_is_active_only_when_not_deterministic(name):
  cfg = TINY[name].replace(dropout_rate=0.2, attention_dropout_rate=0.2, ffn_dropout_rate=0.1)
  module = model.build(cfg)
  params, kw = params_of(name), inputs_for(cfg, random_ids((2, 6), seed=9))
  apply = jax.jit(lambda rng, det: module.apply({'params': params}, deterministic=det, rngs={'dropout': rng},
                                                **kw)['hidden'], static_argnums=1)
  np.testing.assert_array_equal(apply(jax.random.key(0), True), apply(jax.random.key(1), True))
  train_a, train_b = apply(jax.random.key(0), False), apply(jax.random.key(1), False)
  assert not np.allclose(train_a, train_b)
  np.testing.assert_array_equal(train_a, apply(jax.random.key(0), False))  # same rng, same mask


def test_bfloat16_compute_keeps_float32_params_and_logits():
  cfg = TINY['gpt2'].replace(dtype='bfloat16')
  out = model.build(cfg).apply({'params': params_of('gpt2')}, input_ids=random_ids((1, 5)))
  assert out['hidden'].dtype == jnp.bfloat16 and out['logits'].dtype == jnp.float32
  full = forward(TINY['gpt2'])(params_of('gpt2'), {'input_ids': random_ids((1, 5))})['logits']
  np.testing.assert_allclose(out['logits'], full, atol=0.15)


def test_logical_axis_names_on_every_parameter():
  """Every parameter is boxed with one logical name per dimension, from the fixed set (+ None)."""
  from flax import linen as nn

  from model.partitioning import LOGICAL_AXES
  for name, cfg in TINY.items():
    boxed = jax.eval_shape(lambda c=cfg: model.build(c).init(jax.random.key(0), **model.dummy_inputs(c)))['params']
    specs = nn.get_partition_spec(boxed)
    for path, (leaf, spec) in zip(jax.tree_util.tree_leaves_with_path(boxed), zip(
        jax.tree.leaves(nn.unbox(boxed)), jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)))):
      assert len(spec) == len(leaf.shape), f'{name} {path}: {spec} vs {leaf.shape}'
      assert all(a is None or a in LOGICAL_AXES for a in spec), f'{name} {path}: {spec}'
