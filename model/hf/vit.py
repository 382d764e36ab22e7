"""ViT (ViTModel, ViTForImageClassification): the table and config.json fields.

ViT is the shared encoder with model.inputs=patches: HF's patch Conv2d is our patch projection (`patch_embed/proj`,
its kernel the Conv2d weight with the output axis last), its [CLS] token ours, its position table the encoder's
(a [CLS] row, then the patch grid row-major); pre-LN layers and a final norm (`vit.layernorm`). ViTModel has the
dense + tanh pooler on [CLS]; ViTForImageClassification has none: its classifier reads the final norm at [CLS].
The tables use transformers 5's names (`vit.layers.{i}.attention.q_proj`); the older layout of every published
checkpoint (`vit.encoder.layer.{i}.attention.attention.query`) is renamed on import, as transformers 5 does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from model.config import Family, Head, Inputs, ModelConfig, Norm, NormPlacement, Position
from model.hf.mapping import (ACTIVATION_NAMES, CONV, TABLE, TOKEN, VECTOR, CheckpointError, FamilySpec, Row,
                              activation, attention, dense, get, labels_config, norm, num_labels, unsupported)

_LAYER = 'vit.layers.{i}'
VIT_TABLE: tuple[Row, ...] = (
    ('vit.embeddings.cls_token', 'patch_embed/cls_token', TOKEN),
    ('vit.embeddings.position_embeddings', 'encoder/position_embed/embedding', TABLE),
    ('vit.embeddings.patch_embeddings.projection.weight', 'patch_embed/proj/kernel', CONV),
    ('vit.embeddings.patch_embeddings.projection.bias', 'patch_embed/proj/bias', VECTOR),
    *norm(f'{_LAYER}.layernorm_before', 'encoder/layers_{i}/self_attn_norm'),
    *attention(f'{_LAYER}.attention', 'encoder/layers_{i}/self_attn', ('q_proj', 'k_proj', 'v_proj', 'o_proj')),
    *norm(f'{_LAYER}.layernorm_after', 'encoder/layers_{i}/ffn_norm'),
    *dense(f'{_LAYER}.mlp.fc1', 'encoder/layers_{i}/ffn/wi'),
    *dense(f'{_LAYER}.mlp.fc2', 'encoder/layers_{i}/ffn/wo'),
    *norm('vit.layernorm', 'encoder/final_norm'),
    *dense('vit.pooler.dense', 'pooler'),
    *dense('classifier', 'classifier'),
)

# transformers 4's layer names (those of the published checkpoints) -> 5's, in order.
_LEGACY_NAMES: tuple[tuple[str, str], ...] = (
    (r'^vit\.encoder\.layer\.(\d+)\.', r'vit.layers.\1.'),
    (r'\.attention\.attention\.query\.', '.attention.q_proj.'),
    (r'\.attention\.attention\.key\.', '.attention.k_proj.'),
    (r'\.attention\.attention\.value\.', '.attention.v_proj.'),
    (r'\.attention\.output\.dense\.', '.attention.o_proj.'),
    (r'^(vit\.layers\.\d+)\.intermediate\.dense\.', r'\1.mlp.fc1.'),
    (r'^(vit\.layers\.\d+)\.output\.dense\.', r'\1.mlp.fc2.'),
)


def _square(hf: Mapping[str, Any], key: str) -> int:
  """image_size / patch_size: an int, or a [height, width] pair of equal sides (ours are square)."""
  value = get(hf, key)
  if isinstance(value, (list, tuple)):
    if len(value) != 2 or value[0] != value[1]:
      raise CheckpointError(f'config.json sets {key}={value}; only square sizes (one int, or equal sides) are '
                            'supported')
    value = value[0]
  return value


def _vit_fields(hf: Mapping[str, Any], head: Head, tied: bool) -> dict[str, Any]:
  # qkv_bias=False drops the query/key/value biases alone, which use_bias (all or none) cannot express.
  unsupported(hf, qkv_bias=True)
  if hf.get('pooler_output_size') not in (None, get(hf, 'hidden_size')):
    raise CheckpointError(f'config.json sets pooler_output_size={hf["pooler_output_size"]}; only the hidden size '
                          f'({hf["hidden_size"]}) is supported')
  classifier = head is Head.CLASSIFIER
  # Defaults are ViTConfig's where config.json may omit a field.
  return dict(
      family=Family.ENCODER, inputs=Inputs.PATCHES, image_size=_square(hf, 'image_size'),
      patch_size=_square(hf, 'patch_size'), num_channels=hf.get('num_channels', 3), d_model=get(hf, 'hidden_size'),
      num_heads=get(hf, 'num_attention_heads'), d_ff=get(hf, 'intermediate_size'),
      num_layers=get(hf, 'num_hidden_layers'), position=Position.LEARNED, num_token_types=0, norm=Norm.LAYER,
      norm_placement=NormPlacement.PRE, norm_eps=hf.get('layer_norm_eps', 1e-12), embed_norm=False,
      activation=activation(hf.get('hidden_act', 'gelu')), dropout_rate=hf.get('hidden_dropout_prob', 0.0),
      attention_dropout_rate=hf.get('attention_probs_dropout_prob', 0.0), ffn_dropout_rate=0.0,
      init_std=hf.get('initializer_range', 0.02), head=head, pooler=not classifier,
      pooler_activation=activation(hf.get('pooler_act', 'tanh')) if not classifier else 'tanh',
      tie_embeddings=tied, num_labels=num_labels(hf, head))


def _vit_config(cfg: ModelConfig) -> dict[str, Any]:
  if cfg.inputs is not Inputs.PATCHES:
    raise CheckpointError(f'model.inputs={cfg.inputs.value}: ViT reads images (inputs=patches)')
  return dict(hidden_size=cfg.d_model, num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
              intermediate_size=cfg.d_ff, hidden_act=ACTIVATION_NAMES[cfg.activation],
              hidden_dropout_prob=cfg.dropout_rate, attention_probs_dropout_prob=cfg.attention_dropout_rate,
              initializer_range=cfg.init_std, layer_norm_eps=cfg.norm_eps, image_size=cfg.image_size,
              patch_size=cfg.patch_size, num_channels=cfg.num_channels, qkv_bias=True,
              pooler_act=ACTIVATION_NAMES[cfg.pooler_activation], **labels_config(cfg))


SPEC = FamilySpec(
    model_type='vit', family=Family.ENCODER,
    classes={'ViTModel': Head.NONE, 'ViTForImageClassification': Head.CLASSIFIER},
    prefix='vit.', head_prefixes=('classifier.',), table=VIT_TABLE, to_fields=_vit_fields, to_config=_vit_config,
    aliases=(), buffers=(), renames=_LEGACY_NAMES)
