"""DistilBERT (DistilBertModel, DistilBertForMaskedLM, DistilBertForSequenceClassification,
DistilBertForQuestionAnswering): a post-LN encoder without token types or pooler; its classifier reads [CLS] through
pre_classifier + ReLU (our pooler with pooler_activation=relu)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from model.config import Activation, Family, Head, ModelConfig, Norm, NormPlacement
from model.hf.mapping import (ACTIVATION_NAMES, EMBED, LINEAR, VECTOR, FamilySpec, Row, activation, attention, dense,
                              get, is_arange, labels_config, norm, num_labels, unsupported)

_LAYER = 'distilbert.transformer.layer.{i}'
DISTILBERT_TABLE: tuple[Row, ...] = (
    ('distilbert.embeddings.word_embeddings.weight', 'token_embed/embedding', EMBED),
    ('distilbert.embeddings.position_embeddings.weight', 'encoder/position_embed/embedding', EMBED),
    *norm('distilbert.embeddings.LayerNorm', 'encoder/embed_norm'),
    *attention(f'{_LAYER}.attention', 'encoder/layers_{i}/self_attn', ('q_lin', 'k_lin', 'v_lin', 'out_lin')),
    *norm(f'{_LAYER}.sa_layer_norm', 'encoder/layers_{i}/self_attn_norm'),
    *dense(f'{_LAYER}.ffn.lin1', 'encoder/layers_{i}/ffn/wi'),
    *dense(f'{_LAYER}.ffn.lin2', 'encoder/layers_{i}/ffn/wo'),
    *norm(f'{_LAYER}.output_layer_norm', 'encoder/layers_{i}/ffn_norm'),
    *dense('vocab_transform', 'mlm_dense'),
    *norm('vocab_layer_norm', 'mlm_norm'),
    ('vocab_projector.bias', 'lm_bias', VECTOR),
    ('vocab_projector.weight', 'lm_head/kernel', LINEAR),  # untied only; else a tied duplicate
    *dense('pre_classifier', 'pooler'),
    *dense('classifier', 'classifier'),
    *dense('qa_outputs', 'qa_outputs'),
)

_EPS = 1e-12  # every DistilBERT LayerNorm's; config.json has no field for it.


def _distilbert_fields(hf: Mapping[str, Any], head: Head, tied: bool) -> dict[str, Any]:
  unsupported(hf, sinusoidal_pos_embds=False)
  classifier = head is Head.CLASSIFIER
  return dict(
      family=Family.ENCODER, vocab_size=get(hf, 'vocab_size'), d_model=get(hf, 'dim'), num_heads=get(hf, 'n_heads'),
      d_ff=get(hf, 'hidden_dim'), num_layers=get(hf, 'n_layers'), max_len=hf.get('max_position_embeddings', 512),
      num_token_types=0, norm=Norm.LAYER, norm_placement=NormPlacement.POST, norm_eps=_EPS, embed_norm=True,
      activation=activation(hf.get('activation', 'gelu')), dropout_rate=hf.get('dropout', 0.1),
      attention_dropout_rate=hf.get('attention_dropout', 0.1), ffn_dropout_rate=0.0,
      init_std=hf.get('initializer_range', 0.02), head=head, pooler=classifier,
      pooler_activation=Activation.RELU if classifier else Activation.TANH, tie_embeddings=tied,
      # HF's seq_classif_dropout only changes training; ours uses dropout_rate there. Its qa_dropout before qa_outputs
      # too: our span head has none (as the other *ForQuestionAnswering).
      lm_head_bias=head is Head.LM, num_labels=num_labels(hf, head))


def _distilbert_config(cfg: ModelConfig) -> dict[str, Any]:
  out = dict(vocab_size=cfg.vocab_size, dim=cfg.d_model, n_heads=cfg.num_heads, hidden_dim=cfg.d_ff,
             n_layers=cfg.num_layers, max_position_embeddings=cfg.max_len, sinusoidal_pos_embds=False,
             activation=ACTIVATION_NAMES[cfg.activation], dropout=cfg.dropout_rate,
             attention_dropout=cfg.attention_dropout_rate, initializer_range=cfg.init_std,
             tie_word_embeddings=cfg.tie_embeddings, pad_token_id=0)
  return out | labels_config(cfg)


SPEC = FamilySpec(
    model_type='distilbert', family=Family.ENCODER,
    classes={'DistilBertModel': Head.NONE, 'DistilBertForMaskedLM': Head.LM,
             'DistilBertForSequenceClassification': Head.CLASSIFIER, 'DistilBertForQuestionAnswering': Head.SPAN},
    prefix='distilbert.', head_prefixes=('vocab_', 'pre_classifier.', 'classifier.', 'qa_outputs.'),
    table=DISTILBERT_TABLE, to_fields=_distilbert_fields, to_config=_distilbert_config,
    aliases=(('vocab_projector.weight', 'distilbert.embeddings.word_embeddings.weight'),),
    buffers=((r'distilbert\.embeddings\.position_ids', is_arange),))
