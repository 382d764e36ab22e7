"""Presets shared by the config files: one size table, one function per published family, the pretraining
optimiser recipe, and `make_config`, which builds every section from its dataclass's defaults.

A family is a set of `ModelConfig` field values, never a module of its own; every field of every section can
still be overridden from the command line (`--config.model.position=rope`, `--config.data.length_buckets=...`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_collections

from core.config import section
from model.config import ModelConfig
from trainer.config import sections

# Width, heads, feed-forward width and depth, named after the T5 sizes (BERT-base and GPT-2 small are 'base';
# Vaswani et al.'s base model is 'small'). 'tiny' is for tests and CPU runs in minutes.
SIZES: dict[str, dict[str, int]] = {
    'tiny': dict(d_model=128, num_heads=4, d_ff=512, num_layers=2),
    'small': dict(d_model=512, num_heads=8, d_ff=2048, num_layers=6),
    'base': dict(d_model=768, num_heads=12, d_ff=3072, num_layers=12),
    'large': dict(d_model=1024, num_heads=16, d_ff=4096, num_layers=24),
}

# T5 v1.1 changed the shapes as well as the feed-forward (google/t5-v1_1-* checkpoints).
T5_V11_SIZES: dict[str, dict[str, int]] = {
    'tiny': SIZES['tiny'],
    'small': dict(d_model=512, num_heads=6, d_ff=1024, num_layers=8),
    'base': dict(d_model=768, num_heads=12, d_ff=2048, num_layers=12),
    'large': dict(d_model=1024, num_heads=16, d_ff=2816, num_layers=24),
}


def bert(size: str, *, vocab_size: int = 30522, max_len: int = 512, **overrides: Any) -> dict[str, Any]:
  """BERT (Devlin et al. 2019): post-LN encoder, learned positions, token types, tied MLM head with bias."""
  return dict(family='encoder', vocab_size=vocab_size, max_len=max_len, position='learned', num_token_types=2,
              norm='layer', norm_placement='post', norm_eps=1e-12, embed_norm=True, activation='gelu',
              head='lm', tie_embeddings=True, lm_head_bias=True, dropout_rate=0.1, attention_dropout_rate=0.1,
              **SIZES[size]) | overrides


def roberta(size: str, *, vocab_size: int = 50265, max_len: int = 514, **overrides: Any) -> dict[str, Any]:
  """RoBERTa (Liu et al. 2019): BERT's encoder and MLM head with one token type, LayerNorm eps 1e-5, and
  positions from row 2 (fairseq's: pad id 1 + 1; padding reads row 1), so 514 rows hold 512 positions."""
  return bert(size, vocab_size=vocab_size, max_len=max_len, num_token_types=1, position_offset=2,
              norm_eps=1e-5) | overrides


def distilbert(size: str, *, vocab_size: int = 30522, max_len: int = 512, **overrides: Any) -> dict[str, Any]:
  """DistilBERT (Sanh et al. 2019): BERT at half the depth without token types; as HF's, its classifier's
  pooler (pre_classifier) is dense + ReLU."""
  return bert(size, vocab_size=vocab_size, max_len=max_len, num_token_types=0,
              num_layers=SIZES[size]['num_layers'] // 2) | overrides


def albert(size: str, *, vocab_size: int = 30000, max_len: int = 512, **overrides: Any) -> dict[str, Any]:
  """ALBERT v2 (Lan et al. 2020): BERT with factorised embeddings (E = 128 wide, projected to d_model) and
  every layer sharing one set of parameters; tanh GELU (HF's gelu_new) and no dropout; its pretraining head,
  MLM + sentence order on the pooled [CLS] (HF's AlbertForPreTraining; data.objective=mlm_sop)."""
  return bert(size, vocab_size=vocab_size, max_len=max_len, **(dict(
      embedding_size=128, num_layer_groups=1, activation='gelu_tanh', dropout_rate=0.0,
      attention_dropout_rate=0.0, head='pretraining', pooler=True) | overrides))


# ViT sizes (Dosovitskiy et al. 2021; Ti and S from DeiT, Touvron et al. 2021): d_ff is 4 x d_model.
VIT_SIZES: dict[str, dict[str, int]] = {
    'tiny': SIZES['tiny'],
    'ti': dict(d_model=192, num_heads=3, d_ff=768, num_layers=12),
    's': dict(d_model=384, num_heads=6, d_ff=1536, num_layers=12),
    'b': SIZES['base'],
}


def vit(size: str, *, image_size: int = 224, patch_size: int = 16, num_channels: int = 3,
        **overrides: Any) -> dict[str, Any]:
  """ViT (Dosovitskiy et al. 2021): the image cut into patch_size patches, each projected to d_model, after a [CLS]
  token; learned positions, pre-LN encoder, final norm, exact GELU, no dropout (HF's ViTConfig: LayerNorm eps 1e-12).
  The head reads the final hidden state at [CLS] (model.pooling=cls, HF's ViTForImageClassification); set
  head='classifier' and num_labels. Sizes: 'tiny' (CPU tests), 'ti', 's', 'b' (VIT_SIZES)."""
  return dict(family='encoder', inputs='patches', image_size=image_size, patch_size=patch_size,
              num_channels=num_channels, position='learned', norm='layer', norm_placement='pre', norm_eps=1e-12,
              activation='gelu', head='none', dropout_rate=0.0, attention_dropout_rate=0.0,
              **VIT_SIZES[size]) | overrides


def gpt2(size: str, *, vocab_size: int = 50257, max_len: int = 1024, **overrides: Any) -> dict[str, Any]:
  """GPT-2 (Radford et al. 2019): pre-LN causal decoder, learned positions, tied LM head, tanh GELU."""
  return dict(family='decoder', vocab_size=vocab_size, max_len=max_len, position='learned', norm='layer',
              norm_placement='pre', norm_eps=1e-5, activation='gelu_tanh', head='lm', tie_embeddings=True,
              dropout_rate=0.1, attention_dropout_rate=0.1, **SIZES[size]) | overrides


def t5(size: str, *, version: str = '1.0', vocab_size: int = 32128, **overrides: Any) -> dict[str, Any]:
  """T5 (Raffel et al. 2020): pre-RMSNorm encoder-decoder, no biases, relative position buckets, unscaled
  attention. v1.0: ReLU, LM head tied to the shared embedding with the d_model**-0.5 rescaling;
  v1.1: gated-GELU feed-forward and an untied LM head."""
  if version not in ('1.0', '1.1'):
    raise ValueError(f't5 version must be "1.0" or "1.1", got {version!r}')
  v11 = version == '1.1'
  sizes = dict(T5_V11_SIZES[size] if v11 else SIZES[size], head_dim=64)
  return dict(family='encoder_decoder', vocab_size=vocab_size, position='relative', relative_buckets=32,
              relative_max_distance=128, norm='rms', norm_placement='pre', norm_eps=1e-6, use_bias=False,
              scale_attention=False, activation='gelu_tanh' if v11 else 'relu', gated_ffn=v11, head='lm',
              tie_embeddings=not v11, scale_tied_logits=not v11, dropout_rate=0.1, attention_dropout_rate=0.1,
              ffn_dropout_rate=0.1, final_dropout=True, max_len=512, **sizes) | overrides


def vaswani(size: str, *, vocab_size: int = 37000, **overrides: Any) -> dict[str, Any]:
  """The original Transformer (Vaswani et al. 2017): post-LN, sinusoidal positions, embeddings scaled by
  sqrt(d_model), source/target/output embeddings shared, ReLU, residual dropout 0.1."""
  return dict(family='encoder_decoder', vocab_size=vocab_size, position='sinusoidal', max_len=512, norm='layer',
              norm_placement='post', norm_eps=1e-6, activation='relu', scale_embeddings=True, head='lm',
              tie_embeddings=True, dropout_rate=0.1, attention_dropout_rate=0.0, **SIZES[size]) | overrides


# The AdamW recipe of this codebase's pretraining setups (the defaults of OptimConfig are plain AdamW): decay
# to a tenth of the peak, weight decay 0.01 on kernels and embeddings, beta2 0.98 (Vaswani et al., RoBERTa).
ADAMW_PRETRAINING: dict[str, Any] = dict(end_lr_ratio=0.1, weight_decay=0.01, b2=0.98)

# How the tiny CPU setups run (same functions, faster on a CPU core; bench/RESULTS.md measures each): two layers
# unscanned (a scan stacks every layer's activations into zero-filled buffers and moves its weight gradients off
# the fast matmul path), and the 8k-vocabulary logits 8 positions per row at a time, each chunk's softmax and
# gradients computed while it is in cache (train.logits_chunk).
CPU_TINY_MODEL: dict[str, Any] = dict(scan_layers=False)
CPU_TINY_TRAIN: dict[str, Any] = dict(logits_chunk=8)


def make_config(model: Mapping[str, Any], *, data: Mapping[str, Any], optim: Mapping[str, Any],
                train: Mapping[str, Any], eval: Mapping[str, Any] | None = None) -> ml_collections.ConfigDict:
  """The config tree of a setup: sections model, data, optim, mesh, train, eval, distributed, distill.

  Every section lists every field of its dataclass (trainer.config.sections) at the dataclass's default, with
  the setup's values on top: a default is written once, any field can be overridden from the command line in
  any setup, and a key the dataclass lacks is an error here, when the config file loads. The model section is
  validated as a whole (ModelConfig), so a preset that cannot be built fails on load too."""
  given = {'model': ModelConfig.from_dict(model).to_dict(), 'data': data, 'optim': optim, 'train': train,
           'eval': eval}
  config = ml_collections.ConfigDict()
  for name, (cls, exclude) in sections().items():
    config[name] = section(cls, given.get(name), name=name, exclude=exclude)
  return config
