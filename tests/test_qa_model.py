"""Extractive QA, the model side: the span head (model.head=span), its loss (LossKind.SPAN) and HF's
*ForQuestionAnswering import and export, against HF transformers built from small random configs."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jax
import numpy as np
import pytest
import torch
import transformers

import model
import objectives
from core.config import ConfigError
from data.tasks import Objective
from model import hf
from objectives import LossKind
from tests import hf_cases
from tests.test_hf import _mask, assert_close, our_outputs
from tests.test_step import FAST_COMPILE, OPTIM
from tests.tiny import TINY, VOCAB
from trainer import losses, metrics, runner
from trainer.distill import DistillConfig
from trainer.mesh import MeshConfig
from trainer.optim import make_optimizer
from trainer.step import StepConfig, abstract_train_state, compile_eval_step, compile_train_step, init_train_state

B, T, LENGTHS = 3, 9, (9, 6, 2)  # rows 2 and 3 are padded
_BERT = dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=16, type_vocab_size=2)
# RoBERTa's positions start at row pad + 1 = 2: T + 2 rows at least.
_ROBERTA = _BERT | dict(max_position_embeddings=T + 2, type_vocab_size=1)
_DISTILBERT = dict(vocab_size=97, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=16)
_ALBERT = _BERT | dict(embedding_size=16, num_hidden_layers=4, num_hidden_groups=2)
# name: (HF class, HF config kwargs, scan_layers of our import)
CASES: dict[str, tuple[str, dict[str, Any], bool]] = {
    'bert': ('BertForQuestionAnswering', _BERT, True),
    'roberta': ('RobertaForQuestionAnswering', _ROBERTA, False),
    'distilbert': ('DistilBertForQuestionAnswering', _DISTILBERT, True),
    'albert': ('AlbertForQuestionAnswering', _ALBERT, False),
}


Case = hf_cases.Case


def make_inputs(hf_model: Any, seed: int) -> dict[str, np.ndarray]:
  """Ids with padding (HF RoBERTa finds it by the pad id, ours by the mask); token types where the model has them."""
  rng = np.random.default_rng(seed)
  config = hf_model.config
  mask = _mask(LENGTHS, T)
  pad = config.pad_token_id
  real = rng.integers(0, config.vocab_size - 1, (B, T))
  out = {'input_ids': np.where(mask, real + (real >= pad), pad), 'attention_mask': mask}
  if config.model_type in ('bert', 'albert'):
    out['token_type_ids'] = rng.integers(0, 2, (B, T)) * mask
  return out


@torch.no_grad()
def hf_outputs(m: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  x = {k: torch.from_numpy(v) for k, v in inputs.items()}
  result = m(**x)
  return {'hidden': m.base_model(**x).last_hidden_state.numpy(),
          'logits': torch.stack([result.start_logits, result.end_logits], dim=-1).numpy()}


def load_case(name: str, tmp_path_factory: pytest.TempPathFactory) -> Case:
  cls_name, kwargs, scan = CASES[name]
  m, hf_dir = hf_cases.saved_model(f'qa_{name}', cls_name, kwargs, list(CASES).index(name), tmp_path_factory)
  inputs = make_inputs(m, seed=len(name))
  cfg, params = hf.from_pretrained(hf_dir, scan_layers=scan)
  return Case(name, m, hf_dir, inputs, hf_outputs(m, inputs), cfg, params)


get_case, case = hf_cases.fixtures(load_case, CASES)


def test_import_matches_hf(case: Case) -> None:
  assert (case.cfg.head, case.cfg.pooler, case.cfg.scan_layers) == (model.Head.SPAN, False, CASES[case.name][2])
  ours = our_outputs(case.cfg, case.params, case.inputs)
  assert ours['logits'].shape == (B, T, 2) and ours['logits'].dtype == np.float32
  assert_close(ours, case.ref, case.inputs, atol=1e-4)


def test_export_round_trip(case: Case, tmp_path: Path) -> None:
  """HF -> ours -> our save_pretrained -> HF's from_pretrained: the same logits, no missing or unexpected keys."""
  hf.save_pretrained(case.cfg, case.params, tmp_path)
  config = json.loads((tmp_path / 'config.json').read_text())
  assert config['architectures'] == [CASES[case.name][0]]
  reloaded, info = type(case.hf_model).from_pretrained(tmp_path, output_loading_info=True)
  assert {k: v for k, v in info.items() if v} == {}
  assert_close(hf_outputs(reloaded.eval(), case.inputs), case.ref, case.inputs, atol=1e-5)


def test_a_file_without_the_span_head_is_an_error(get_case, tmp_path: Path) -> None:
  """As strict as the other classes: a *ForQuestionAnswering file without qa_outputs names the missing tensors."""
  source = get_case('bert')
  state = {k: v for k, v in source.hf_model.state_dict().items() if not k.startswith('qa_outputs.')}
  source.hf_model.save_pretrained(tmp_path, state_dict=state)
  with pytest.raises(hf.CheckpointError, match=r'2 tensor\(s\) missing from the file: qa_outputs\.bias, '
                                               r'qa_outputs\.weight'):
    hf.from_pretrained(tmp_path)


@pytest.mark.parametrize('positions', [
    ((0, 4, 8), (2, 4, 8)),  # every span in the window; row 0 starts at [CLS]
    ((3, 11, 1), (5, 9, 1)),  # row 1's beyond the window: HF clamps them to T and ignores the row
])
def test_the_loss_is_hfs(get_case, positions) -> None:
  """losses.loss_sums(SPAN) over its weight equals BertForQuestionAnswering's outputs.loss for the same positions,
  also where positions beyond the window are clamped and ignored; 'correct' counts rows with both argmaxes right."""
  case = get_case('bert')
  starts, ends = (np.asarray(p, np.int32) for p in positions)
  with torch.no_grad():
    want = case.hf_model(**{k: torch.from_numpy(v) for k, v in case.inputs.items()},
                         start_positions=torch.from_numpy(starts).long(),
                         end_positions=torch.from_numpy(ends).long()).loss.item()
  logits = our_outputs(case.cfg, case.params, case.inputs)['logits']
  batch = {'input_ids': case.inputs['input_ids'], 'start_positions': starts, 'end_positions': ends}
  sums = losses.loss_sums(LossKind.SPAN, logits, batch)
  in_window = (starts < T) & (ends < T)
  assert float(sums['weight']) == float(losses.total_weight(LossKind.SPAN, batch)) == in_window.sum()
  np.testing.assert_allclose(float(sums['loss'] / sums['weight']), want, rtol=1e-5)
  hits = (logits[..., 0].argmax(-1) == starts) & (logits[..., 1].argmax(-1) == ends) & in_window
  assert float(sums['correct']) == hits.sum()
  each = losses.loss_sums(LossKind.SPAN, logits, batch, per_example=True)
  assert each['loss'].shape == (B,)
  np.testing.assert_allclose(np.asarray(each['loss']).sum(), float(sums['loss']), rtol=1e-6)


def test_span_loss_weights_and_accuracy_by_hand() -> None:
  """Two positions per row: an exact span is correct, a right start with a wrong end is not; a negative position (an
  unlabelled row, data.batch.UNLABELED) weighs 0 like one beyond the window."""
  logits = np.full((4, 3, 2), -5.0, np.float32)
  logits[:, 1, 0] = logits[:, 2, 1] = 5.0  # every row predicts the span (1, 2)
  batch = {'input_ids': np.zeros((4, 3), np.int32), 'start_positions': np.asarray([1, 1, -1, 0], np.int32),
           'end_positions': np.asarray([2, 0, 2, 3], np.int32)}
  sums = jax.jit(lambda x, b: losses.loss_sums(LossKind.SPAN, x, b, per_example=True))(logits, batch)
  each = {k: np.asarray(v) for k, v in sums.items()}
  np.testing.assert_array_equal(each['weight'], [1, 1, 0, 0])
  np.testing.assert_array_equal(each['correct'], [1, 0, 0, 0])

  def ce(row: np.ndarray, position: int) -> float:
    return float(jax.nn.logsumexp(row) - row[position])

  np.testing.assert_allclose(each['loss'][:2], [ce(logits[0, :, 0], 1) / 2 + ce(logits[0, :, 1], 2) / 2,
                                                ce(logits[1, :, 0], 1) / 2 + ce(logits[1, :, 1], 0) / 2], rtol=1e-6)
  np.testing.assert_array_equal(each['loss'][2:], 0.0)


SPAN = TINY['bert'].replace(head='span', tie_embeddings=False, lm_head_bias=False)


def test_a_train_step_learns_spans() -> None:
  """The compiled, sharded train step on a span model and a fixed batch with start / end positions: the loss falls
  and the span accuracy rises; the eval step's sums are the same loss without dropout."""
  rng = np.random.default_rng(0)
  b, t = 8, 16
  mask = _mask((16, 12, 16, 9, 16, 16, 5, 16), t).astype(np.int32)
  starts = rng.integers(0, 5, b).astype(np.int32)
  batch = {'input_ids': (rng.integers(5, VOCAB, (b, t)) * mask).astype(np.int32), 'attention_mask': mask,
           'token_type_ids': np.zeros((b, t), np.int32), 'start_positions': starts,
           'end_positions': (starts + rng.integers(0, 3, b)).astype(np.int32)}
  mesh = MeshConfig(data=2, fsdp=2, tensor=2).context(jax.devices()[:8])
  module = model.build(SPAN)
  tx, schedule = make_optimizer(OPTIM)
  abstract = abstract_train_state(module, tx, mesh)
  cfg = StepConfig(objective=Objective.EXTRACTIVE_QA)
  assert cfg.loss_kind is LossKind.SPAN
  batch = mesh.to_global(batch)
  step = compile_train_step(module, tx, schedule, cfg, mesh, abstract, batch, FAST_COMPILE)
  state = init_train_state(module, tx, jax.random.key(0), abstract, FAST_COMPILE)
  evaluate = compile_eval_step(module, cfg, mesh, abstract.params, batch, FAST_COMPILE)
  first = {k: float(v) for k, v in evaluate(state.params, batch).items()}
  history = []
  for _ in range(6):
    state, step_metrics = step(state, batch, cfg.dropout_key(1))
    history.append({k: float(v) for k, v in step_metrics.items()})
  assert set(first) == {'loss', 'correct', 'weight'} and first['weight'] == history[0]['weight'] == b
  np.testing.assert_allclose(first['loss'] / first['weight'], history[0]['loss'], rtol=1e-5)  # no dropout in TINY
  assert history[-1]['loss'] < 0.5 * history[0]['loss'], [m['loss'] for m in history]
  assert history[-1]['accuracy'] > history[0]['accuracy'], [m['accuracy'] for m in history]


def test_distilling_a_span_objective_is_an_error() -> None:
  with pytest.raises(ValueError, match="distill.teacher='runs/qa': data.objective=.* scores answer spans"):
    StepConfig(objective=Objective.EXTRACTIVE_QA, distill=DistillConfig(teacher='runs/qa'))


@pytest.mark.parametrize('family', ['decoder', 'encoder_decoder'])
def test_span_head_on_a_decoder_is_an_error(family: str) -> None:
  with pytest.raises(ConfigError, match=f"model.head='span': .* but model.family={family}: use family=encoder"):
    model.ModelConfig(family=family, head='span')


def test_span_head_with_a_pooler_is_an_error() -> None:
  with pytest.raises(ConfigError, match=r'model.pooler=True: the span head reads every token.*set model.pooler=False'):
    SPAN.replace(pooler=True)


def test_flops_of_the_span_head() -> None:
  """The encoder as with no head, plus the (d_model, 2) matmul at every token."""
  seq = 16
  assert metrics.forward_macs(SPAN, seq) == metrics.forward_macs(SPAN.replace(head='none'), seq) + seq * 32 * 2


def test_a_base_checkpoint_initialises_the_encoder_of_a_span_model(tmp_path: Path) -> None:
  """train.init_from=<a BertModel directory> (MiniLM's layout) into head=span: the encoder is taken, the pooler
  dropped and qa_outputs keeps its fresh initialisation (runner._initial_params, as for a classifier)."""
  torch.manual_seed(0)
  transformers.BertModel(transformers.BertConfig(**_BERT)).eval().save_pretrained(tmp_path / 'base')
  span_cfg = model.ModelConfig(**(hf.from_pretrained(tmp_path / 'base', scan_layers=False)[0].to_dict()
                                  | dict(head='span', pooler=False)))
  params = jax.jit(lambda key: model.init_params(model.build(span_cfg), key))(jax.random.key(0))
  fresh = jax.tree.map(np.asarray, params)
  run = SimpleNamespace(model_cfg=span_cfg)  # what _initial_params reads of a run for an HF directory
  loaded = runner._initial_params(run, str(tmp_path / 'base'), params)  # pylint: disable=protected-access
  _, reference = hf.from_pretrained(tmp_path / 'base', scan_layers=False)
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, loaded['encoder']),
               jax.tree.map(np.asarray, reference['encoder']))
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, loaded['qa_outputs']), fresh['qa_outputs'])
  assert 'pooler' in reference and 'pooler' not in loaded
