"""ModelConfig validation: every bad value is an error that names the field and the fix."""

from __future__ import annotations

import pytest

from model import Activation, ConfigError, Family, ModelConfig, Position, count_params


def test_strings_become_enums_and_round_trip():
  cfg = ModelConfig(family='decoder', position='rope', activation='silu', norm='rms', head='lm')
  assert cfg.family is Family.DECODER and cfg.position is Position.ROPE and cfg.activation is Activation.SILU
  assert ModelConfig.from_dict(cfg.to_dict()) == cfg
  assert cfg.to_dict()['position'] == 'rope'


def test_derived_sizes():
  assert ModelConfig(d_model=512, num_heads=8).kv_dim == 64
  assert ModelConfig(d_model=512, num_heads=8, head_dim=32).kv_dim == 32
  assert ModelConfig(family='encoder_decoder', num_layers=6).decoder_layers == 6
  assert ModelConfig(family='encoder_decoder', num_layers=6, num_decoder_layers=2).decoder_layers == 2


@pytest.mark.parametrize('fields,message', [
    (dict(d_model=100, num_heads=12), r'model.num_heads=12: must divide d_model=100 \(or set model.head_dim'),
    (dict(activation='swish'), r"model.activation='swish': unknown activation; valid values are "
                               r"\['relu', 'gelu', 'gelu_tanh', 'silu', 'tanh'\]"),
    (dict(position='alibi'), r"model.position='alibi': unknown position; valid values are \['learned', "),
    (dict(family='encoder-only'), r"model.family='encoder-only': unknown family; valid values are \['encoder', "),
    (dict(d_model=-8), r'model.d_model=-8: must be a positive integer'),
    (dict(num_layers=0), r'model.num_layers=0: must be a positive integer'),
    (dict(head_dim=0), r'model.head_dim=0: must be a positive integer, or None for the default'),
    (dict(vocab_size=3.5), r'model.vocab_size=3.5: must be a positive integer'),
    (dict(dropout_rate=1.0), r'model.dropout_rate=1.0: must be in \[0, 1\)'),
    (dict(norm_eps=0.0), r'model.norm_eps=0.0: must be > 0'),
    (dict(num_decoder_layers=3), r'model.num_decoder_layers=3: only applies to family=encoder_decoder'),
    (dict(position='rope', d_model=36, num_heads=4), r"model.position='rope': rope .*needs an even head_dim, got 9"),
    (dict(head='classifier', num_labels=2), r'model.pooler=False: the classifier head reads the pooled first '
                                            r'token: set model.pooler=True'),
    (dict(head='classifier', pooler=True), r'model.num_labels=0: the classifier head needs num_labels >= 1'),
    (dict(family='decoder', head='classifier', num_labels=2, pooler=True), r"model.head=.*use family=encoder"),
    (dict(num_labels=3), r'model.num_labels=3: only used by head=classifier'),
    (dict(scale_tied_logits=True, head='none'), r'model.scale_tied_logits=True: only applies to a tied LM head'),
    (dict(attention_impl='cudnn'), r"model.attention_impl=.*set model.dtype=bfloat16, or use attention_impl=xla"),
    (dict(dtype='float64'), r"model.dtype='float64': must be one of \('float32', 'bfloat16', 'float16'\)"),
    (dict(head='classifier', num_labels=2, pooler=True, target_mean=1.0),
     r'model.target_mean=1.0: target_mean / target_scale only apply to regression \(head=classifier, num_labels=1\)'),
    (dict(head='classifier', num_labels=1, pooler=True, target_scale=0.0), r'model.target_scale=0.0: must be > 0'),
    (dict(position='rope', position_offset=2), r'model.position_offset=2: offsets rows of a learned position table, '
                                               r'but position=rope: set position=learned or position_offset=0'),
    (dict(family='decoder', position_offset=2), r'model.position_offset=2: counts positions over the whole attention '
                                                r'mask, which only an encoder has \(not family=decoder\)'),
    (dict(max_len=2, position_offset=2), r'model.position_offset=2: leaves no row of the position table '
                                         r'\(max_len=2\) for a real token: raise max_len'),
    (dict(position_offset=-1), r'model.position_offset=-1: must be an integer >= 0'),
    (dict(pooler_activation='relu'), r"model.pooler_activation='relu': only applies with "
                                     r'model.pooler=True'),
])
def test_bad_values_name_the_field_and_the_fix(fields, message):
  with pytest.raises(ConfigError, match=message):
    ModelConfig(**fields)


def test_a_short_position_table_initialises():
  """init's dummy inputs fit the table: 3 positions from row 2 of 5 rows."""
  cfg = ModelConfig(vocab_size=11, d_model=8, num_heads=2, d_ff=16, num_layers=1, max_len=5, position_offset=2)
  assert count_params(cfg) == 11 * 8 + 5 * 8 + (4 * (8 * 8 + 8) + 2 * 8 + (8 * 16 + 16 + 16 * 8 + 8) + 2 * 8)


def test_unknown_field_lists_the_valid_ones():
  with pytest.raises(ConfigError, match=r"unknown field\(s\) \['d_modle'\]; valid fields are \[.*'d_model'"):
    ModelConfig.from_dict({'d_modle': 512})


def test_frozen():
  with pytest.raises(AttributeError):
    ModelConfig().d_model = 3  # type: ignore[misc]
