"""OptimConfig -> optimizer: schedules against closed forms, the weight-decay mask, clipping, errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import model
from tests.tiny import TINY
from trainer.optim import OptimConfig, OptimConfigError, decay_mask, make_optimizer, make_schedule

PEAK, WARMUP, STEPS, END = 1e-3, 10, 110, 0.1


def warmup(step: int) -> float:
  return PEAK * step / WARMUP


def cosine(step: int) -> float:
  t = (step - WARMUP) / (STEPS - WARMUP)
  return PEAK * (END + (1 - END) * 0.5 * (1 + math.cos(math.pi * t)))


def linear(step: int) -> float:
  t = (step - WARMUP) / (STEPS - WARMUP)
  return PEAK + (END * PEAK - PEAK) * t


def rsqrt(step: int) -> float:
  return PEAK * math.sqrt(WARMUP / step)


CLOSED_FORMS = {'warmup_cosine': cosine, 'warmup_linear': linear, 'warmup_rsqrt': rsqrt, 'constant': lambda s: PEAK}


@pytest.mark.parametrize('name', list(CLOSED_FORMS))
def test_schedules_against_closed_forms(name):
  schedule = make_schedule(OptimConfig(learning_rate=PEAK, schedule=name, warmup_steps=WARMUP, num_steps=STEPS,
                                       end_lr_ratio=END))
  for step in (0, 1, 5, 9):
    np.testing.assert_allclose(schedule(step), warmup(step), rtol=1e-6, atol=1e-12, err_msg=f'{name} @ {step}')
  for step in (10, 11, 35, 60, 100, 109, 110):
    np.testing.assert_allclose(schedule(step), CLOSED_FORMS[name](step), rtol=1e-5, err_msg=f'{name} @ {step}')
  if name in ('warmup_cosine', 'warmup_linear'):  # decayed to the end value, and stays there
    np.testing.assert_allclose(schedule(STEPS + 50), END * PEAK, rtol=1e-5)


def test_no_warmup_starts_at_the_peak():
  schedule = make_schedule(OptimConfig(learning_rate=PEAK, schedule='warmup_cosine', num_steps=100))
  np.testing.assert_allclose(schedule(0), PEAK)
  np.testing.assert_allclose(schedule(50), PEAK * 0.5, rtol=1e-5)  # halfway down the cosine, end 0
  np.testing.assert_allclose(schedule(100), 0.0, atol=1e-12)


def _paths(tree, mask) -> dict[str, bool]:
  flat = jax.tree_util.tree_flatten_with_path(mask)[0]
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): bool(v) for path, v in flat}


@pytest.mark.parametrize('name', ['bert', 't5'])
def test_decay_mask_excludes_biases_and_norms(name):
  params = jax.eval_shape(lambda: model.init_params(model.build(TINY[name]), jax.random.key(0)))
  decays = _paths(params, decay_mask(params))
  assert decays, 'no parameters?'
  for path, decayed in decays.items():
    leaf = path.split('/')[-1]
    assert decayed == (leaf in ('kernel', 'embedding')), path
  assert any(p.endswith('kernel') for p, d in decays.items() if d)
  if name == 'bert':  # the MLM vocabulary bias, norm scales and biases (incl. the attention's (heads, kv) bias)
    for path in ('lm_bias', 'encoder/embed_norm/scale', 'encoder/embed_norm/bias', 'mlm_norm/scale',
                 'encoder/layers/self_attn/query/bias', 'token_embed/embedding'):
      assert path in decays, sorted(decays)
    assert not any(decays[p] for p in ('lm_bias', 'encoder/embed_norm/scale', 'encoder/embed_norm/bias',
                                       'encoder/layers/self_attn/query/bias'))
    assert decays['token_embed/embedding'] and decays['encoder/position_embed/embedding']
  else:  # T5's relative position bias table is not decayed
    assert not decays['encoder/relpos_bias'] and not decays['decoder/final_norm/scale']
  no_embed = _paths(params, decay_mask(params, decay_embeddings=False))
  assert not no_embed['token_embed/embedding']
  assert {p for p, d in no_embed.items() if d} == {p for p, d in decays.items() if d and 'embedding' not in p}


def test_adamw_decays_only_the_masked_in_leaves():
  """With zero gradients, AdamW's update is the decay alone: -lr * wd * param where the mask says so."""
  params = {'dense': {'kernel': jnp.full((2, 3), 2.0), 'bias': jnp.full((3,), 2.0)},
            'norm': {'scale': jnp.full((3,), 2.0)}, 'embed': {'embedding': jnp.full((4, 2), 2.0)}}
  tx, _ = make_optimizer(OptimConfig(learning_rate=0.1, schedule='constant', weight_decay=0.5, clip_norm=0.0))
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  np.testing.assert_allclose(updates['dense']['kernel'], -0.1 * 0.5 * 2.0)
  np.testing.assert_allclose(updates['embed']['embedding'], -0.1 * 0.5 * 2.0)
  np.testing.assert_array_equal(updates['dense']['bias'], 0.0)
  np.testing.assert_array_equal(updates['norm']['scale'], 0.0)


@pytest.mark.parametrize('clip', [0.0, 1.0])
def test_clipping_bounds_the_gradient_the_optimizer_sees(clip):
  """Adam's first moment after one step is (1 - b1) * g: with clipping, g is the clipped gradient."""
  params = {'w': jnp.zeros((10,)), 'v': jnp.zeros((5,))}
  grads = {'w': jnp.full((10,), 30.0), 'v': jnp.full((5,), -40.0)}  # norm ~ 130
  cfg = OptimConfig(learning_rate=1e-3, schedule='constant', clip_norm=clip, b1=0.9)
  tx, _ = make_optimizer(cfg)
  _, state = tx.update(grads, tx.init(params), params)
  mu = optax.tree_utils.tree_get(state, 'mu')
  norm = float(optax.tree.norm(mu)) / (1 - cfg.b1)
  expected = clip if clip else float(optax.tree.norm(grads))
  np.testing.assert_allclose(norm, expected, rtol=1e-5)


def test_adafactor_runs_factored_and_decays():
  params = {'dense': {'kernel': jnp.ones((8, 6)), 'bias': jnp.ones((6,))}}
  cfg = OptimConfig(name='adafactor', learning_rate=0.01, schedule='warmup_rsqrt', warmup_steps=10,
                    adafactor_min_dim_size_to_factor=4, weight_decay=0.1)
  tx, _ = make_optimizer(cfg)
  state = tx.init(params)
  factored = optax.tree_utils.tree_get(state, 'v_row')
  assert factored['dense']['kernel'].shape == (6,)  # factored second moments, as in T5
  grads = {'dense': {'kernel': jnp.full((8, 6), 0.5), 'bias': jnp.full((6,), 0.5)}}
  updates, _ = tx.update(grads, state, params)
  assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))


@pytest.mark.parametrize('fields, message', [
    ({'name': 'sgd'}, r"optim.name='sgd': unknown name; valid values are \['adamw', 'adafactor'\]"),
    ({'schedule': 'step'}, r"optim.schedule='step': unknown schedule; valid values are \['warmup_cosine', "
                           r"'warmup_linear', 'warmup_rsqrt', 'constant'\]"),
    ({'learning_rate': 0.0}, r'optim.learning_rate=0.0: must be > 0'),
    ({'warmup_steps': 100, 'num_steps': 100}, r'optim.warmup_steps=100: must be below optim.num_steps=100'),
    ({'schedule': 'warmup_rsqrt'}, r'optim.warmup_steps=0: warmup_rsqrt .* needs warmup_steps >= 1'),
    ({'clip_norm': -1.0}, r'optim.clip_norm=-1.0: must be >= 0 \(0 = off\)'),
    ({'b2': 1.0}, r'optim.b2=1.0: must be in \[0, 1\)'),
])
def test_bad_values_name_the_field(fields, message):
  with pytest.raises(OptimConfigError, match=message):
    OptimConfig(**fields)


def test_from_config_dict():
  cfg = OptimConfig.from_dict(ml_collections.ConfigDict({'name': 'ADAFACTOR', 'learning_rate': 0.01,
                                                         'schedule': 'constant'}))
  assert cfg.name.value == 'adafactor' and cfg.learning_rate == 0.01
  with pytest.raises(OptimConfigError, match=r"unknown field\(s\) \['lr'\]"):
    OptimConfig.from_dict({'lr': 0.1})


def test_warmup_ratio_sets_the_warmup_from_the_run_length():
  assert OptimConfig(warmup_ratio=0.1, num_steps=528, schedule='warmup_linear').warmup_steps == 53
  with pytest.raises(OptimConfigError, match=r'optim.warmup_ratio=0.1 and optim.warmup_steps=5 are both set'):
    OptimConfig(warmup_ratio=0.1, warmup_steps=5, num_steps=100)
  with pytest.raises(OptimConfigError, match=r'optim.warmup_ratio=1.5: must be in \[0, 1\)'):
    OptimConfig(warmup_ratio=1.5, num_steps=100)


@pytest.mark.parametrize('num_steps, warmup, fitted', [(300, 30, 30), (31, 30, 30), (30, 30, 3), (20, 30, 2),
                                                       (5, 30, 1), (1, 30, 0)])
def test_a_warmup_that_does_not_fit_a_short_run_is_cut_to_a_tenth(num_steps, warmup, fitted):
  """`--config.train.num_steps=20` of a setup written with 30 warmup steps runs, saying what it changed."""
  cfg, note = OptimConfig.for_run({'warmup_steps': warmup, 'schedule': 'warmup_cosine'}, num_steps)
  assert (cfg.num_steps, cfg.warmup_steps) == (num_steps, fitted)
  if fitted == warmup:
    assert note is None
  else:
    assert f'optim.warmup_steps={warmup} does not fit train.num_steps={num_steps}' in note
    assert f'warming up over {fitted} step' in note
  schedule = make_schedule(cfg)
  assert float(schedule(num_steps - 1)) < cfg.learning_rate or num_steps == 1  # it decays within the run
