"""RoBERTa (RobertaModel, RobertaForMaskedLM, RobertaForSequenceClassification, RobertaForQuestionAnswering): BERT's
encoder under `roberta.` with positions from row pad_token_id + 1 (model.position_offset), and its own MLM and
classification heads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from model.config import Activation, Family, Head, ModelConfig
from model.hf.bert import bert_config, bert_fields, encoder_rows
from model.hf.mapping import LINEAR, VECTOR, CheckpointError, FamilySpec, Row, dense, is_arange, is_zeros, norm

ROBERTA_TABLE: tuple[Row, ...] = (
    *encoder_rows('roberta'),
    *dense('lm_head.dense', 'mlm_dense'),
    *norm('lm_head.layer_norm', 'mlm_norm'),
    # As BERT's: HF 5 computes with lm_head.decoder.bias when the file has it, else with lm_head.bias.
    ('lm_head.decoder.bias', 'lm_bias', VECTOR),
    ('lm_head.bias', 'lm_bias', VECTOR),
    ('lm_head.decoder.weight', 'lm_head/kernel', LINEAR),  # untied only; else a tied duplicate
    *dense('classifier.out_proj', 'classifier'),
    *dense('qa_outputs', 'qa_outputs'),
)

# RobertaClassificationHead is dense + tanh on <s>, then out_proj: our pooler and classifier. The task class
# has no roberta.pooler; RobertaModel has one.
_POOLERS: dict[Head, tuple[Row, ...]] = {Head.NONE: tuple(dense('roberta.pooler.dense', 'pooler')),
                                         Head.CLASSIFIER: tuple(dense('classifier.dense', 'pooler'))}


def _roberta_fields(hf: Mapping[str, Any], head: Head, tied: bool) -> dict[str, Any]:
  fields = bert_fields(hf, head, tied)
  pad = hf.get('pad_token_id', 1)
  if not isinstance(pad, int) or pad < 0:
    raise CheckpointError(f'config.json sets pad_token_id={pad!r}; RoBERTa counts positions from row '
                          'pad_token_id + 1, so it needs an integer >= 0')
  if head is Head.LM and fields['activation'] is not Activation.GELU:
    raise CheckpointError(f'config.json sets hidden_act={hf["hidden_act"]!r}; RobertaLMHead applies the exact gelu '
                          "whatever hidden_act says and our MLM head the model's activation, so only 'gelu' is "
                          'supported for RobertaForMaskedLM')
  return fields | dict(position_offset=pad + 1)


def _roberta_config(cfg: ModelConfig) -> dict[str, Any]:
  return bert_config(cfg) | dict(pad_token_id=cfg.position_offset - 1)


SPEC = FamilySpec(
    model_type='roberta', family=Family.ENCODER,
    classes={'RobertaModel': Head.NONE, 'RobertaForMaskedLM': Head.LM,
             'RobertaForSequenceClassification': Head.CLASSIFIER, 'RobertaForQuestionAnswering': Head.SPAN},
    prefix='roberta.', head_prefixes=('lm_head.', 'classifier.', 'qa_outputs.'), table=ROBERTA_TABLE,
    head_tables=_POOLERS, to_fields=_roberta_fields, to_config=_roberta_config,
    aliases=(('lm_head.decoder.weight', 'roberta.embeddings.word_embeddings.weight'),),
    buffers=((r'roberta\.embeddings\.position_ids', is_arange), (r'roberta\.embeddings\.token_type_ids', is_zeros)))
