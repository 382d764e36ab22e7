"""ALBERT (AlbertModel, AlbertForMaskedLM, AlbertForSequenceClassification, AlbertForPreTraining,
AlbertForQuestionAnswering): the table and config.json fields.

ALBERT is BERT with factorised embeddings (model.embedding_size, the E -> d_model projection
`embedding_hidden_mapping_in`) and cross-layer sharing (model.num_layer_groups: HF's `albert_layer_groups.{g}`
are our `encoder/layers_{g}`, each applied num_layers // groups times in a row). AlbertForPreTraining is our
head=pretraining: the MLM head and, on the pooler, `sop_classifier.classifier`, the sentence order's
Linear(hidden, 2) (HF's config.num_labels, 2 unless set; a file with another count fails on its shape).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from model.config import Family, Head, ModelConfig, Norm, NormPlacement
from model.hf.mapping import (ACTIVATION_NAMES, EMBED, LINEAR, VECTOR, FamilySpec, Row, activation, attention, dense,
                              get, is_arange, labels_config, norm, num_labels, unsupported)


# inner_group_num=1 (the only value supported): one AlbertLayer per group.
_ALBERT_LAYER = 'albert.encoder.albert_layer_groups.{i}.albert_layers.0'
ALBERT_TABLE: tuple[Row, ...] = (
    ('albert.embeddings.word_embeddings.weight', 'token_embed/embedding', EMBED),
    ('albert.embeddings.position_embeddings.weight', 'encoder/position_embed/embedding', EMBED),
    ('albert.embeddings.token_type_embeddings.weight', 'encoder/type_embed/embedding', EMBED),
    *norm('albert.embeddings.LayerNorm', 'encoder/embed_norm'),
    *dense('albert.encoder.embedding_hidden_mapping_in', 'encoder/embed_proj'),
    *attention(f'{_ALBERT_LAYER}.attention', 'encoder/layers_{i}/self_attn', ('query', 'key', 'value', 'dense')),
    *norm(f'{_ALBERT_LAYER}.attention.LayerNorm', 'encoder/layers_{i}/self_attn_norm'),
    *dense(f'{_ALBERT_LAYER}.ffn', 'encoder/layers_{i}/ffn/wi'),
    *dense(f'{_ALBERT_LAYER}.ffn_output', 'encoder/layers_{i}/ffn/wo'),
    *norm(f'{_ALBERT_LAYER}.full_layer_layer_norm', 'encoder/layers_{i}/ffn_norm'),
    *dense('albert.pooler', 'pooler'),
    *dense('predictions.dense', 'mlm_dense'),
    *norm('predictions.LayerNorm', 'mlm_norm'),
    # Two names for the vocabulary bias, as BERT's (model/hf/bert.py): HF computes with decoder.bias.
    ('predictions.decoder.bias', 'lm_bias', VECTOR),
    ('predictions.bias', 'lm_bias', VECTOR),
    ('predictions.decoder.weight', 'lm_head/kernel', LINEAR),  # untied only; else a tied duplicate
    *dense('classifier', 'classifier'),
    *dense('sop_classifier.classifier', 'sop_classifier'),
    *dense('qa_outputs', 'qa_outputs'),  # the span head (AlbertForQuestionAnswering: no pooler)
)


def _albert_fields(hf: Mapping[str, Any], head: Head, tied: bool) -> dict[str, Any]:
  # inner_group_num > 1 stacks several distinct layers inside each shared group: not expressible here.
  unsupported(hf, inner_group_num=1, position_embedding_type='absolute', is_decoder=False,
              add_cross_attention=False)
  # Defaults are AlbertConfig's where config.json may omit a field (ALBERT v2: gelu_new, no dropout).
  return dict(
      family=Family.ENCODER, vocab_size=get(hf, 'vocab_size'), embedding_size=hf.get('embedding_size', 128),
      d_model=get(hf, 'hidden_size'), num_heads=get(hf, 'num_attention_heads'), d_ff=get(hf, 'intermediate_size'),
      num_layers=get(hf, 'num_hidden_layers'), num_layer_groups=hf.get('num_hidden_groups', 1),
      max_len=hf.get('max_position_embeddings', 512), num_token_types=hf.get('type_vocab_size', 2),
      norm=Norm.LAYER, norm_placement=NormPlacement.POST, norm_eps=hf.get('layer_norm_eps', 1e-12), embed_norm=True,
      activation=activation(hf.get('hidden_act', 'gelu_new')), dropout_rate=hf.get('hidden_dropout_prob', 0.0),
      attention_dropout_rate=hf.get('attention_probs_dropout_prob', 0.0), ffn_dropout_rate=0.0,
      init_std=hf.get('initializer_range', 0.02), head=head, pooler=head not in (Head.LM, Head.SPAN),
      tie_embeddings=tied, lm_head_bias=head.lm, num_labels=num_labels(hf, head))


def _albert_config(cfg: ModelConfig) -> dict[str, Any]:
  return dict(vocab_size=cfg.vocab_size, embedding_size=cfg.embed_width, hidden_size=cfg.d_model,
              num_attention_heads=cfg.num_heads, intermediate_size=cfg.d_ff, num_hidden_layers=cfg.num_layers,
              num_hidden_groups=cfg.layer_groups, inner_group_num=1, max_position_embeddings=cfg.max_len,
              type_vocab_size=cfg.num_token_types, layer_norm_eps=cfg.norm_eps,
              hidden_act=ACTIVATION_NAMES[cfg.activation], hidden_dropout_prob=cfg.dropout_rate,
              attention_probs_dropout_prob=cfg.attention_dropout_rate, initializer_range=cfg.init_std,
              tie_word_embeddings=cfg.tie_embeddings, pad_token_id=0, **labels_config(cfg))


SPEC = FamilySpec(
    model_type='albert', family=Family.ENCODER,
    classes={'AlbertModel': Head.NONE, 'AlbertForMaskedLM': Head.LM,
             'AlbertForSequenceClassification': Head.CLASSIFIER, 'AlbertForPreTraining': Head.PRETRAINING,
             'AlbertForQuestionAnswering': Head.SPAN},
    prefix='albert.', head_prefixes=('predictions.', 'classifier.', 'sop_classifier.', 'qa_outputs.'),
    table=ALBERT_TABLE, to_fields=_albert_fields,
    to_config=_albert_config,
    aliases=(('predictions.decoder.weight', 'albert.embeddings.word_embeddings.weight'),),
    buffers=((r'albert\.embeddings\.position_ids', is_arange),
             (r'albert\.embeddings\.token_type_ids', lambda x: not np.any(x))))
