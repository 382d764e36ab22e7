"""The seq2seq objective through train.py: configs/seq2seq_tiny.py, shrunk, trains on the CPU and its
validation loss falls; a model that cannot train it is refused before anything compiles.

The run reads `builtin:sentence_reversal`, built into a temporary data_dir from the vaderSentiment package
of the raw cache (fetched through pip once, as every built-in dataset; skipped when it cannot be fetched).
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_collections
import pytest

import model
from trainer import runner
from data import prepare, raw, sources, tasks
from trainer import metrics

VOCAB = 600
STEPS = 40
EVAL_EVERY = 10
# 1 layer of width 32, a BPE vocabulary of 600 and batches of 8 (one row per simulated device): about 15 s.
TINY = {'model.d_model': 32, 'model.num_heads': 2, 'model.d_ff': 64, 'model.num_layers': 1,
        'model.num_decoder_layers': 1, 'model.vocab_size': VOCAB, 'model.dropout_rate': 0.0,
        'data.tokenizer': f'sentencepiece:auto,vocab_size={VOCAB},algorithm=bpe', 'train.batch_size': 8,
        'train.num_steps': STEPS, 'train.eval_every': EVAL_EVERY, 'train.eval_batches': 2,
        'train.log_every': EVAL_EVERY, 'train.checkpoint_every': STEPS, 'optim.learning_rate': 3e-3,
        'optim.warmup_steps': 5, 'optim.schedule': 'constant'}


def make_config(overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """configs/seq2seq_tiny.py with `section.field` overrides, as `--config.section.field=value` sets them."""
  config = importlib.import_module('configs.seq2seq_tiny').get_config()
  for path, value in overrides.items():
    section, field = path.split('.')
    config[section][field] = value
  return config


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
  out = tmp_path_factory.mktemp('tfds')
  try:
    prepare.build('sentence_reversal', out)
  except raw.FetchError as e:
    pytest.skip(f'the vaderSentiment package is not available: {e}')
  return out


def test_config_resolves() -> None:
  config = make_config({})
  data = tasks.DataConfig.from_dict(config.data)
  assert data.objective is tasks.Objective.SEQ2SEQ and data.targets_len == 48
  cfg = model.ModelConfig.from_dict(config.model)
  assert (cfg.family, cfg.head, cfg.position) == (model.Family.ENCODER_DECODER, model.Head.LM,
                                                  model.Position.SINUSOIDAL)


def test_validation_loss_falls(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
  # No XLA backend optimisations: half of each compile, nothing gained for a model this small.
  options = {'xla_backend_optimization_level': 0}
  for name in ('compile_train_step', 'compile_eval_step', 'init_train_state'):
    monkeypatch.setattr(runner, name, functools.partial(getattr(runner, name), compiler_options=options))
  final = runner.train_and_evaluate(make_config(TINY | {'data.data_dir': str(data_dir)}), tmp_path)
  evals = [(row['step'], row['loss']) for row in metrics.read_metrics(tmp_path / metrics.JSONL_NAME,
                                                                      metrics.Split.EVAL)]
  assert [step for step, _ in evals] == list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY))
  losses = [loss for _, loss in evals]
  assert losses[-1] == pytest.approx(final['loss'])
  assert losses[-1] < losses[0] - 0.5 and losses[-1] < math.log(VOCAB) - 1.0, losses  # ln V: a uniform guess
  assert 0.0 < final['accuracy'] < 1.0  # token accuracy of the teacher-forced decoder


def _info() -> sources.TaskInfo:
  return sources.TaskInfo('tsv:x', ('source',), None, 0, target_feature='target')


@pytest.mark.parametrize('overrides, message', [
    ({'model.family': 'decoder'}, r'data.objective=seq2seq trains family=encoder_decoder with head=lm, but '
                                  r'model.family=decoder'),
    ({'data.decoder_seq_len': 128}, r'data.decoder_seq_len=128 exceeds model.max_len=64'),
], ids=['family', 'decoder_len'])
def test_model_must_fit_the_data(overrides: Mapping[str, Any], message: str) -> None:
  config = make_config(overrides)
  with pytest.raises(ValueError, match=message):
    runner.check_model_fits_data(model.ModelConfig.from_dict(config.model), tasks.DataConfig.from_dict(config.data),
                                _info(), VOCAB)
