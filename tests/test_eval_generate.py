"""config.eval.generate: every decoding.GenerateConfig field settable from eval.py's (and train.py's) command line
on every config, over the task's defaults (evaluation/generation.py), strict about its keys."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Sequence

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from configs import transformer_bible
from core.config import ConfigError, section
from data import tasks
from decoding import GenerateConfig
from evaluation import generation
from evaluation.config import EvalConfig

_TOKENIZER = types.SimpleNamespace(eos_id=3, pad_id=0)  # what generate_config reads of a tokenizer


def command_line(config: str, *overrides: str) -> ml_collections.ConfigDict:
  """The config eval.py builds from `--config <config> <overrides>` (its flag: a locked config file)."""
  argv = ['eval.py', f'--config={config}', *overrides]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, '', flag_values=values, lock_config=True, sys_argv=argv)
  values(argv)
  return values.config


def resolved(config: ml_collections.ConfigDict) -> GenerateConfig:
  return generation.generate_config(EvalConfig.from_config(config), _TOKENIZER, tasks.DataConfig.from_dict(config.data))


def test_no_setup_names_eval_generate():
  """The configs name no eval.generate field (the task's defaults hold), so every field stays settable."""
  assert EvalConfig.from_config(transformer_bible.get_config()).generate == {}


@pytest.mark.parametrize('config, overrides, expected', [
    # seq2seq: beam search with 4 beams and length penalty 0.6, max_new_tokens = data.decoder_seq_len (48) ...
    ('configs/seq2seq_tiny.py', (), dict(strategy='beam', num_beams=4, length_penalty=0.6, max_new_tokens=48)),
    # ... the beam's settings only while the strategy is beam; a field given goes over the task's default
    ('configs/seq2seq_tiny.py', ('strategy=greedy', 'max_new_tokens=7'),
     dict(strategy='greedy', num_beams=1, length_penalty=0.0, max_new_tokens=7)),
    ('configs/seq2seq_tiny.py', ('num_beams=2',), dict(strategy='beam', num_beams=2, length_penalty=0.6)),
    ('configs/transformer_bible.py', ('strategy=greedy',), dict(strategy='greedy', num_beams=1)),
    # language models: top-k sampling, its settings only while the strategy is sample
    ('configs/gpt_tiny.py', (), dict(strategy='sample', temperature=0.8, top_k=40, max_new_tokens=32)),
    ('configs/gpt_tiny.py', ('strategy=greedy', 'max_new_tokens=5'),
     dict(strategy='greedy', temperature=1.0, top_k=0, max_new_tokens=5)),
    ('configs/gpt_tiny.py', ('strategy=beam', 'num_beams=3', 'length_penalty=1'),
     dict(strategy='beam', num_beams=3, length_penalty=1.0, top_k=0)),
    ('configs/gpt_tiny.py', ('top_p=0.9', 'temperature=2'), dict(strategy='sample', top_p=0.9, temperature=2.0)),
    # the tokenizer's ids unless set; eos_id=None: no EOS, every row max_new_tokens long
    ('configs/gpt_tiny.py', (), dict(eos_id=3, pad_id=0, decoder_start_id=0)),
    ('configs/gpt_tiny.py', ('eos_id=None', 'pad_id=5'), dict(eos_id=None, pad_id=5)),
    ('configs/t5_tiny.py', ('eos_id=7', 'decoder_start_id=2'), dict(eos_id=7, decoder_start_id=2)),
])
def test_command_line_reaches_generate_config(config: str, overrides: Sequence[str], expected: dict):
  cfg = resolved(command_line(config, *(f'--config.eval.generate.{o}' for o in overrides))).to_dict()
  assert {k: cfg[k] for k in expected} == expected


def test_a_value_of_the_wrong_type_fails_on_the_command_line():
  with pytest.raises(flags.IllegalFlagValueError, match='eval.generate.num_beams'):
    command_line('configs/t5_tiny.py', '--config.eval.generate.num_beams=four')


def test_an_unknown_key_is_an_error_naming_it():
  """On the command line (ml_collections, as for any section: eval.py and train.py print
"--config.eval.generate.beams: the config has no field 'beams'"), in a config file (on load) and in a config
built by hand or saved (EvalConfig): the key, eval.generate and every valid field."""
  with pytest.raises(AttributeError, match="'beams'"):
    command_line('configs/t5_tiny.py', '--config.eval.generate.beams=4')
  valid = str(sorted(f.name for f in dataclasses.fields(GenerateConfig)))
  message = (f"eval.generate config: unknown field(s) ['beams']; valid fields are {valid}; did you mean 'beams' -> "
             "'num_beams'?")
  with pytest.raises(ConfigError) as error:
    section(EvalConfig, {'generate': {'beams': 4}}, name='eval', exclude=('objective',))  # as make_config does
  assert str(error.value) == message
  config = command_line('configs/t5_tiny.py')
  config.unlock()
  config.eval.generate.beams = 4
  with pytest.raises(ValueError) as error:
    EvalConfig.from_config(config)
  assert str(error.value) == message


def test_partial_and_old_sections_mean_the_same():
  """A config saved before every field was listed (eval.generate {} or only the keys it set) and a config file
  that sets a few keys: the keys given, the rest unset and still typed for the command line."""
  base = command_line('configs/seq2seq_tiny.py')
  for generate in ({}, {'strategy': 'greedy'}, {'num_beams': 2, 'eos_id': None}):
    old = ml_collections.ConfigDict(base.to_dict())
    old.eval.generate = generate
    assert EvalConfig.from_config(old).generate == generate
    given = section(EvalConfig, {'generate': generate}, name='eval', exclude=('objective',))
    assert EvalConfig(objective=tasks.Objective.SEQ2SEQ, **given).generate == generate
    assert given.generate.get_type('max_new_tokens') is int and given.generate.get_type('top_p') is float
