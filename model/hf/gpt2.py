"""GPT-2 (GPT2Model, GPT2LMHeadModel): the table and config.json fields."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from model.config import Family, Head, ModelConfig, Norm, NormPlacement
from model.hf.mapping import (ACTIVATION_NAMES, CONV1D, CONV1D_OUT, EMBED, LINEAR, QKV, QKV_BIAS, FamilySpec, Row,
                              activation, dense, get, is_causal, norm, unsupported)


_GPT2_LAYER = 'transformer.h.{i}'
GPT2_TABLE: tuple[Row, ...] = (
    ('transformer.wte.weight', 'token_embed/embedding', EMBED),
    ('transformer.wpe.weight', 'decoder/position_embed/embedding', EMBED),
    *norm(f'{_GPT2_LAYER}.ln_1', 'decoder/layers_{i}/self_attn_norm'),
    (f'{_GPT2_LAYER}.attn.c_attn.weight', tuple(f'decoder/layers_{{i}}/self_attn/{n}/kernel'
                                                for n in ('query', 'key', 'value')), QKV),
    (f'{_GPT2_LAYER}.attn.c_attn.bias', tuple(f'decoder/layers_{{i}}/self_attn/{n}/bias'
                                              for n in ('query', 'key', 'value')), QKV_BIAS),
    *dense(f'{_GPT2_LAYER}.attn.c_proj', 'decoder/layers_{i}/self_attn/out', CONV1D_OUT),
    *norm(f'{_GPT2_LAYER}.ln_2', 'decoder/layers_{i}/ffn_norm'),
    *dense(f'{_GPT2_LAYER}.mlp.c_fc', 'decoder/layers_{i}/ffn/wi', CONV1D),
    *dense(f'{_GPT2_LAYER}.mlp.c_proj', 'decoder/layers_{i}/ffn/wo', CONV1D),
    *norm('transformer.ln_f', 'decoder/final_norm'),
    ('lm_head.weight', 'lm_head/kernel', LINEAR),  # untied only
)


def _gpt2_fields(hf: Mapping[str, Any], head: Head, tied: bool) -> dict[str, Any]:
  unsupported(hf, scale_attn_by_inverse_layer_idx=False, add_cross_attention=False)
  d_model, dropout = get(hf, 'n_embd'), hf.get('resid_pdrop', 0.1)
  if hf.get('embd_pdrop', dropout) != dropout:  # only training differs: we have one rate for both
    warnings.warn(f'GPT-2 embd_pdrop={hf["embd_pdrop"]} != resid_pdrop={dropout}: using {dropout} for both')
  return dict(
      family=Family.DECODER, vocab_size=get(hf, 'vocab_size'), d_model=d_model, num_heads=get(hf, 'n_head'),
      d_ff=hf.get('n_inner') or 4 * d_model, num_layers=get(hf, 'n_layer'), max_len=get(hf, 'n_positions'),
      norm=Norm.LAYER, norm_placement=NormPlacement.PRE, norm_eps=hf.get('layer_norm_epsilon', 1e-5),
      activation=activation(hf.get('activation_function', 'gelu_new')),
      scale_attention=hf.get('scale_attn_weights', True), dropout_rate=dropout,
      attention_dropout_rate=hf.get('attn_pdrop', 0.1), ffn_dropout_rate=0.0,
      init_std=hf.get('initializer_range', 0.02), head=head, tie_embeddings=tied)


def _gpt2_config(cfg: ModelConfig) -> dict[str, Any]:
  return dict(vocab_size=cfg.vocab_size, n_embd=cfg.d_model, n_head=cfg.num_heads, n_inner=cfg.d_ff,
              n_layer=cfg.num_layers, n_positions=cfg.max_len, layer_norm_epsilon=cfg.norm_eps,
              activation_function=ACTIVATION_NAMES[cfg.activation], scale_attn_weights=cfg.scale_attention,
              resid_pdrop=cfg.dropout_rate, embd_pdrop=cfg.dropout_rate, attn_pdrop=cfg.attention_dropout_rate,
              initializer_range=cfg.init_std, tie_word_embeddings=cfg.tie_embeddings)


SPEC = FamilySpec(
    model_type='gpt2', family=Family.DECODER, classes={'GPT2Model': Head.NONE, 'GPT2LMHeadModel': Head.LM},
    prefix='transformer.', head_prefixes=('lm_head.',), table=GPT2_TABLE, to_fields=_gpt2_fields,
    to_config=_gpt2_config,
    aliases=(('lm_head.weight', 'transformer.wte.weight'),),
    # Old checkpoints saved the causal mask and its fill value as buffers.
    buffers=((r'transformer\.h\.\d+\.attn\.bias', is_causal),
             (r'transformer\.h\.\d+\.attn\.masked_bias', lambda x: x.size == 1)))
