"""train.init_from: fine-tuning starts from an HF checkpoint directory or one of our workdirs, keeping the
tensors both models have, dropping heads this model lacks and initialising heads it adds."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest
import torch
import transformers

from trainer import runner
from configs import bert_tiny
from model import hf
from trainer.step import init_train_state

_TINY = dict(d_model=32, num_heads=2, d_ff=64, num_layers=1, max_len=64, vocab_size=30522)


def classifier_config():
  config = bert_tiny.get_config()
  config.model.update(_TINY | dict(head='classifier', num_labels=2, pooler=True, lm_head_bias=False))
  config.data.update(source='builtin:movie_sentiment/binary', objective='classification', seq_len=32,
                     tokenizer='wordpiece')
  config.train.update(batch_size=8, num_steps=2, eval_batches=1)
  config.optim.warmup_steps = 1
  return config


@pytest.fixture(scope='module')
def hf_mlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
  """A random HF BertForMaskedLM of the tiny shape (MiniLM's vocabulary size)."""
  torch.manual_seed(0)
  config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=64)
  path = tmp_path_factory.mktemp('hf_mlm')
  transformers.BertForMaskedLM(config).eval().save_pretrained(path)
  return path


def test_init_from_an_hf_mlm_checkpoint_into_a_classifier(hf_mlm_dir: Path, tmp_path: Path):
  run = runner.build_run(classifier_config(), tmp_path)
  state = init_train_state(run.module, run.tx, jax.random.key(0), run.abstract)
  fresh = jax.tree.map(np.asarray, state.params)
  loaded = runner._initial_params(run, str(hf_mlm_dir), state.params)  # pylint: disable=protected-access
  _, reference = hf.from_pretrained(hf_mlm_dir, scan_layers=run.model_cfg.scan_layers)
  np.testing.assert_array_equal(loaded['token_embed']['embedding'], reference['token_embed']['embedding'])
  jax.tree.map(np.testing.assert_array_equal, loaded['encoder'], jax.tree.map(np.asarray, reference['encoder']))
  # The classifier and the pooler are new (BertForMaskedLM has neither): they keep their initialisation;
  # the MLM head's tensors are dropped.
  np.testing.assert_array_equal(loaded['classifier']['kernel'], fresh['classifier']['kernel'])
  np.testing.assert_array_equal(loaded['pooler']['kernel'], fresh['pooler']['kernel'])
  assert 'mlm_dense' not in loaded and 'mlm_dense' in reference
  shardings = jax.tree.map(lambda x: x.sharding, state.params)
  assert jax.tree.map(lambda x: x.sharding, loaded) == shardings


def test_init_from_an_hf_regression_head_keeps_its_predictions(tmp_path: Path):
  """An HF regression head (label units) loaded into a standardized head (train.standardize_targets)
  is re-expressed so that the model predicts what it predicted in HF."""
  torch.manual_seed(1)
  hf_config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=64, max_position_embeddings=64, num_labels=1,
                                      problem_type='regression')
  hf_model = transformers.BertForSequenceClassification(hf_config).eval()
  with torch.no_grad():
    hf_model.classifier.bias.fill_(1.5)  # a head far from HF's init: the re-expression must carry the bias
  hf_model.save_pretrained(tmp_path / 'hf')
  config = classifier_config()
  config.model.num_labels = 1
  config.data.update(source='builtin:movie_sentiment/regression', objective='regression')
  config.train.standardize_targets = True
  run = runner.build_run(config, tmp_path / 'run')
  assert run.model_cfg.target_scale > 1  # ratings in [-4, 4]
  state = init_train_state(run.module, run.tx, jax.random.key(0), run.abstract)
  params = runner._initial_params(run, str(tmp_path / 'hf'), state.params)  # pylint: disable=protected-access
  ids = np.random.default_rng(0).integers(1000, 30000, (2, 9)).astype(np.int32)
  ours = run.module.apply({'params': params}, input_ids=ids, attention_mask=np.ones_like(ids))['logits']
  with torch.no_grad():
    want = hf_model(input_ids=torch.from_numpy(ids).long()).logits.numpy()
  np.testing.assert_allclose(np.asarray(ours), want, atol=1e-4)


def test_init_from_a_shape_mismatch_names_the_tensor(hf_mlm_dir: Path, tmp_path: Path):
  config = classifier_config()
  config.model.d_ff = 128
  run = runner.build_run(config, tmp_path)
  state = init_train_state(run.module, run.tx, jax.random.key(0), run.abstract)
  with pytest.raises(ValueError, match=r"train.init_from: \['encoder'\]\['layers_0'\]\['ffn'\]\['wi'\]\['bias'\] "
                                       r'has shape \(64,\) there but \(128,\) here'):
    runner._initial_params(run, str(hf_mlm_dir), state.params)  # pylint: disable=protected-access


def test_init_from_something_else_is_an_error(tmp_path: Path):
  run = runner.build_run(classifier_config(), tmp_path / 'run')
  state = init_train_state(run.module, run.tx, jax.random.key(0), run.abstract)
  (tmp_path / 'empty').mkdir()
  with pytest.raises(ValueError, match='neither an HF checkpoint directory'):
    runner._initial_params(run, str(tmp_path / 'empty'), state.params)  # pylint: disable=protected-access


def test_init_from_an_albert_pretraining_checkpoint_keeps_the_pooler_and_drops_the_sentence_order_head(
    tmp_path: Path):
  """A fine-tune from ALBERT's pretraining (mlm_sop, HF's AlbertForPreTraining): the encoder and the pooler the
  sentence order trained are loaded, the MLM head and the sentence-order classifier are dropped, the task's
  classifier is new."""
  torch.manual_seed(2)
  hf_config = transformers.AlbertConfig(vocab_size=30522, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
  transformers.AlbertForPreTraining(hf_config).eval().save_pretrained(tmp_path / 'hf')
  config = classifier_config()
  config.model.update(embedding_size=16, num_layers=2, num_layer_groups=1, activation='gelu_tanh')
  run = runner.build_run(config, tmp_path / 'run')
  state = init_train_state(run.module, run.tx, jax.random.key(0), run.abstract)
  fresh = jax.tree.map(np.asarray, state.params)
  loaded = runner._initial_params(run, str(tmp_path / 'hf'), state.params)  # pylint: disable=protected-access
  _, reference = hf.from_pretrained(tmp_path / 'hf', scan_layers=run.model_cfg.scan_layers)
  assert {'sop_classifier', 'mlm_dense', 'pooler'} <= set(reference) and 'sop_classifier' not in loaded
  jax.tree.map(np.testing.assert_array_equal, loaded['pooler'], jax.tree.map(np.asarray, reference['pooler']))
  jax.tree.map(np.testing.assert_array_equal, loaded['encoder'], jax.tree.map(np.asarray, reference['encoder']))
  np.testing.assert_array_equal(loaded['classifier']['kernel'], fresh['classifier']['kernel'])
