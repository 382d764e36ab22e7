"""The named setups in configs/: they resolve, override from the command line, and have the published sizes."""

from __future__ import annotations

import dataclasses
import importlib
import pathlib
import subprocess
import sys

import pytest

import model
from configs import presets
from data import tasks
from trainer import distributed
from trainer.config import sections

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / 'configs'
SETUPS = sorted(p.stem for p in CONFIG_DIR.glob('*.py') if p.stem not in ('__init__', 'presets'))


def _model_config(name: str, arg: str | None = None) -> model.ModelConfig:
  return model.ModelConfig.from_dict(importlib.import_module(f'configs.{name}').get_config(arg).model)


@pytest.mark.parametrize('name', SETUPS)
def test_every_setup_resolves_and_documents_its_command(name):
  module = importlib.import_module(f'configs.{name}')
  config = module.get_config()
  assert set(config) >= {'model', 'data', 'train'}
  model.ModelConfig.from_dict(config.model)
  tasks.DataConfig.from_dict(config.data)
  assert f'configs/{name}.py' in module.__doc__ and 'Expected:' in module.__doc__


def _setup_configs():
  """(name, config) of every setup and a few variants."""
  for name in SETUPS:
    yield name, importlib.import_module(f'configs.{name}').get_config()
  yield 'glue:movie_regression', importlib.import_module('configs.glue').get_config('movie_regression')


def test_every_section_lists_every_field_of_its_dataclass():
  """One schema: each section is generated from its dataclass, so every field is there (overridable from the
  command line) in every setup, and nothing else is."""
  for name, config in _setup_configs():
    assert set(config) == set(sections()), name
    for section, (cls, exclude) in sections().items():
      want = {f.name for f in dataclasses.fields(cls)} - set(exclude)
      assert set(config[section]) == want, (name, section)


@pytest.mark.parametrize('section,typo,message', [
    ('data', 'packed', r"data config: unknown field\(s\) \['packed'\].*did you mean 'packed' -> 'packing'"),
    ('train', 'num_step', r"train config: unknown field\(s\) \['num_step'\].*'num_step' -> 'num_steps'"),
    ('optim', 'warmup', r"optim config: unknown field\(s\) \['warmup'\]"),
    ('mesh', 'fsd', r"mesh config: unknown field\(s\) \['fsd'\].*'fsd' -> 'fsdp'"),
])
def test_a_typo_in_any_section_is_an_error_naming_the_closest_field(tmp_path, section, typo, message):
  """A typo in a config file (`config.data.packed = True`) is never silently dropped: building the run fails,
  before anything is tokenised or compiled, naming the key and the field it was probably meant to be."""
  from trainer import runner
  config = importlib.import_module('configs.gpt_tiny').get_config()
  config[section][typo] = 1
  with pytest.raises(ValueError, match=message):
    runner.build_run(config, tmp_path)
  assert not (tmp_path / 'tokenizer').exists()


@pytest.mark.parametrize('source, message', [
    ('builtin:sotu+builtin:movie_sentiment/binary', 'is a classification dataset; only text corpora mix'),
    ('builtin:sotuu', "'sotuu' is not a built-in dataset"),
])
def test_a_source_that_cannot_be_read_fails_before_the_tokenizer_line(tmp_path, capsys, source, message):
  from trainer import runner
  config = importlib.import_module('configs.bert_tiny').get_config()
  config.data.source = source
  with pytest.raises(ValueError, match=message):
    runner.build_run(config, tmp_path)
  assert 'SentencePiece' not in capsys.readouterr().out and not (tmp_path / 'tokenizer').exists()


def test_a_setup_with_an_unknown_or_missing_field_fails_on_load():
  data = dict(source='builtin:sotu', objective='causal_lm', seq_len=8)
  with pytest.raises(ValueError, match=r"'packed' -> 'packing'"):
    presets.make_config(presets.gpt2('tiny'), data=data | {'packed': True}, optim={},
                        train=dict(num_steps=1, batch_size=1))
  with pytest.raises(ValueError, match=r'train\.batch_size: required'):
    presets.make_config(presets.gpt2('tiny'), data=data, optim={}, train=dict(num_steps=1))
  with pytest.raises(ValueError, match=r"'num_process' -> 'num_processes'"):
    distributed.maybe_initialize({'num_process': 2})


def test_a_field_without_a_default_value_is_settable_from_the_command_line():
  """None defaults are typed placeholders: `--config.data.decoder_seq_len=64` and `--config.model.head_dim=16`
  work in every setup (ml_collections refuses to override a plain None)."""
  result = subprocess.run(
      [sys.executable, '-c', 'from absl import app, flags; from ml_collections import config_flags; '
       'config_flags.DEFINE_config_file("config"); '
       'app.run(lambda _: print(flags.FLAGS.config.data.decoder_seq_len, flags.FLAGS.config.model.head_dim, '
       'flags.FLAGS.config.data.data_dir))',
       '--config', 'configs/gpt_tiny.py', '--config.data.decoder_seq_len=64', '--config.model.head_dim=16',
       '--config.data.data_dir=~/tfds'],
      cwd=CONFIG_DIR.parent, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.split() == ['64', '16', '~/tfds']


def test_main_job_with_command_line_overrides():
  """The README's main job, with an ablation given as flags (`--config.model.*`)."""
  result = subprocess.run(
      [sys.executable, 'describe.py', '--config', 'configs/gpt_tiny.py', '--config.model.position=rope',
       '--config.model.norm=rms', '--config.model.num_layers=1', '--batch_size=2', '--seq_len=16'],
      cwd=CONFIG_DIR.parent, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'family=decoder position=rope norm=rms/pre' in result.stdout and 'layers=1 ' in result.stdout
  assert 'forward (2x16)' in result.stdout and 'cross-entropy against random targets' in result.stdout


def _hf_count(make) -> int:
  """HF's parameter count (tied weights once), built on the meta device so nothing is allocated."""
  torch = pytest.importorskip('torch')
  with torch.device('meta'):
    hf_model = make()
  return sum(p.numel() for p in hf_model.parameters())


# Published sizes, as HF transformers counts them (tied weights once).
@pytest.mark.parametrize('name,arg,patch,expected', [
    ('bert_base', None, dict(head='none', pooler=True, lm_head_bias=False), 109_482_240),  # BertModel
    ('bert_base', None, {}, 109_514_298),  # BertForMaskedLM
    ('roberta_base', None, dict(head='none', pooler=True, lm_head_bias=False), 124_645_632),  # RobertaModel
    ('roberta_base', None, {}, 124_697_433),  # RobertaForMaskedLM
    ('distilbert_base', None, dict(head='none', lm_head_bias=False), 66_362_880),  # DistilBertModel
    ('distilbert_base', None, {}, 66_985_530),  # DistilBertForMaskedLM
    ('albert_base', None, dict(head='none', pooler=True, lm_head_bias=False), 11_683_584),  # AlbertModel
    ('albert_base', None, dict(head='lm', pooler=False), 11_221_680),  # AlbertForMaskedLM
    ('albert_base', None, {}, 11_813_810),  # AlbertForPreTraining
    ('gpt2_small', None, {}, 124_439_808),
    ('t5_small', None, {}, 60_506_624),
    ('t5_base', None, {}, 222_903_552),
    ('t5_small', 'v1.1', {}, 76_961_152),
    ('t5_base', 'v1.1', {}, 247_577_856),
])
def test_parameter_counts_of_published_configs(name, arg, patch, expected):
  assert model.count_params(_model_config(name, arg).replace(**patch)) == expected


def test_published_counts_agree_with_hf():
  transformers = pytest.importorskip('transformers')
  assert _hf_count(lambda: transformers.BertModel(transformers.BertConfig())) == 109_482_240
  assert _hf_count(lambda: transformers.BertForMaskedLM(transformers.BertConfig())) == 109_514_298
  roberta = transformers.RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1)
  assert _hf_count(lambda: transformers.RobertaModel(roberta)) == 124_645_632
  assert _hf_count(lambda: transformers.RobertaForMaskedLM(roberta)) == 124_697_433
  assert _hf_count(lambda: transformers.DistilBertModel(transformers.DistilBertConfig())) == 66_362_880
  assert _hf_count(lambda: transformers.DistilBertForMaskedLM(transformers.DistilBertConfig())) == 66_985_530
  albert = transformers.AlbertConfig(hidden_size=768, num_attention_heads=12, intermediate_size=3072)  # base v2
  assert _hf_count(lambda: transformers.AlbertModel(albert)) == 11_683_584
  assert _hf_count(lambda: transformers.AlbertForMaskedLM(albert)) == 11_221_680
  assert _hf_count(lambda: transformers.AlbertForPreTraining(albert)) == 11_813_810
  assert _hf_count(lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config())) == 124_439_808
  assert _hf_count(lambda: transformers.T5ForConditionalGeneration(transformers.T5Config())) == 60_506_624
  base = transformers.T5Config(d_model=768, d_ff=3072, num_layers=12, num_heads=12)
  assert _hf_count(lambda: transformers.T5ForConditionalGeneration(base)) == 222_903_552
  # HF 5.x builds every fresh T5 with lm_head tied to the embedding (it unties only when loading a checkpoint
  # holding both), so the untied v1.1 counts are checked against the published figures above instead.


def test_transformer_base_size():
  """Vaswani et al. report "65M" for the base model with a ~37k shared vocabulary. The architecture they
  describe (6+6 post-LN layers, d_model 512, d_ff 2048, 8 heads, biases, one 37000 x 512 matrix shared by
  source and target embeddings and the output projection, sinusoidal positions) has exactly the count below,
  3% under the rounded figure of the paper; MarianMT, the same architecture in HF, counts the same way."""
  d, ff, v, n = 512, 2048, 37000, 6
  attention = 4 * (d * d + d)
  ffn = d * ff + ff + ff * d + d
  encoder_layer = attention + ffn + 2 * 2 * d
  decoder_layer = 2 * attention + ffn + 3 * 2 * d
  closed_form = v * d + n * encoder_layer + n * decoder_layer
  assert model.count_params(_model_config('transformer_base')) == closed_form == 63_082_496
  assert abs(closed_form / 65e6 - 1) < 0.03
