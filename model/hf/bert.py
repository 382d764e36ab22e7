"""BERT (BertModel, BertForMaskedLM, BertForSequenceClassification): the table and config.json fields."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from model.config import Family, Head, ModelConfig, Norm, NormPlacement
from model.hf.mapping import (ACTIVATION_NAMES, EMBED, LINEAR, VECTOR, FamilySpec, Row, activation, attention, dense,
                              get, is_arange, norm, unsupported)


_BERT_LAYER = 'bert.encoder.layer.{i}'
BERT_TABLE: tuple[Row, ...] = (
    ('bert.embeddings.word_embeddings.weight', 'token_embed/embedding', EMBED),
    ('bert.embeddings.position_embeddings.weight', 'encoder/position_embed/embedding', EMBED),
    ('bert.embeddings.token_type_embeddings.weight', 'encoder/type_embed/embedding', EMBED),
    *norm('bert.embeddings.LayerNorm', 'encoder/embed_norm'),
    *attention(f'{_BERT_LAYER}.attention', 'encoder/layers_{i}/self_attn',
                ('self.query', 'self.key', 'self.value', 'output.dense')),
    *norm(f'{_BERT_LAYER}.attention.output.LayerNorm', 'encoder/layers_{i}/self_attn_norm'),
    *dense(f'{_BERT_LAYER}.intermediate.dense', 'encoder/layers_{i}/ffn/wi'),
    *dense(f'{_BERT_LAYER}.output.dense', 'encoder/layers_{i}/ffn/wo'),
    *norm(f'{_BERT_LAYER}.output.LayerNorm', 'encoder/layers_{i}/ffn_norm'),
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
)


def _bert_fields(hf: Mapping[str, Any], head: Head, tied: bool) -> dict[str, Any]:
  unsupported(hf, position_embedding_type='absolute', is_decoder=False, add_cross_attention=False)
  return dict(
      family=Family.ENCODER, vocab_size=get(hf, 'vocab_size'), d_model=get(hf, 'hidden_size'),
      num_heads=get(hf, 'num_attention_heads'), d_ff=get(hf, 'intermediate_size'),
      num_layers=get(hf, 'num_hidden_layers'), max_len=hf.get('max_position_embeddings', 512),
      num_token_types=hf.get('type_vocab_size', 2), norm=Norm.LAYER, norm_placement=NormPlacement.POST,
      norm_eps=hf.get('layer_norm_eps', 1e-12), embed_norm=True, activation=activation(hf.get('hidden_act', 'gelu')),
      dropout_rate=hf.get('hidden_dropout_prob', 0.1),
      attention_dropout_rate=hf.get('attention_probs_dropout_prob', 0.1),
      ffn_dropout_rate=0.0, init_std=hf.get('initializer_range', 0.02), head=head, pooler=head is not Head.LM,
      tie_embeddings=tied, lm_head_bias=head is Head.LM,
      # HF's classifier_dropout (if set) only changes training; ours uses dropout_rate there.
      num_labels=len(hf.get('id2label') or {0: 0, 1: 1}) if head is Head.CLASSIFIER else 0)


def _bert_config(cfg: ModelConfig) -> dict[str, Any]:
  out = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_attention_heads=cfg.num_heads,
             intermediate_size=cfg.d_ff, num_hidden_layers=cfg.num_layers, max_position_embeddings=cfg.max_len,
             type_vocab_size=cfg.num_token_types, layer_norm_eps=cfg.norm_eps,
             hidden_act=ACTIVATION_NAMES[cfg.activation], hidden_dropout_prob=cfg.dropout_rate,
             attention_probs_dropout_prob=cfg.attention_dropout_rate, initializer_range=cfg.init_std,
             tie_word_embeddings=cfg.tie_embeddings, pad_token_id=0)
  if cfg.head is Head.CLASSIFIER:
    out['id2label'] = {str(i): f'LABEL_{i}' for i in range(cfg.num_labels)}
    out['label2id'] = {f'LABEL_{i}': i for i in range(cfg.num_labels)}
    if cfg.num_labels == 1:
      out['problem_type'] = 'regression'
  return out


SPEC = FamilySpec(
    model_type='bert', family=Family.ENCODER,
    classes={'BertModel': Head.NONE, 'BertForMaskedLM': Head.LM, 'BertForSequenceClassification': Head.CLASSIFIER},
    prefix='bert.', head_prefixes=('cls.', 'classifier.'), table=BERT_TABLE, to_fields=_bert_fields,
    to_config=_bert_config,
    aliases=(('cls.predictions.decoder.weight', 'bert.embeddings.word_embeddings.weight'),),
    buffers=((r'bert\.embeddings\.position_ids', is_arange),))
