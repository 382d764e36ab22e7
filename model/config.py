"""`ModelConfig`: the one typed, validated description of every architecture.

The config tree (`config.model` of an ml_collections ConfigDict) becomes typed here, at one boundary:
`ModelConfig.from_dict(config.model)`. Strings from the command line become enums; every field is checked
at construction, and an error names the field and says what would be valid, before anything compiles.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from typing import Any

from core.config import ConfigError, known_fields, parse_enum


class Family(enum.Enum):
  ENCODER = 'encoder'  # BERT and its variants: bidirectional self-attention.
  DECODER = 'decoder'  # GPT: causal self-attention.
  ENCODER_DECODER = 'encoder_decoder'  # T5, Vaswani et al.: encoder + causal decoder with cross-attention.


class Inputs(enum.Enum):
  TOKENS = 'tokens'  # input_ids through a token embedding table (every text model).
  PATCHES = 'patches'  # pixel_values cut into non-overlapping patches, a [CLS] token before them (ViT).


class Pooling(enum.Enum):
  CLS = 'cls'  # the first position: [CLS] (BERT's pooler, ViTForImageClassification's head).
  MEAN = 'mean'  # the mean of the patch tokens, [CLS] excluded (inputs=patches).


class Position(enum.Enum):
  LEARNED = 'learned'  # absolute, a learned table (BERT, GPT-2).
  SINUSOIDAL = 'sinusoidal'  # absolute, fixed (Vaswani et al.).
  RELATIVE = 'relative'  # T5 bucketed relative attention bias, shared by the layers of a stack.
  ROPE = 'rope'  # rotary embeddings of queries and keys.


class Norm(enum.Enum):
  LAYER = 'layer'
  RMS = 'rms'


class NormPlacement(enum.Enum):
  PRE = 'pre'  # x + f(norm(x)), final norm after the stack (GPT-2, T5).
  POST = 'post'  # norm(x + f(x)) (BERT, Vaswani et al.).


class Activation(enum.Enum):
  RELU = 'relu'
  GELU = 'gelu'  # exact (erf) GELU: BERT.
  GELU_TANH = 'gelu_tanh'  # tanh approximation: GPT-2 `gelu_new`, T5 v1.1.
  SILU = 'silu'  # with gated_ffn=True this is SwiGLU.
  TANH = 'tanh'  # BERT's and RoBERTa's pooler.


class Head(enum.Enum):
  NONE = 'none'  # hidden states only (HF BertModel, GPT2Model).
  LM = 'lm'  # vocabulary logits: MLM head for an encoder, next-token head for a decoder.
  CLASSIFIER = 'classifier'  # pooled [CLS] -> num_labels; num_labels=1 is regression.
  # The MLM head and the sentence-order classifier on the pooled [CLS] (ALBERT's pretraining, HF's
  # AlbertForPreTraining): 'logits' (B, T, V) and 'sop_logits' (B, SENTENCE_ORDER_CLASSES).
  PRETRAINING = 'pretraining'
  # Extractive question answering (HF's *ForQuestionAnswering): Linear(d_model, 2) on every token's final hidden
  # state, 'logits' (B, T, 2) float32: [..., 0] the start of the answer span, [..., 1] its end.
  SPAN = 'span'

  @property
  def lm(self) -> bool:
    """Whether the head computes vocabulary logits (the LM head's parameters and options apply)."""
    return self in (Head.LM, Head.PRETRAINING)


SENTENCE_ORDER_CLASSES = 2  # in order, swapped


class AttentionImpl(enum.Enum):
  XLA = 'xla'  # every backend.
  CUDNN = 'cudnn'  # cuDNN fused flash attention: NVIDIA GPUs, bf16/fp16.


class Remat(enum.Enum):
  NONE = 'none'  # keep every activation.
  FULL = 'full'  # recompute the whole layer in the backward pass.
  DOTS = 'dots'  # save matmul outputs, recompute the rest.
  DOTS_NO_BATCH = 'dots_no_batch'  # save only matmuls without batch dims (weights-stationary).


_ENUM_FIELDS: dict[str, type[enum.Enum]] = {
    'family': Family,
    'inputs': Inputs,
    'pooling': Pooling,
    'position': Position,
    'norm': Norm,
    'norm_placement': NormPlacement,
    'activation': Activation,
    'pooler_activation': Activation,
    'head': Head,
    'attention_impl': AttentionImpl,
    'remat': Remat,
}

_DTYPES = ('float32', 'bfloat16', 'float16')

# Fields that change how the same function runs, not what it computes nor the parameters it has: a run may
# resume with others (trainer/checkpoint.RUNTIME_FIELDS), an HF export ignores them (model/hf/io.py).
EXECUTION_FIELDS: tuple[str, ...] = ('attention_impl', 'remat')


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
  """Architecture hyper-parameters. Defaults are BERT-base-like; named setups live in `configs/`."""

  family: Family = Family.ENCODER
  vocab_size: int = 30522
  d_model: int = 768
  num_heads: int = 12
  head_dim: int | None = None  # per-head width (T5's d_kv); None means d_model // num_heads.
  d_ff: int = 3072
  num_layers: int = 12  # encoder layers, or decoder layers of a decoder-only model.
  num_decoder_layers: int | None = None  # encoder-decoder only; None means num_layers.
  # What the encoder reads. patches (ViT): images of image_size x image_size pixels and num_channels channels, cut
  # into patch_size x patch_size patches, each projected to d_model (HF's Conv2d of kernel = stride = patch); the
  # learned position table then has a row for [CLS] and one per patch (max_len and vocab_size are unused).
  inputs: Inputs = Inputs.TOKENS
  image_size: int | None = None  # these three: required by inputs=patches, None otherwise.
  patch_size: int | None = None
  num_channels: int | None = None

  position: Position = Position.LEARNED
  max_len: int = 512  # size of the learned / sinusoidal position table and of rope caches.
  relative_buckets: int = 32  # T5 relative attention: number of buckets ...
  relative_max_distance: int = 128  # ... and the distance beyond which all share the last bucket.
  rope_base: float = 10000.0
  # Learned positions: the table row of a sequence's first real token. 0: rows are sequence slots (BERT,
  # GPT-2). k >= 1: real tokens read rows k, k+1, ... counted over the attention mask (left padding too), and
  # padding reads row k-1; the table then holds max_len - k real positions (RoBERTa: k = pad id + 1 = 2).
  position_offset: int = 0
  num_token_types: int = 0  # BERT segment (token type) embeddings; 0 = none.
  # Factorised embeddings and cross-layer sharing (ALBERT).
  # embedding_size E: token / position / type tables and the embedding norm are E wide, then a learned E -> d_model
  # projection (present also when E == d_model, as in HF ALBERT); an MLM head maps back to E and decodes with the
  # (V, E) table. None: the tables are d_model wide and there is no projection (BERT).
  embedding_size: int | None = None
  # The encoder's layers share parameters in this many groups of consecutive layers (HF num_hidden_groups): layer
  # i applies group i * num_layer_groups // num_layers. None: every layer has its own (as num_layers groups).
  num_layer_groups: int | None = None

  norm: Norm = Norm.LAYER
  norm_placement: NormPlacement = NormPlacement.POST
  norm_eps: float = 1e-12
  embed_norm: bool = False  # LayerNorm right after the embedding sum (BERT).
  activation: Activation = Activation.GELU
  gated_ffn: bool = False  # act(x W_gate) * (x W_in) (T5 v1.1 gated-GELU, SwiGLU).
  use_bias: bool = True  # biases in dense layers and norms (T5 has none).
  scale_attention: bool = True  # divide logits by sqrt(head_dim); T5 folds this into the init instead.
  scale_embeddings: bool = False  # multiply token embeddings by sqrt(d_model) (Vaswani et al.).

  head: Head = Head.NONE
  num_labels: int = 0  # CLASSIFIER head outputs; 1 means regression.
  pooler: bool = False  # dense+tanh over the first token (BERT); required by a token model's CLASSIFIER head.
  pooler_activation: Activation = Activation.TANH  # DistilBERT's pre_classifier is dense+relu.
  # What the pooler (or, without one, the classifier: ViTForImageClassification) reads of the final hidden states.
  pooling: Pooling = Pooling.CLS
  # Regression (num_labels=1) predicts target_mean + target_scale * (the classifier's output): the head
  # then fits labels of mean 0 and std 1 (train.standardize_targets sets them from the training labels).
  target_mean: float = 0.0
  target_scale: float = 1.0
  tie_embeddings: bool = True  # LM head reuses the token embedding matrix.
  scale_tied_logits: bool = False  # hidden * d_model**-0.5 before a tied LM head (T5 v1.0).
  lm_head_bias: bool = False  # a vocabulary bias on the LM head (BERT's MLM head).

  dropout_rate: float = 0.1  # embeddings and the output of every sub-layer.
  attention_dropout_rate: float = 0.1  # attention probabilities.
  ffn_dropout_rate: float = 0.0  # inside the feed-forward, after the activation (T5).
  final_dropout: bool = False  # dropout_rate after a stack's final norm too (T5; GPT-2 has none there).
  init_std: float = 0.02

  dtype: str = 'float32'  # compute dtype; parameters stay in param_dtype.
  param_dtype: str = 'float32'
  attention_impl: AttentionImpl = AttentionImpl.XLA
  scan_layers: bool = True  # nn.scan over layers: compile time flat in depth.
  remat: Remat = Remat.NONE

  def __post_init__(self) -> None:
    for name, enum_type in _ENUM_FIELDS.items():
      value = getattr(self, name)
      if not isinstance(value, enum_type):
        object.__setattr__(self, name, parse_enum(enum_type, value, field=f'model.{name}',
                                                 what=enum_type.__name__.lower()))
    self._validate()

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> ModelConfig:
    """Builds from a mapping (e.g. `config.model`); unknown keys are an error naming the valid ones."""
    return cls(**known_fields(cls, values, section='model'))

  def to_dict(self) -> dict[str, Any]:
    """Plain values (enums as their strings): JSON-serialisable and accepted by `from_dict`."""
    out = dataclasses.asdict(self)
    return {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in out.items()}

  def replace(self, **changes: Any) -> ModelConfig:
    return dataclasses.replace(self, **changes)

  @property
  def kv_dim(self) -> int:
    """Per-head width of queries, keys and values."""
    return self.head_dim if self.head_dim is not None else self.d_model // self.num_heads

  @property
  def embed_width(self) -> int:
    """Width E of the embedding tables (d_model unless factorised)."""
    return self.embedding_size if self.embedding_size is not None else self.d_model

  @property
  def layer_groups(self) -> int:
    """Parameter sets of the encoder's layers; each is applied num_layers // layer_groups times in a row."""
    return self.num_layer_groups if self.num_layer_groups is not None else self.num_layers

  @property
  def decoder_layers(self) -> int:
    return self.num_decoder_layers if self.num_decoder_layers is not None else self.num_layers

  @property
  def patch_grid(self) -> tuple[int, int]:
    """(rows, columns) of patches of an image_size image: the grid the position table is laid out on."""
    if self.inputs is not Inputs.PATCHES:
      raise ValueError(f'model.inputs={self.inputs.value} has no patch grid')
    side = self.image_size // self.patch_size
    return side, side

  @property
  def position_rows(self) -> int:
    """Rows of the learned or sinusoidal position table: max_len, or [CLS] + one per patch for images."""
    if self.inputs is Inputs.PATCHES:
      rows, cols = self.patch_grid
      return 1 + rows * cols
    return self.max_len

  @property
  def has_encoder(self) -> bool:
    return self.family in (Family.ENCODER, Family.ENCODER_DECODER)

  @property
  def has_decoder(self) -> bool:
    return self.family in (Family.DECODER, Family.ENCODER_DECODER)

  def _validate(self) -> None:
    def fail(name: str, why: str) -> None:
      value = getattr(self, name)  # an enum as the string that sets it, as on the command line
      raise ConfigError(f'model.{name}={value.value if isinstance(value, enum.Enum) else value!r}: {why}')

    for name in ('vocab_size', 'd_model', 'num_heads', 'd_ff', 'num_layers', 'max_len'):
      if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
        fail(name, 'must be a positive integer')
    for name in ('head_dim', 'num_decoder_layers', 'embedding_size', 'num_layer_groups'):
      value = getattr(self, name)
      if value is not None and (not isinstance(value, int) or value < 1):
        fail(name, 'must be a positive integer, or None for the default')
    for name in ('num_token_types', 'num_labels', 'position_offset'):
      if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
        fail(name, 'must be an integer >= 0')
    if self.head_dim is None and self.d_model % self.num_heads:
      fail('num_heads', f'must divide d_model={self.d_model} (or set model.head_dim explicitly, as T5 does)')
    if self.num_decoder_layers is not None and self.family is not Family.ENCODER_DECODER:
      fail('num_decoder_layers', f'only applies to family=encoder_decoder, not {self.family.value}; '
           'use num_layers')
    for name in ('embedding_size', 'num_layer_groups'):  # the encoder-only embedding and stack (ALBERT)
      if getattr(self, name) is not None and self.family is not Family.ENCODER:
        fail(name, f'is implemented for family=encoder only, not {self.family.value}; set it to None')
    if self.num_layer_groups is not None and self.num_layers % self.num_layer_groups:
      fail('num_layer_groups', f'must divide num_layers={self.num_layers} (and so not exceed it): every group '
           'is applied to the same number of consecutive layers')
    for name in ('dropout_rate', 'attention_dropout_rate', 'ffn_dropout_rate'):
      if not 0.0 <= getattr(self, name) < 1.0:
        fail(name, 'must be in [0, 1)')
    if not self.norm_eps > 0:
      fail('norm_eps', 'must be > 0')
    if not self.init_std > 0:
      fail('init_std', 'must be > 0')
    if self.position is Position.ROPE and self.kv_dim % 2:
      fail('position', f'rope rotates pairs of features and needs an even head_dim, got {self.kv_dim}')
    if self.position is Position.RELATIVE and (self.relative_buckets < 2 or self.relative_max_distance < 2):
      fail('relative_buckets', 'relative_buckets and relative_max_distance must both be >= 2')
    if self.position_offset:
      if self.position is not Position.LEARNED:
        fail('position_offset', f'offsets rows of a learned position table, but position={self.position.value}: '
             'set position=learned or position_offset=0')
      if self.family is not Family.ENCODER:
        fail('position_offset', 'counts positions over the whole attention mask, which only an encoder has '
             f'(not family={self.family.value}): use family=encoder or position_offset=0')
      if self.position_offset >= self.max_len:
        fail('position_offset', f'leaves no row of the position table (max_len={self.max_len}) for a real token: '
             'raise max_len')
    if self.head is Head.CLASSIFIER:
      if self.family is not Family.ENCODER:
        fail('head', 'the classifier head sits on an encoder\'s pooled first token: use family=encoder')
      if self.num_labels < 1:
        fail('num_labels', 'the classifier head needs num_labels >= 1 (1 means regression)')
      if not self.pooler and self.inputs is Inputs.TOKENS:  # ViTForImageClassification has none: images may omit it
        fail('pooler', 'the classifier head reads the pooled first token: set model.pooler=True')
    elif self.head is Head.PRETRAINING:
      if self.family is not Family.ENCODER:
        fail('head', 'the pretraining head (MLM + sentence order) sits on an encoder: use family=encoder')
      if not self.pooler:
        fail('pooler', 'the pretraining head\'s sentence-order classifier reads the pooled first token: set '
             'model.pooler=True')
    elif self.head is Head.SPAN:
      if self.family is not Family.ENCODER:
        fail('head', f'the span head (extractive QA) scores every token of an encoder, but model.family='
             f'{self.family.value}: use family=encoder')
      if self.inputs is not Inputs.TOKENS:
        fail('head', f'the span head picks a span of tokens, but model.inputs={self.inputs.value}: use inputs=tokens')
      if self.pooler:  # HF's *ForQuestionAnswering have none; a pooler here would train on nothing
        fail('pooler', 'the span head reads every token\'s hidden state, not the pooled first token (HF\'s '
             '*ForQuestionAnswering have no pooler): set model.pooler=False')
    if self.head is not Head.CLASSIFIER and self.num_labels:
      fail('num_labels', f'only used by head=classifier, but head={self.head.value}; set num_labels=0')
    if (self.target_mean, self.target_scale) != (0.0, 1.0) and not (self.head is Head.CLASSIFIER and
                                                                    self.num_labels == 1):
      fail('target_mean' if self.target_mean != 0.0 else 'target_scale',
           'target_mean / target_scale only apply to regression (head=classifier, num_labels=1)')
    if not self.target_scale > 0:
      fail('target_scale', f'must be > 0, got {self.target_scale}')
    if self.pooler and self.family is not Family.ENCODER:
      fail('pooler', 'only an encoder-only model has a pooler')
    if self.pooler_activation is not Activation.TANH and not self.pooler:
      fail('pooler_activation', 'only applies with model.pooler=True')
    if self.scale_tied_logits and not (self.head.lm and self.tie_embeddings):
      fail('scale_tied_logits', 'only applies to a tied LM head (head=lm or pretraining, tie_embeddings=True)')
    if self.lm_head_bias and not self.head.lm:
      fail('lm_head_bias', 'only applies to head=lm or pretraining')
    for name in ('dtype', 'param_dtype'):
      if getattr(self, name) not in _DTYPES:
        fail(name, f'must be one of {_DTYPES}')
    self._validate_inputs(fail)
    if self.attention_impl is AttentionImpl.CUDNN and self.dtype == 'float32':
      fail('attention_impl', 'cuDNN flash attention runs in bfloat16 or float16: set model.dtype=bfloat16, '
           'or use attention_impl=xla')

  def _validate_inputs(self, fail: Callable[[str, str], None]) -> None:
    """inputs=patches (ViT) and what it rules out; pooling."""
    image_fields = ('image_size', 'patch_size', 'num_channels')
    if self.inputs is Inputs.TOKENS:
      for name in image_fields:
        if getattr(self, name) is not None:
          fail(name, 'only applies to model.inputs=patches (images); set it to None or set inputs=patches')
      if self.pooling is not Pooling.CLS:
        fail('pooling', 'averages the patch tokens of model.inputs=patches; a token model pools its first token: '
             'set pooling=cls')
      return
    for name in image_fields:
      if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
        fail(name, 'model.inputs=patches needs it as a positive integer (the images are image_size x image_size '
             'pixels of num_channels channels, cut into patch_size x patch_size patches)')
    if self.image_size % self.patch_size:
      fail('patch_size', f'must divide model.image_size={self.image_size}: the patches tile the image without '
           'overlap')
    if self.family is not Family.ENCODER:
      fail('inputs', f'patches feed an encoder (ViT): set family=encoder, not {self.family.value}')
    if self.position is not Position.LEARNED:
      fail('position', 'model.inputs=patches has a learned table of a [CLS] row and one row per patch: set '
           'position=learned')
    for name, why in (('head', 'vocabulary (LM) head'), ('num_token_types', 'token types'),
                      ('position_offset', 'position offsets'), ('scale_embeddings', 'token-embedding scaling')):
      bad = self.head is Head.LM if name == 'head' else getattr(self, name)
      if bad:
        fail(name, f'model.inputs=patches has no tokens, so no {why}; use inputs=tokens or change {name}')
