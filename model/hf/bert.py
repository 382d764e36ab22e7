"""BERT (BertModel, BertForMaskedLM, BertForSequenceClassification, BertForQuestionAnswering): the table and
config.json fields."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from model.config import Family, Head, ModelConfig, Norm, NormPlacement
from model.hf.mapping import (ACTIVATION_NAMES, EMBED, LINEAR, VECTOR, CheckpointError, FamilySpec, Row, activation,
                              attention, dense, get, is_arange, labels_config, norm, num_labels, unsupported)


def encoder_rows(base: str) -> list[Row]:
  """BERT's embeddings and layers under `base` ('bert'; RoBERTa keeps them under 'roberta')."""
  layer = f'{base}.encoder.layer.{{i}}'
  return [
      (f'{base}.embeddings.word_embeddings.weight', 'token_embed/embedding', EMBED),
      (f'{base}.embeddings.position_embeddings.weight', 'encoder/position_embed/embedding', EMBED),
      (f'{base}.embeddings.token_type_embeddings.weight', 'encoder/type_embed/embedding', EMBED),
      *norm(f'{base}.embeddings.LayerNorm', 'encoder/embed_norm'),
      *attention(f'{layer}.attention', 'encoder/layers_{i}/self_attn',
                  ('self.query', 'self.key', 'self.value', 'output.dense')),
      *norm(f'{layer}.attention.output.LayerNorm', 'encoder/layers_{i}/self_attn_norm'),
      *dense(f'{layer}.intermediate.dense', 'encoder/layers_{i}/ffn/wi'),
      *dense(f'{layer}.output.dense', 'encoder/layers_{i}/ffn/wo'),
      *norm(f'{layer}.output.LayerNorm', 'encoder/layers_{i}/ffn_norm'),
  ]


BERT_TABLE: tuple[Row, ...] = (
    *encoder_rows('bert'),
    *dense('bert.pooler.dense', 'pooler'),
    *dense('cls.predictions.transform.dense', 'mlm_dense'),
    *norm('cls.predictions.transform.LayerNorm', 'mlm_norm'),
    # Two names for the vocabulary bias: HF 4 made them one parameter; HF 5 computes with decoder.bias
    # (when the file has it) and leaves cls.predictions.bias unused in an untied model. Rows that share a
    # parameter are alternatives: import takes the first in the file, export writes both.
    ('cls.predictions.decoder.bias', 'lm_bias', VECTOR),
    ('cls.predictions.bias', 'lm_bias', VECTOR),
    ('cls.predictions.decoder.weight', 'lm_head/kernel', LINEAR),  # untied only; else a tied duplicate
    *dense('classifier', 'classifier'),
    *dense('qa_outputs', 'qa_outputs'),  # the span head (*ForQuestionAnswering: no pooler)
)


def bert_fields(hf: Mapping[str, Any], head: Head, tied: bool) -> dict[str, Any]:
  unsupported(hf, position_embedding_type='absolute', is_decoder=False, add_cross_attention=False)
  if hf.get('type_vocab_size', 2) < 1:
    raise CheckpointError(f'config.json sets type_vocab_size={hf["type_vocab_size"]}; HF adds token type 0 when '
                          'none are given, so it needs >= 1')
  return dict(
      family=Family.ENCODER, vocab_size=get(hf, 'vocab_size'), d_model=get(hf, 'hidden_size'),
      num_heads=get(hf, 'num_attention_heads'), d_ff=get(hf, 'intermediate_size'),
      num_layers=get(hf, 'num_hidden_layers'), max_len=hf.get('max_position_embeddings', 512),
      num_token_types=hf.get('type_vocab_size', 2), norm=Norm.LAYER, norm_placement=NormPlacement.POST,
      norm_eps=hf.get('layer_norm_eps', 1e-12), embed_norm=True, activation=activation(hf.get('hidden_act', 'gelu')),
      dropout_rate=hf.get('hidden_dropout_prob', 0.1),
      attention_dropout_rate=hf.get('attention_probs_dropout_prob', 0.1),
      ffn_dropout_rate=0.0, init_std=hf.get('initializer_range', 0.02), head=head,
      pooler=head not in (Head.LM, Head.SPAN), tie_embeddings=tied, lm_head_bias=head is Head.LM,
      # HF's classifier_dropout (if set) only changes training; ours uses dropout_rate there.
      num_labels=num_labels(hf, head))


def bert_config(cfg: ModelConfig) -> dict[str, Any]:
  out = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_attention_heads=cfg.num_heads,
             intermediate_size=cfg.d_ff, num_hidden_layers=cfg.num_layers, max_position_embeddings=cfg.max_len,
             type_vocab_size=cfg.num_token_types, layer_norm_eps=cfg.norm_eps,
             hidden_act=ACTIVATION_NAMES[cfg.activation], hidden_dropout_prob=cfg.dropout_rate,
             attention_probs_dropout_prob=cfg.attention_dropout_rate, initializer_range=cfg.init_std,
             tie_word_embeddings=cfg.tie_embeddings, pad_token_id=0)
  return out | labels_config(cfg)


SPEC = FamilySpec(
    model_type='bert', family=Family.ENCODER,
    classes={'BertModel': Head.NONE, 'BertForMaskedLM': Head.LM, 'BertForSequenceClassification': Head.CLASSIFIER,
             'BertForQuestionAnswering': Head.SPAN},
    prefix='bert.', head_prefixes=('cls.', 'classifier.', 'qa_outputs.'), table=BERT_TABLE, to_fields=bert_fields,
    to_config=bert_config,
    aliases=(('cls.predictions.decoder.weight', 'bert.embeddings.word_embeddings.weight'),),
    buffers=((r'bert\.embeddings\.position_ids', is_arange),))
