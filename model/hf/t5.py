"""T5 v1.0 and v1.1 (T5ForConditionalGeneration): the table and config.json fields."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from model.config import Activation, Family, Head, ModelConfig, Norm, NormPlacement, Position
from model.hf.mapping import (ACTIVATION_NAMES, EMBED, LINEAR, VECTOR, CheckpointError, FamilySpec, Row, activation,
                              attention, get)


def _t5_stack(s: str) -> list[Row]:
  """One T5 stack; the decoder has cross-attention as sub-layer 1, which moves its FFN to sub-layer 2."""
  hf, ours = f'{s}.block.{{i}}.layer', f'{s}/layers_{{i}}'
  qkvo = ('q', 'k', 'v', 'o')
  ffn = 2 if s == 'decoder' else 1
  rows = [
      # Only block 0 holds the bias table; every layer of the stack uses it (our one per-stack table).
      (f'{s}.block.0.layer.0.SelfAttention.relative_attention_bias.weight', f'{s}/relpos_bias', EMBED),
      *attention(f'{hf}.0.SelfAttention', f'{ours}/self_attn', qkvo),
      (f'{hf}.0.layer_norm.weight', f'{ours}/self_attn_norm/scale', VECTOR),
  ]
  if s == 'decoder':
    rows += [*attention(f'{hf}.1.EncDecAttention', f'{ours}/cross_attn', qkvo),
             (f'{hf}.1.layer_norm.weight', f'{ours}/cross_attn_norm/scale', VECTOR)]
  rows += [(f'{hf}.{ffn}.DenseReluDense.{n}.weight', f'{ours}/ffn/{n}/kernel', LINEAR) for n in ('wi', 'wi_0', 'wi_1')]
  rows += [(f'{hf}.{ffn}.DenseReluDense.wo.weight', f'{ours}/ffn/wo/kernel', LINEAR),
           (f'{hf}.{ffn}.layer_norm.weight', f'{ours}/ffn_norm/scale', VECTOR),
           (f'{s}.final_layer_norm.weight', f'{s}/final_norm/scale', VECTOR)]
  return rows


T5_TABLE: tuple[Row, ...] = (
    ('shared.weight', 'token_embed/embedding', EMBED),
    *_t5_stack('encoder'),
    *_t5_stack('decoder'),
    ('lm_head.weight', 'lm_head/kernel', LINEAR),  # untied only (T5 v1.1)
)


def _t5_fields(hf: Mapping[str, Any], head: Head, tied: bool) -> dict[str, Any]:
  proj = hf.get('feed_forward_proj', 'relu')
  gated, act = proj.startswith('gated-'), proj.split('-')[-1]
  if proj == 'gated-gelu':  # HF's historical alias: T5 v1.1's gated-gelu is the tanh approximation.
    act = 'gelu_new'
  # Tied models scale the decoder output by d_model**-0.5 (T5 v1.0). transformers 5 stores that as
  # `scale_decoder_outputs` (and always says tie_word_embeddings=True); before, tie_word_embeddings=False
  # (T5 v1.1) meant both untied and unscaled.
  scale = hf.get('scale_decoder_outputs', hf.get('tie_word_embeddings', True) is not False)
  if scale and not tied:
    raise CheckpointError('this T5 checkpoint has an untied lm_head.weight but scales the decoder output by '
                          'd_model**-0.5, which only a tied head does here (scale_tied_logits)')
  rate = hf.get('dropout_rate', 0.1)  # T5 uses one rate for embeddings, sub-layers, attention and the FFN.
  layers = get(hf, 'num_layers')
  return dict(
      family=Family.ENCODER_DECODER, vocab_size=get(hf, 'vocab_size'), d_model=get(hf, 'd_model'),
      num_heads=get(hf, 'num_heads'), head_dim=get(hf, 'd_kv'), d_ff=get(hf, 'd_ff'), num_layers=layers,
      num_decoder_layers=hf.get('num_decoder_layers') or layers, position=Position.RELATIVE,
      relative_buckets=hf.get('relative_attention_num_buckets', 32),
      relative_max_distance=hf.get('relative_attention_max_distance', 128), norm=Norm.RMS,
      norm_placement=NormPlacement.PRE, norm_eps=hf.get('layer_norm_epsilon', 1e-6), use_bias=False,
      scale_attention=False, activation=activation(act), gated_ffn=gated, dropout_rate=rate,
      attention_dropout_rate=rate, ffn_dropout_rate=rate, final_dropout=True, head=head, tie_embeddings=tied,
      scale_tied_logits=tied and scale)


def _t5_config(cfg: ModelConfig) -> dict[str, Any]:
  proj = ACTIVATION_NAMES[cfg.activation]
  if cfg.gated_ffn:  # 'gated-gelu' always means the tanh GELU, so a gated exact GELU fails the round trip.
    proj = 'gated-gelu' if cfg.activation is Activation.GELU_TANH else f'gated-{proj}'
  return dict(vocab_size=cfg.vocab_size, d_model=cfg.d_model, num_heads=cfg.num_heads, d_kv=cfg.kv_dim,
              d_ff=cfg.d_ff, num_layers=cfg.num_layers, num_decoder_layers=cfg.decoder_layers,
              relative_attention_num_buckets=cfg.relative_buckets,
              relative_attention_max_distance=cfg.relative_max_distance, layer_norm_epsilon=cfg.norm_eps,
              feed_forward_proj=proj, dropout_rate=cfg.dropout_rate, tie_word_embeddings=cfg.tie_embeddings,
              scale_decoder_outputs=cfg.scale_tied_logits, is_encoder_decoder=True)


SPEC = FamilySpec(
    model_type='t5', family=Family.ENCODER_DECODER,
    classes={'T5ForConditionalGeneration': Head.LM, 'T5WithLMHeadModel': Head.LM},  # the latter: old name
    prefix='', head_prefixes=(), table=T5_TABLE, to_fields=_t5_fields, to_config=_t5_config,
    aliases=(('lm_head.weight', 'shared.weight'), ('encoder.embed_tokens.weight', 'shared.weight'),
             ('decoder.embed_tokens.weight', 'shared.weight')),
    # Some old checkpoints carry a cross-attention bias table that HF itself never reads.
    buffers=((r'decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight',
              lambda x: True),))
