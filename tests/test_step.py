"""The sharded train step: equal to the single-device step, microbatching exact, memorisation, FSDP memory,
bf16 compute on float32 weights, z-loss, and the errors raised before compiling.

Each (model, mesh, step config) compiles once per module (`_setup` is cached); states are copied, never
shared, because the compiled step donates its input state.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model
from configs import gpt_tiny
from data.batch import UNLABELED, model_inputs
from data.tasks import Objective
from tests.tiny import TINY, VOCAB
from trainer import losses
from trainer.distill import DistillConfig
from trainer.mesh import MeshConfig, MeshContext
from trainer.optim import OptimConfig, make_optimizer
from trainer.step import (StepConfig, TrainState, abstract_train_state, compile_eval_step,
                          compile_train_step, init_train_state, shardings_of)

B, T, DECODER_T = 8, 16, 8
SHARDED, SINGLE = (2, 2, 2), (1, 1, 1)
# eps well above the float32 noise of the gradients: Adam's g / (|g| + eps) would otherwise turn the
# summation order of a near-zero gradient (single device vs all-reduce) into a visible parameter difference
# (at lr 1e-2 with eps=1e-6: 3e-6 on 3 of GPT-2's 4096 wi elements after two steps).
OPTIM = OptimConfig(learning_rate=3e-2, schedule='constant', eps=1e-3, weight_decay=0.01, clip_norm=1.0)
# Tests compile many tiny programs; XLA's backend optimisations cost half of each compile and buy nothing here.
FAST_COMPILE = {'xla_backend_optimization_level': 0}
CLASSIFIER = TINY['bert'].replace(head='classifier', num_labels=3, pooler=True, lm_head_bias=False)
FAMILIES = {  # name -> (model config, objective, z-loss coefficient)
    'gpt2': (TINY['gpt2'], 'causal_lm', 0.0),
    'bert': (TINY['bert'], 'mlm', 0.0),
    't5': (TINY['t5'], 'span_corruption', 1e-3),
    'classifier': (CLASSIFIER, 'classification', 1e-3),
}


def make_batch(objective: str, seed: int = 0) -> dict[str, np.ndarray]:
  """A fixed synthetic batch with the features of data/tasks.py; row 0 has padding, so rows weigh differently."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(5, VOCAB, (B, T + 1)).astype(np.int32)
  valid = np.ones((B, T), np.int32)
  valid[0, T - 5:] = 0
  match objective:
    case 'causal_lm':
      return {'input_ids': ids[:, :-1] * valid, 'targets': ids[:, 1:] * valid, 'loss_weights': valid.astype(np.float32),
              'segment_ids': valid, 'position_ids': np.tile(np.arange(T, dtype=np.int32), (B, 1))}
    case 'mlm':
      masked = (rng.random((B, T)) < 0.25) & (valid > 0)
      return {'input_ids': np.where(masked, 4, ids[:, :-1]) * valid, 'attention_mask': valid,
              'token_type_ids': (np.arange(T) >= T // 2).astype(np.int32)[None].repeat(B, 0) * valid,
              'targets': ids[:, :-1] * valid, 'loss_weights': masked.astype(np.float32)}
    case 'span_corruption':
      targets = ids[:, :DECODER_T].copy()
      dec_valid = np.ones((B, DECODER_T), np.int32)
      dec_valid[1, DECODER_T - 3:] = 0
      targets *= dec_valid
      return {'input_ids': ids[:, :-1] * valid, 'attention_mask': valid,
              'decoder_input_ids': np.concatenate([np.zeros((B, 1), np.int32), targets[:, :-1]], 1),
              'decoder_attention_mask': dec_valid, 'targets': targets, 'loss_weights': dec_valid.astype(np.float32)}
    case 'classification':
      return {'input_ids': ids[:, :-1] * valid, 'attention_mask': valid, 'token_type_ids': np.zeros((B, T), np.int32),
              'label': rng.integers(0, 3, (B,)).astype(np.int32)}
    case 'mlm_sop':  # mlm's batch, each row a pair in order (0) or swapped (1)
      return make_batch('mlm', seed) | {'sentence_order_label': rng.integers(0, 2, (B,)).astype(np.int32)}
  raise ValueError(objective)


def copy(tree):
  return jax.tree.map(lambda x: x.copy(), tree)


@functools.cache
def _mesh(mesh_shape: tuple[int, int, int]) -> MeshContext:
  mesh_cfg = MeshConfig(data=mesh_shape[0], fsdp=mesh_shape[1], tensor=mesh_shape[2])
  return mesh_cfg.context(jax.devices()[:math.prod(mesh_shape)])


@functools.cache
def _initial_state(cfg: model.ModelConfig, optim: OptimConfig, mesh_shape: tuple[int, int, int]) -> TrainState:
  """The sharded init on the (2, 2, 2) mesh; other meshes get a copy of it (saves a compile per test;
  `test_sharded_init_equals_single_device_init` checks the init itself on one device)."""
  mesh = _mesh(mesh_shape)
  module, tx = model.build(cfg), make_optimizer(optim)[0]
  abstract = abstract_train_state(module, tx, mesh)
  if mesh_shape == SHARDED:
    return init_train_state(module, tx, jax.random.key(0), abstract, FAST_COMPILE)
  return jax.device_put(_initial_state(cfg, optim, SHARDED), shardings_of(abstract))


@functools.cache
def _setup(cfg: model.ModelConfig, objective: str, mesh_shape: tuple[int, int, int], microbatches: int,
           z_loss: float, optim: OptimConfig, logits_chunk: int, max_targets: int):
  """(initial state, compiled step, global batch, mesh) of one configuration; compiled once per module."""
  mesh = _mesh(mesh_shape)
  module = model.build(cfg)
  tx, schedule = make_optimizer(optim)
  abstract = abstract_train_state(module, tx, mesh)
  batch = mesh.to_global(make_batch(objective))
  step_cfg = StepConfig(objective=objective, microbatches=microbatches, z_loss=z_loss, logits_chunk=logits_chunk,
                        max_targets=max_targets)
  step = compile_train_step(module, tx, schedule, step_cfg, mesh, abstract, batch, FAST_COMPILE)
  return _initial_state(cfg, optim, mesh_shape), step, batch, mesh


def setup(cfg: model.ModelConfig, objective: str, mesh_shape: tuple[int, int, int], *, microbatches: int = 1,
          z_loss: float = 0.0, optim: OptimConfig = OPTIM, logits_chunk: int = 0, max_targets: int = 0):
  # one cache key per configuration
  return _setup(cfg, objective, mesh_shape, microbatches, z_loss, optim, logits_chunk, max_targets)


def run(cfg, objective, mesh_shape, steps: int, **kw) -> tuple[TrainState, list[dict[str, float]]]:
  state, step, batch, _ = setup(cfg, objective, mesh_shape, **kw)
  state, history = copy(state), []
  for _ in range(steps):
    state, metrics = step(state, batch, jax.random.key(1))
    history.append({k: float(v) for k, v in metrics.items()})
  return state, history


def assert_trees_close(a, b, atol: float) -> None:
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0, err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope='module', params=list(FAMILIES))
def family(request):
  cfg, objective, z_loss = FAMILIES[request.param]
  sharded, sharded_metrics = run(cfg, objective, SHARDED, 2, z_loss=z_loss)
  single, single_metrics = run(cfg, objective, SINGLE, 2, z_loss=z_loss)
  return dict(name=request.param, cfg=cfg, objective=objective, z_loss=z_loss, sharded=sharded, single=single,
              sharded_metrics=sharded_metrics, single_metrics=single_metrics)


def test_sharded_init_equals_single_device_init():
  cfg = TINY['gpt2']
  module, tx = model.build(cfg), make_optimizer(OPTIM)[0]
  single = init_train_state(module, tx, jax.random.key(0), abstract_train_state(module, tx, _mesh(SINGLE)),
                            FAST_COMPILE)
  sharded = _initial_state(cfg, OPTIM, SHARDED)
  assert_trees_close(sharded, single, atol=0.0)
  kernel = sharded.params['token_embed']['embedding']
  assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, 'fsdp')  # vocab 101: not split over tensor
  assert len(kernel.addressable_shards) == 8 and kernel.addressable_shards[0].data.shape == (101, 16)


def test_sharded_step_equals_single_device_step(family):
  # 2e-6: two Adam updates at lr 3e-2 scale a gradient's float32 summation-order noise (~1e-7, the order of a
  # tensor-parallel all-reduce against one device's sum) by up to lr / eps = 30.
  assert_trees_close(family['sharded'].params, family['single'].params, atol=2e-6)
  assert_trees_close(family['sharded'].opt_state, family['single'].opt_state, atol=1e-6)
  assert int(family['sharded'].step) == int(family['single'].step) == 2
  for sharded, single in zip(family['sharded_metrics'], family['single_metrics']):
    assert sharded.keys() == single.keys()
    for key in sharded:
      np.testing.assert_allclose(sharded[key], single[key], rtol=1e-6, atol=1e-6, err_msg=key)


def test_metrics(family):
  first = family['sharded_metrics'][0]
  expected = {'loss', 'z_loss', 'accuracy', 'weight', 'grad_norm', 'param_norm', 'learning_rate'}
  assert set(first) == expected
  batch = make_batch(family['objective'])
  weight = B if family['objective'] == 'classification' else batch['loss_weights'].sum()
  assert first['weight'] == weight
  assert first['learning_rate'] == pytest.approx(OPTIM.learning_rate)
  assert (first['z_loss'] > 0) == (family['z_loss'] > 0)
  assert 0.0 <= first['accuracy'] <= 1.0 and first['grad_norm'] > 0 and first['param_norm'] > 0


def test_loss_falls_when_memorising_a_batch(family):
  _, history = run(family['cfg'], family['objective'], SHARDED, 20, z_loss=family['z_loss'])
  losses_ = [m['loss'] for m in history]
  assert all(np.isfinite(losses_))
  # 20 steps at lr 3e-2 end near 0.03x the first loss for GPT-2 and the classifier, 0.2x for BERT and 0.65x
  # for T5 (its tied head is rescaled by d_model^-0.5, so its logits start tiny and grow slowly). The
  # classifier memorises its 8 labels within a few steps and then oscillates: the mean of the last five.
  assert np.mean(losses_[-5:]) < 0.75 * losses_[0], losses_


def test_eval_step_is_the_plain_loss_of_the_same_params(family):
  """Dropout is 0 in the tiny configs, so the first step's training loss minus its z-loss is eval's loss."""
  state, _, batch, mesh = setup(family['cfg'], family['objective'], SHARDED, z_loss=family['z_loss'])
  step_cfg = StepConfig(objective=family['objective'], z_loss=family['z_loss'])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state.params)
  evaluate = compile_eval_step(model.build(family['cfg']), step_cfg, mesh, abstract, batch, FAST_COMPILE)
  sums = {k: float(v) for k, v in evaluate(state.params, batch).items()}
  first = family['sharded_metrics'][0]
  assert set(sums) == {'loss', 'weight', 'correct'}
  assert sums['weight'] == first['weight']
  np.testing.assert_allclose(sums['loss'] / sums['weight'], first['loss'] - first['z_loss'], rtol=1e-5)
  np.testing.assert_allclose(sums['correct'] / sums['weight'], first['accuracy'], rtol=1e-6)


def test_microbatches_equal_one_batch():
  """2 microbatches of 4 rows give the update of one batch of 8, rows weighted by their token counts."""
  cfg = TINY['gpt2']
  whole, whole_metrics = run(cfg, 'causal_lm', SHARDED, 2)
  micro, micro_metrics = run(cfg, 'causal_lm', SHARDED, 2, microbatches=2)
  assert_trees_close(micro.params, whole.params, atol=1e-6)
  for a, b in zip(micro_metrics, whole_metrics):
    for key in a:
      np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-6, err_msg=key)


@pytest.mark.parametrize('name', ['gpt2', 'bert', 't5_v11'])
def test_chunked_logits_step_equals_the_whole_logits_step(name):
  """train.logits_chunk=3 (16 and 8 positions: a padded last chunk) on the sharded mesh gives the update and
  metrics of the step that holds every logit: GPT-2 with z-loss, BERT's MLM transform and vocabulary bias,
  T5 v1.1's untied head."""
  cfg, objective, _ = FAMILIES[name] if name in FAMILIES else (TINY[name], 'span_corruption', 0.0)
  whole, whole_metrics = run(cfg, objective, SHARDED, 2, z_loss=1e-3)
  chunked, chunked_metrics = run(cfg, objective, SHARDED, 2, z_loss=1e-3, logits_chunk=3)
  assert_trees_close(chunked.params, whole.params, atol=1e-6)
  for a, b in zip(chunked_metrics, whole_metrics):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.parametrize('logits_chunk', [0, 3])
def test_mlm_head_at_the_masked_positions_alone_equals_the_whole_head(logits_chunk):
  """max_targets: BERT's MLM transform and logits at the weighted positions only (gathered; rows with fewer
  targets than the bound fill up with weight-0 positions) give the update of the head at every position."""
  cfg, objective, _ = FAMILIES['bert']
  most = int(make_batch(objective)['loss_weights'].sum(axis=1).max())
  whole, whole_metrics = run(cfg, objective, SHARDED, 2)
  gathered, gathered_metrics = run(cfg, objective, SHARDED, 2, max_targets=most, logits_chunk=logits_chunk)
  assert most < T // 2
  assert_trees_close(gathered.params, whole.params, atol=1e-6)
  for a, b in zip(gathered_metrics, whole_metrics):
    for key in a:
      np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.parametrize('prng_impl', ['rbg', 'unsafe_rbg'])
def test_dropout_masks_from_another_prng(prng_impl):
  """train.prng_impl: the step takes that PRNG's key (StepConfig.dropout_key), dropout draws other masks than
  threefry's from the same seed; an unknown name is an error."""
  cfg = TINY['gpt2'].replace(dropout_rate=0.2, attention_dropout_rate=0.2)
  module, (tx, schedule) = model.build(cfg), make_optimizer(OPTIM)
  mesh = _mesh(SINGLE)
  abstract = abstract_train_state(module, tx, mesh)
  batch = mesh.to_global(make_batch('causal_lm'))
  losses_ = {}
  for impl in ('threefry2x32', prng_impl):
    step_cfg = StepConfig(objective='causal_lm', prng_impl=impl)
    step = compile_train_step(module, tx, schedule, step_cfg, mesh, abstract, batch, FAST_COMPILE)
    state = jax.device_put(copy(_initial_state(TINY['gpt2'], OPTIM, SHARDED)), shardings_of(abstract))
    losses_[impl] = float(step(state, batch, step_cfg.dropout_key(1))[1]['loss'])
  assert np.isfinite(losses_[prng_impl]) and losses_[prng_impl] != losses_['threefry2x32']
  with pytest.raises(ValueError):
    StepConfig(objective='causal_lm', prng_impl='philox')


def test_per_device_parameter_bytes_shrink_as_one_over_fsdp():
  """gpt_rope has no biases and no position table: every parameter has an embed axis, split over fsdp."""
  cfg = TINY['gpt_rope']
  module = model.build(cfg)
  tx, _ = make_optimizer(OPTIM)

  def device0_bytes(fsdp: int) -> tuple[int, int]:
    mesh_cfg = MeshConfig(data=-1, fsdp=fsdp)
    abstract = abstract_train_state(module, tx, mesh_cfg.context())
    state = init_train_state(module, tx, jax.random.key(0), abstract, FAST_COMPILE)
    per_device = lambda tree: sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(tree) if x.ndim)
    return per_device(state.params), per_device(state.opt_state)

  params1, opt1 = device0_bytes(1)
  assert params1 == 4 * model.count_params(cfg)
  for fsdp in (2, 4):
    params, opt = device0_bytes(fsdp)
    assert params * fsdp == params1 and opt * fsdp == opt1, fsdp


def test_bf16_compute_keeps_float32_master_weights():
  cfg = TINY['gpt2'].replace(dtype='bfloat16')
  state, history = run(cfg, 'causal_lm', SHARDED, 3)
  assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype('float32')}
  assert all(np.isfinite(m['loss']) for m in history) and history[-1]['loss'] < history[0]['loss']
  _, fp32 = run(TINY['gpt2'], 'causal_lm', SHARDED, 1)
  assert abs(history[0]['loss'] - fp32[0]['loss']) < 0.05  # same init, bf16 rounding only


def test_param_dtype_must_be_float32():
  module = model.build(TINY['gpt2'].replace(param_dtype='bfloat16'))
  mesh = MeshConfig().context(jax.devices()[:1])
  with pytest.raises(ValueError, match=r"model.param_dtype='bfloat16': training keeps float32 master weights"):
    abstract_train_state(module, make_optimizer(OPTIM)[0], mesh)


def test_opt_state_mirrors_param_shardings():
  mesh = MeshConfig(fsdp=2, tensor=2).context()
  module = model.build(TINY['gpt2'])
  abstract = abstract_train_state(module, make_optimizer(OPTIM)[0], mesh)
  adam = abstract.opt_state[1][0]  # chain(clip, adamw = chain(scale_by_adam, ...)) -> ScaleByAdamState
  for moment in (adam.mu, adam.nu):
    assert jax.tree.map(lambda x: x.sharding, moment) == jax.tree.map(lambda x: x.sharding, abstract.params)
  wi = abstract.params['decoder']['layers']['ffn']['wi']['kernel']  # (layers, embed, mlp)
  assert wi.sharding.spec == jax.sharding.PartitionSpec(None, 'fsdp', 'tensor')
  # Adafactor's factored statistics: the kernel's spec without the factored-out axis.
  factored = OptimConfig(name='adafactor', learning_rate=0.01, schedule='constant', adafactor_min_dim_size_to_factor=8)
  state = abstract_train_state(module, make_optimizer(factored)[0], mesh).opt_state[1][0]
  v_row, v_col = (v['decoder']['layers']['ffn']['wi']['kernel'] for v in (state.v_row, state.v_col))
  assert v_row.shape == (2, 32) and v_row.sharding.spec == jax.sharding.PartitionSpec(None, 'fsdp')  # mlp out
  assert v_col.shape == (2, 64) and v_col.sharding.spec == jax.sharding.PartitionSpec(None, 'tensor')  # embed out
  assert state.count.sharding.spec == jax.sharding.PartitionSpec()


def test_step_config_from_the_config_tree():
  config = gpt_tiny.get_config()
  cfg = StepConfig.from_config(config)
  assert cfg.objective is Objective.CAUSAL_LM and cfg.microbatches == 1 and cfg.z_loss == 0.0
  assert cfg.logits_chunk == 8 and cfg.chunked_logits  # configs/presets.CPU_TINY_TRAIN
  config.train.microbatches, config.train.z_loss, config.data.objective = 4, 1e-4, 'mlm'
  config.train.logits_chunk = 0
  # MLM chooses round(0.15 * 126) = 19 of a 128-token row's positions at most (data.examples.MlmConfig)
  assert StepConfig.from_config(config) == StepConfig(objective=Objective.MLM, microbatches=4, z_loss=1e-4,
                                                      max_targets=19)
  assert not StepConfig(objective='classification', logits_chunk=8).chunked_logits  # logits of classes only
  with pytest.raises(ValueError, match=r'train.logits_chunk=-1: must be >= 0 positions'):
    config.train.logits_chunk = -1
    StepConfig.from_config(config)
  with pytest.raises(ValueError, match=r'train.microbatches=0: must be a positive integer'):
    StepConfig(objective='mlm', microbatches=0)
  with pytest.raises(ValueError, match=r"data.objective='lm': unknown objective; valid values are \['causal_lm'"):
    StepConfig(objective='lm')


def test_batches_that_do_not_split_over_the_mesh_fail_before_compiling():
  mesh = MeshConfig(fsdp=2, tensor=2).context()
  with pytest.raises(ValueError, match=r"'input_ids': 6 rows do not split over the 4 devices of mesh axes "
                                       r"\('data', 'fsdp'\)"):
    mesh.batch_shardings({'input_ids': jax.ShapeDtypeStruct((6, T), jnp.int32)})
  with pytest.raises(ValueError, match=r'8 rows / train.microbatches=4 = 2 do not split over the 4 devices'):
    mesh.batch_shardings({'input_ids': jax.ShapeDtypeStruct((8, T), jnp.int32)}, microbatches=4)


# --- ALBERT's pretraining: MLM + sentence order ------------------------------------------------------------

# A tiny ALBERT (factorised embeddings, one shared layer) with the pretraining head.
PRETRAINING = TINY['bert'].replace(embedding_size=16, num_layer_groups=1, head='pretraining', pooler=True)


@pytest.fixture(scope='module')
def pretraining() -> tuple[TrainState, list[dict[str, float]]]:
  return run(PRETRAINING, 'mlm_sop', SHARDED, 20)


def test_pretraining_loss_is_the_mlm_mean_plus_the_sentence_order_mean(pretraining):
  """The first step's loss from the model's outputs by hand: the masked tokens' mean cross-entropy plus the
  examples' mean sentence-order cross-entropy; both parts fall as the tiny model memorises the batch."""
  state, _, batch, _ = setup(PRETRAINING, 'mlm_sop', SHARDED)
  inputs = {k: np.asarray(v) for k, v in model_inputs(batch).items()}
  out = model.build(PRETRAINING).apply({'params': jax.device_get(state.params)}, **inputs)
  weights, targets = np.asarray(batch['loss_weights']), np.asarray(batch['targets'])
  token_nll = -np.take_along_axis(jax.nn.log_softmax(out['logits']), targets[..., None], -1)[..., 0]
  mlm = float((token_nll * weights).sum() / weights.sum())
  order = np.asarray(batch['sentence_order_label'])
  sop = float(-np.take_along_axis(jax.nn.log_softmax(out['sop_logits']), order[:, None], -1).mean())
  _, history = pretraining
  first = history[0]
  assert set(first) == {'loss', 'z_loss', 'mlm_loss', 'sop_loss', 'accuracy', 'sop_accuracy', 'weight', 'grad_norm',
                        'param_norm', 'learning_rate'}
  np.testing.assert_allclose([first['mlm_loss'], first['sop_loss'], first['loss']], [mlm, sop, mlm + sop], rtol=1e-5)
  assert first['weight'] == weights.sum() and 0 <= first['sop_accuracy'] <= 1
  parts = np.array([[m['mlm_loss'], m['sop_loss']] for m in history])
  assert np.isfinite(parts).all() and (parts[-5:].mean(axis=0) < 0.75 * parts[0]).all(), parts


@pytest.mark.parametrize('microbatches, logits_chunk, max_targets', [
    (2, 0, 0),  # two microbatches: each part's sums over the whole batch's weights
    (1, 3, 6),  # the LM head at the masked positions alone (as configs/albert_tiny.py), its logits 3 at a time
])
def test_pretraining_step_is_exact_however_it_is_split(microbatches, logits_chunk, max_targets):
  whole_state, whole = run(PRETRAINING, 'mlm_sop', SHARDED, 2)
  state, metrics = run(PRETRAINING, 'mlm_sop', SHARDED, 2, microbatches=microbatches, logits_chunk=logits_chunk,
                       max_targets=max_targets)
  assert int(make_batch('mlm_sop')['loss_weights'].sum(axis=1).max()) <= 6
  assert_trees_close(state.params, whole_state.params, atol=2e-6)
  for a, b in zip(metrics, whole):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_pretraining_eval_step_sums_both_parts(pretraining):
  state, _, batch, mesh = setup(PRETRAINING, 'mlm_sop', SHARDED)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state.params)
  evaluate = compile_eval_step(model.build(PRETRAINING), StepConfig(objective='mlm_sop'), mesh, abstract, batch,
                               FAST_COMPILE)
  sums = {k: float(v) for k, v in evaluate(state.params, batch).items()}
  first = pretraining[1][0]
  assert set(sums) == {'loss', 'weight', 'correct', 'sop_loss', 'sop_correct', 'sop_weight'} and sums['sop_weight'] == B
  np.testing.assert_allclose([sums['loss'] / sums['weight'], sums['sop_loss'] / B, sums['sop_correct'] / B],
                             [first['mlm_loss'], first['sop_loss'], first['sop_accuracy']], rtol=1e-5)


def test_pretraining_cannot_be_distilled():
  with pytest.raises(ValueError, match=r"distill.teacher='runs/albert': data.objective=mlm_sop trains two heads"):
    StepConfig(objective='mlm_sop', distill=DistillConfig(teacher='runs/albert'))


# --- losses: closed forms --------------------------------------------------------------------------------

def test_z_loss_closed_form():
  """Zero logits: log Z = log V for every token, so CE = log V and z-loss = coef * (log V)^2."""
  v, coef = 7, 1e-2
  logits = jnp.zeros((2, 3, v))
  weights = jnp.asarray([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
  labels = jnp.ones((2, 3), jnp.int32)
  sums = losses.cross_entropy_sums(logits, labels, weights, z_loss=coef)
  np.testing.assert_allclose(sums['loss'], 3 * (math.log(v) + coef * math.log(v) ** 2), rtol=1e-6)
  np.testing.assert_allclose(sums['z_loss'], 3 * coef * math.log(v) ** 2, rtol=1e-6)
  assert float(sums['weight']) == 3.0
  off = losses.cross_entropy_sums(logits, labels, weights, z_loss=0.0)
  assert float(off['z_loss']) == 0.0
  np.testing.assert_allclose(off['loss'], 3 * math.log(v), rtol=1e-6)


@pytest.mark.parametrize('chunk', [1, 4, 16])
def test_projected_cross_entropy_equals_the_logits_cross_entropy(chunk):
  """Sums and gradients of the chunked loss against cross_entropy_sums on the whole logits (10 positions:
  chunk 4 pads the last chunk, 16 is one padded chunk), with a bias and z-loss; per-example sums too."""
  rng = np.random.default_rng(0)
  hidden, kernel = jnp.asarray(rng.normal(size=(3, 10, 6)), jnp.float32), jnp.asarray(rng.normal(size=(11, 6)), jnp.float32)
  bias, labels = jnp.asarray(rng.normal(size=11), jnp.float32), jnp.asarray(rng.integers(0, 11, (3, 10)))
  weights = jnp.asarray(rng.random((3, 10)) < 0.7, jnp.float32)
  for b in (None, bias):
    def whole(h, k, b_, per_example=False):
      logits = jnp.einsum('btd,vd->btv', h, k) + (0.0 if b is None else b_)
      return losses.cross_entropy_sums(logits, labels, weights, 1e-2, per_example=per_example)

    def chunked(h, k, b_, per_example=False):
      return losses.projected_cross_entropy_sums(h, k, None if b is None else b_, labels, weights, 1e-2, chunk=chunk,
                                                 per_example=per_example)
    for per_example in (False, True):
      want, got = whole(hidden, kernel, bias, per_example), chunked(hidden, kernel, bias, per_example)
      for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5, err_msg=f'{name} {per_example}')
    grads = [jax.grad(lambda *a: f(*a)['loss'], argnums=(0, 1, 2))(hidden, kernel, bias) for f in (whole, chunked)]
    for want, got in zip(*grads):
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_accuracy_of_a_constant_output_is_zero():
  """A collapsed model (every logit equal) scores 0, not 1 (argmax would pick index 0, the label of row 0);
  otherwise the label's logit must be the largest."""
  labels, weights = jnp.asarray([[0, 2]]), jnp.ones((1, 2))
  assert float(losses.cross_entropy_sums(jnp.zeros((1, 2, 3)), labels, weights)['correct']) == 0.0
  logits = jnp.asarray([[[3.0, 1.0, 1.0], [0.0, 1.0, 2.0]]])
  assert float(losses.cross_entropy_sums(logits, labels, weights)['correct']) == 2.0
  assert float(losses.cross_entropy_sums(logits, jnp.asarray([[1, 1]]), weights)['correct']) == 0.0
  projected = losses.projected_cross_entropy_sums(logits, jnp.eye(3), None, labels, weights, chunk=1)
  assert float(projected['correct']) == 2.0


def test_classification_and_regression_losses():
  logits = jnp.asarray([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
  batch = {'label': jnp.asarray([0, 2], jnp.int32)}
  sums = losses.loss_sums(losses.LossKind.CLASSIFICATION, logits, batch)
  expected = -jax.nn.log_softmax(logits)[jnp.arange(2), batch['label']].sum()
  np.testing.assert_allclose(sums['loss'], expected, rtol=1e-6)
  assert float(sums['correct']) == 1.0 and float(sums['weight']) == 2.0
  sums = losses.loss_sums(losses.LossKind.REGRESSION, jnp.asarray([[1.5], [-1.0]]),
                          {'label': jnp.asarray([0.5, 1.0], jnp.float32)})
  np.testing.assert_allclose(sums['loss'], 1.0 + 4.0)
  assert float(sums['weight']) == 2.0 and 'correct' not in sums
  assert losses.loss_kind('regression') is losses.LossKind.REGRESSION
  with pytest.raises(ValueError, match=r"data.objective='lm': unknown objective"):
    losses.loss_kind('lm')


def test_an_unlabelled_example_weighs_nothing():
  """data.batch.UNLABELED (-1) never trains as the last class (a gather at -1 would wrap): the sums and the
  gradient of a batch with an unlabelled row are those of the batch without it, and it is not counted."""
  logits = jnp.asarray([[2.0, 0.0, 1.0], [0.5, 0.3, 0.1], [0.0, 1.0, 3.0]])
  labels = jnp.asarray([2, UNLABELED, 0], jnp.int32)
  kind = losses.LossKind.CLASSIFICATION
  loss = lambda x, y: losses.loss_sums(kind, x, {'label': y})['loss']
  with_row, without = losses.loss_sums(kind, logits, {'label': labels}), losses.loss_sums(
      kind, logits[jnp.asarray([0, 2])], {'label': labels[jnp.asarray([0, 2])]})
  for name in ('loss', 'correct', 'weight'):
    np.testing.assert_allclose(with_row[name], without[name], rtol=1e-6, err_msg=name)
  assert float(losses.total_weight(kind, {'label': labels})) == 2.0
  grad = jax.grad(loss)(logits, labels)
  assert not np.any(grad[1]) and np.any(grad[0]) and np.any(grad[2])


@pytest.mark.parametrize('kind', list(losses.LossKind))
def test_per_example_sums_add_up_to_the_batch_sums(kind):
  """eval.py's per-example sums are the training loss's, example by example (one cross-entropy)."""
  rng = np.random.default_rng(3)
  logits = {losses.LossKind.TOKENS: rng.normal(size=(4, 5, 7)), losses.LossKind.CLASSIFICATION: rng.normal(size=(4, 3)),
            losses.LossKind.REGRESSION: rng.normal(size=(4, 1)),
            losses.LossKind.PRETRAINING: rng.normal(size=(4, 5, 7)),  # its MLM part; the order's below
            losses.LossKind.SPAN: rng.normal(size=(4, 5, 2))}[kind]  # start and end logits over 5 tokens
  batch = {'targets': rng.integers(0, 7, (4, 5)), 'loss_weights': (rng.random((4, 5)) < 0.7).astype(np.float32),
           'label': rng.integers(0, 3, 4) if kind is losses.LossKind.CLASSIFICATION else rng.normal(size=4),
           'input_ids': np.ones((4, 5), np.int32),  # the span loss's length
           # one span outside the window (weighs 0), so the sums are not all equal weights
           'start_positions': np.array([0, 2, 4, 7]), 'end_positions': np.array([1, 2, 4, 9])}
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  whole = losses.loss_sums(kind, jnp.asarray(logits, jnp.float32), batch, z_loss=1e-3)
  each = losses.loss_sums(kind, jnp.asarray(logits, jnp.float32), batch, z_loss=1e-3, per_example=True)
  assert each.keys() == whole.keys()
  for name, value in each.items():
    assert value.shape == (4,), name
    np.testing.assert_allclose(value.sum(), whole[name], rtol=1e-5, atol=1e-6, err_msg=name)
  if kind is losses.LossKind.PRETRAINING:
    order_logits, order = jnp.asarray(rng.normal(size=(4, 2)), jnp.float32), jnp.asarray([0, 1, 1, 0])
    whole, each = (losses.sentence_order_sums(order_logits, order, per_example=p) for p in (False, True))
    assert set(each) == {'sop_loss', 'sop_correct', 'sop_weight'} and float(whole['sop_weight']) == 4.0
    for name, value in each.items():
      np.testing.assert_allclose(value.sum(), whole[name], rtol=1e-5, atol=1e-6, err_msg=name)
