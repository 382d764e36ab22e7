"""ALBERT as a config of the shared encoder: factorised embeddings (model.embedding_size) and cross-layer sharing
(model.num_layer_groups), against HF transformers' ALBERT classes built from a small random config, and the
properties of shared layers (one parameter set per group, gradient from every application)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers
from flax import traverse_util

import model
from core.config import ConfigError
from data import sources, tasks
from model import hf
from tests.test_hf import _mask, assert_close, our_outputs
from tests import hf_cases
from trainer import metrics, runner

B, T, LENGTHS = 3, 9, (9, 6, 2)  # rows 2 and 3 are padded
# E (16) != d_model (32); 4 layers in 2 groups: layers 0, 1 apply group 0 and layers 2, 3 group 1.
_ALBERT = dict(vocab_size=97, embedding_size=16, hidden_size=32, num_hidden_layers=4, num_hidden_groups=2,
               num_attention_heads=4, intermediate_size=64, max_position_embeddings=16, type_vocab_size=2)
# name: (HF class, HF config kwargs, scan_layers of our import)
CASES: dict[str, tuple[str, dict[str, Any], bool]] = {
    'model': ('AlbertModel', _ALBERT, True),
    'mlm': ('AlbertForMaskedLM', {**_ALBERT, 'hidden_act': 'gelu'}, False),
    'cls3': ('AlbertForSequenceClassification', {**_ALBERT, 'num_labels': 3, 'num_hidden_groups': 1}, True),
    # ALBERT's pretraining head: prediction_logits and sop_logits (HF's names; ours 'logits', 'sop_logits').
    'pretraining': ('AlbertForPreTraining', _ALBERT, False),
}


Case = hf_cases.Case


@torch.no_grad()
def hf_outputs(m: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """HF's outputs under our names: hidden, pooled (with a pooler), logits (with a head), sop_logits."""
  x = {k: torch.from_numpy(v) for k, v in inputs.items()}
  base = m.base_model(**x)
  out = {'hidden': base.last_hidden_state}
  if base.pooler_output is not None:
    out['pooled'] = base.pooler_output
  if isinstance(m, transformers.AlbertForPreTraining):
    result = m(**x)
    out |= {'logits': result.prediction_logits, 'sop_logits': result.sop_logits}
  elif m is not m.base_model:
    out['logits'] = m(**x).logits
  return {k: v.numpy() for k, v in out.items()}


def load_case(name: str, tmp_path_factory: pytest.TempPathFactory) -> Case:
  cls_name, kwargs, scan = CASES[name]
  m, hf_dir = hf_cases.saved_model(name, cls_name, kwargs, list(CASES).index(name), tmp_path_factory)
  rng = np.random.default_rng(0)
  inputs = {'input_ids': rng.integers(0, 97, (B, T)), 'attention_mask': _mask(LENGTHS, T),
            'token_type_ids': rng.integers(0, 2, (B, T))}
  cfg, params = hf.from_pretrained(hf_dir, scan_layers=scan)
  return Case(name, m, hf_dir, inputs, hf_outputs(m, inputs), cfg, params)


get_case, case = hf_cases.fixtures(load_case, CASES)


def test_import_matches_hf(case: Case) -> None:
  _, kwargs, scan = CASES[case.name]
  assert (case.cfg.embedding_size, case.cfg.d_model, case.cfg.num_layers) == (16, 32, 4)
  assert case.cfg.num_layer_groups == kwargs['num_hidden_groups'] and case.cfg.scan_layers == scan
  assert_close(our_outputs(case.cfg, case.params, case.inputs), case.ref, case.inputs, atol=1e-4)


def test_export_round_trip(case: Case, tmp_path: Path) -> None:
  """HF -> ours -> our save_pretrained -> HF: the same outputs, no missing or unexpected keys."""
  hf.save_pretrained(case.cfg, case.params, tmp_path)
  config = json.loads((tmp_path / 'config.json').read_text())
  assert config['model_type'] == 'albert' and config['architectures'] == [type(case.hf_model).__name__]
  reloaded, info = type(case.hf_model).from_pretrained(tmp_path, output_loading_info=True)
  assert {k: v for k, v in info.items() if v} == {}
  assert_close(hf_outputs(reloaded.eval(), case.inputs), case.ref, case.inputs, atol=1e-5)


@pytest.fixture(scope='module')
def mlm(get_case) -> Case:
  return get_case('mlm')


def test_a_pretraining_model_exports_as_its_masked_lm_or_its_encoder(get_case, mlm: Case, tmp_path: Path) -> None:
  """save_pretrained(head='lm') writes AlbertForMaskedLM (the pooler and sop_classifier left out), head='none'
  AlbertModel (with the pooler): HF loads each with nothing missing or unexpected and gives the pretraining
  model's MLM logits, or its hidden states and pooled [CLS]. A head the parameters do not hold is an error."""
  case = get_case('pretraining')
  for head, cls, outputs in (('lm', 'AlbertForMaskedLM', ('hidden', 'logits')),
                             ('none', 'AlbertModel', ('hidden', 'pooled'))):
    hf.save_pretrained(case.cfg, case.params, tmp_path / head, head=head)
    assert json.loads((tmp_path / head / 'config.json').read_text())['architectures'] == [cls]
    reloaded, info = getattr(transformers, cls).from_pretrained(tmp_path / head, output_loading_info=True)
    assert {k: v for k, v in info.items() if v} == {}
    got = hf_outputs(reloaded.eval(), case.inputs)
    assert set(got) == set(outputs)
    assert_close(got, {k: case.ref[k] for k in outputs}, case.inputs, atol=1e-5)
  with pytest.raises(hf.CheckpointError) as error:
    hf.save_pretrained(mlm.cfg, mlm.params, tmp_path / 'more', head='pretraining')
  assert str(error.value) == ("save_pretrained(head='pretraining'): a model of head=lm has no pooler/bias, "
                              'pooler/kernel, sop_classifier/bias, sop_classifier/kernel; export it as head=\'lm\', '
                              'or as a head whose parameters it holds')


def _edited_copy(c: Case, path: Path, edit_tensors=None, **config: Any) -> Path:
  path.mkdir()
  (path / 'config.json').write_text(json.dumps({**json.loads((c.hf_dir / 'config.json').read_text()), **config}))
  tensors = safetensors.numpy.load_file(c.hf_dir / 'model.safetensors')
  if edit_tensors:
    edit_tensors(tensors)
  safetensors.numpy.save_file(tensors, path / 'model.safetensors', metadata={'format': 'pt'})
  return path


def test_strict_import(mlm: Case, tmp_path: Path) -> None:
  """Every tensor is mapped or named; buffers are checked; inner groups of several layers are refused."""
  with pytest.raises(hf.CheckpointError, match=r'config\.json sets inner_group_num=2; only 1 is supported'):
    hf.from_pretrained(_edited_copy(mlm, tmp_path / 'inner', inner_group_num=2))
  layer = 'albert.encoder.albert_layer_groups.1.albert_layers.0'
  with pytest.raises(hf.CheckpointError, match=rf'1 tensor\(s\) missing from the file: {layer}\.ffn_output\.bias'):
    hf.from_pretrained(_edited_copy(mlm, tmp_path / 'missing', lambda t: t.pop(f'{layer}.ffn_output.bias')))
  sop = {'sop_classifier.classifier.weight': np.ones((2, 32), np.float32)}  # the pretraining head
  with pytest.raises(hf.CheckpointError, match=r'no parameter takes: sop_classifier\.classifier\.weight'):
    hf.from_pretrained(_edited_copy(mlm, tmp_path / 'extra', lambda t: t.update(sop)))
  buffers = {'albert.embeddings.position_ids': np.arange(16)[None], 'albert.embeddings.token_type_ids':
             np.zeros((1, 16), np.int64)}
  cfg, params = hf.from_pretrained(_edited_copy(mlm, tmp_path / 'buffers', lambda t: t.update(buffers)))
  assert_close(our_outputs(cfg, params, mlm.inputs), mlm.ref, mlm.inputs, atol=1e-4)
  def edit(t):
    t.update(buffers, **{'albert.embeddings.token_type_ids': np.ones((1, 16), np.int64)})
  with pytest.raises(hf.CheckpointError, match=r'token_type_ids: a buffer whose values'):
    hf.from_pretrained(_edited_copy(mlm, tmp_path / 'bad_buffer', edit))


def test_export_refuses_what_neither_bert_nor_albert_expresses(mlm: Case, tmp_path: Path) -> None:
  # One line per encoder model type that was tried, in SPECS order.
  with pytest.raises(hf.CheckpointError, match=r"(?s)BertForMaskedLM cannot express this config: embedding_size=16 "
                                               r".*\nAlbertForMaskedLM cannot express this config: norm_placement='pre'"):
    hf.save_pretrained(mlm.cfg.replace(norm_placement='pre'), mlm.params, tmp_path)


# Shared layers, on our side alone.
_TINY = model.ModelConfig(vocab_size=97, d_model=32, num_heads=4, d_ff=64, num_layers=4, num_layer_groups=2,
                          embedding_size=16, max_len=16, num_token_types=2, embed_norm=True, head='lm',
                          lm_head_bias=True, activation='gelu_tanh', dropout_rate=0.0, attention_dropout_rate=0.0)


def _layer_shapes(cfg: model.ModelConfig) -> dict[str, tuple[int, ...]]:
  tree = jax.eval_shape(lambda: model.init_params(model.build(cfg), jax.random.key(0)))
  return {k: v.shape for k, v in traverse_util.flatten_dict(tree['encoder'], sep='/').items() if 'layers' in k}


@pytest.mark.parametrize('scan', [True, False])
def test_one_parameter_set_per_group(scan: bool) -> None:
  shapes = _layer_shapes(_TINY.replace(scan_layers=scan))
  if scan:  # stacked over the 2 groups, not the 4 layers
    assert {k.split('/')[0] for k in shapes} == {'layers'} and {s[0] for s in shapes.values()} == {2}
    assert shapes['layers/ffn/wi/kernel'] == (2, 32, 64)
  else:
    assert {k.split('/')[0] for k in shapes} == {'layers_0', 'layers_1'}
  unshared = _layer_shapes(_TINY.replace(scan_layers=scan, num_layer_groups=None))
  assert sum(np.prod(s) for s in unshared.values()) == 2 * sum(np.prod(s) for s in shapes.values())


def test_every_application_of_a_shared_layer_gets_gradient() -> None:
  """One set applied twice equals two layers holding copies of it, and its gradient is the sum of the copies'
  gradients, scanned or not: it would not be if only one application contributed (checked too)."""
  cfg = _TINY.replace(num_layers=2, num_layer_groups=1, head='none', lm_head_bias=False)
  shapes = jax.eval_shape(lambda: model.init_params(model.build(cfg.replace(scan_layers=False)), jax.random.key(0)))
  rng = np.random.default_rng(1)
  params = jax.tree.map(lambda s: jnp.asarray(0.2 * rng.standard_normal(s.shape), jnp.float32), shapes)
  layer = params['encoder']['layers_0']
  copies = {**params, 'encoder': {**params['encoder'], 'layers_1': layer}}
  ids = jnp.asarray(rng.integers(0, 97, (2, 8)), jnp.int32)
  weights = jnp.asarray(rng.standard_normal((2, 8, 32)), jnp.float32)

  def loss(cfg, p):
    return jnp.sum(model.build(cfg).apply({'params': p}, input_ids=ids)['hidden'] * weights)

  grad = jax.jit(jax.value_and_grad(loss, argnums=1), static_argnums=0)
  ref_loss, ref = grad(cfg.replace(scan_layers=False, num_layer_groups=None), copies)
  first, second = ref['encoder']['layers_0'], ref['encoder']['layers_1']
  for scan in (False, True):
    value, got = grad(cfg.replace(scan_layers=scan), model.stack_layers(params) if scan else params)
    np.testing.assert_allclose(value, ref_loss, rtol=1e-5)
    got = model.unstack_layers(got)['encoder']['layers_0'] if scan else got['encoder']['layers_0']
    jax.tree.map(lambda a, b, c: np.testing.assert_allclose(a, b + c, rtol=1e-4, atol=1e-5), got, first, second)
    assert np.abs(got['ffn']['wi']['kernel'] - second['ffn']['wi']['kernel']).max() > 1e-3


@pytest.mark.parametrize('change, message', [
    (dict(num_layer_groups=3), r'model\.num_layer_groups=3: must divide num_layers=4'),
    (dict(num_layer_groups=8), r'model\.num_layer_groups=8: must divide num_layers=4 \(and so not exceed it\)'),
    (dict(num_layer_groups=0), r'model\.num_layer_groups=0: must be a positive integer'),
    (dict(embedding_size=0), r'model\.embedding_size=0: must be a positive integer'),
    (dict(family='decoder', head='lm', lm_head_bias=False),
     r'model\.embedding_size=16: is implemented for family=encoder only, not decoder'),
])
def test_bad_configs_name_the_field(change: dict[str, Any], message: str) -> None:
  with pytest.raises(ConfigError, match=message):
    _TINY.replace(**change)


@pytest.mark.parametrize('change, message', [
    (dict(head='pretraining'),
     r"model\.pooler=False: the pretraining head's sentence-order classifier reads the pooled first token: set "
     r'model\.pooler=True'),
    (dict(head='pretraining', pooler=True, family='decoder', embedding_size=None, num_layer_groups=None),
     r'model\.head=.pretraining.: the pretraining head \(MLM \+ sentence order\) sits on an encoder: use '
     r'family=encoder'),
])
def test_bad_pretraining_heads_name_the_field(change: dict[str, Any], message: str) -> None:
  with pytest.raises(ConfigError, match=message):
    _TINY.replace(**change)


def test_mlm_sop_needs_the_pretraining_head() -> None:
  data = tasks.DataConfig(source='builtin:sotu', objective='mlm_sop', seq_len=8)
  info = sources.TaskInfo('builtin:sotu', ('text',), None, 0)
  with pytest.raises(ValueError) as error:
    runner.check_model_fits_data(_TINY, data, info, 97, token_types=2)
  assert str(error.value) == ('data.objective=mlm_sop trains family=encoder with head=pretraining, but '
                              'model.family=encoder, model.head=lm: change one of them')
  runner.check_model_fits_data(_TINY.replace(head='pretraining', pooler=True), data, info, 97, token_types=2)


def test_flops_count_every_application_and_the_embedding_projection() -> None:
  d, e, ff, L, V, t = 32, 16, 64, 4, 97, 8
  layer = t * (4 * d * d + 2 * d * ff) + 2 * d * t * t
  assert metrics.forward_macs(_TINY, t) == L * layer + t * e * d + t * (d * e + V * e)
  assert metrics.forward_macs(_TINY.replace(num_layer_groups=None), t) == metrics.forward_macs(_TINY, t)
  # The pretraining head adds the pooler and the sentence-order classifier, once per example.
  pretraining = _TINY.replace(head='pretraining', pooler=True)
  assert metrics.forward_macs(pretraining, t) == metrics.forward_macs(_TINY, t) + d * d + d * 2
