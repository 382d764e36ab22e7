"""The one Transformer module of all three families; the family and the head are config values.

  encoder          token embed -> encoder Stack -> [pooler] -> [MLM head | classifier | both MLM head and
                   sentence-order classifier | span head on every token]               (BERT, ALBERT)
                   [CLS] + patch embed -> pre-LN encoder Stack -> [pooler] -> [classifier]    (ViT)
  decoder          token embed -> causal decoder Stack -> [LM head]                           (GPT-2)
  encoder_decoder  shared embed -> encoder Stack -> causal decoder Stack with cross-attention
                   over the encoder output -> [LM head]                                       (T5, Vaswani)
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from model import masks
from model import partitioning as P
from model.blocks import Stack
from model.config import SENTENCE_ORDER_CLASSES, Family, Head, Inputs, ModelConfig, Pooling
from model.layers import Dropout, PatchEmbed, activation_fn, dense, embed, norm, partitioned


class VocabKernel(nn.Module):
  """The untied LM head's (embed, vocab) kernel, `lm_head/kernel` as a dense layer names it, returned as a
  matrix so the head can be applied whole or a chunk at a time (`Transformer.lm_projection`)."""

  width: int  # d_model, or the factorised embedding width E
  vocab_size: int
  std: float
  param_dtype: Any

  @nn.compact
  def __call__(self) -> jax.Array:
    return self.param('kernel', partitioned(nn.initializers.normal(self.std), (P.EMBED, P.VOCAB)),
                      (self.width, self.vocab_size), self.param_dtype)


class Transformer(nn.Module):
  """`apply` returns {'hidden': (B, T, D) final hidden states, 'logits': head output (if any),
  'pooled': (B, D) (with a pooler; without one, what a classifier reads), 'sop_logits': (B, 2) (the pretraining
  head), 'encoder_hidden': (B, S, D) (encoder-decoder)}. The span head's 'logits' are (B, T, 2): each token's
  score as the answer's start ([..., 0]) and end ([..., 1])."""

  cfg: ModelConfig

  def setup(self) -> None:
    cfg = self.cfg
    kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    if cfg.inputs is Inputs.PATCHES:
      self.patch_embed = PatchEmbed(cfg.patch_size, cfg.num_channels, cfg.embed_width, use_bias=cfg.use_bias,
                                    std=cfg.init_std, name='patch_embed', **kw)
    else:
      self.token_embed = embed(cfg.vocab_size, cfg.embed_width, (P.VOCAB, P.EMBED), std=cfg.init_std,
                               name='token_embed', **kw)
    if cfg.has_encoder:
      self.encoder = Stack(cfg, num_layers=cfg.num_layers, causal=False, cross=False,
                           repeats=cfg.num_layers // cfg.layer_groups)
    if cfg.has_decoder:
      cross = cfg.family is Family.ENCODER_DECODER
      self.decoder = Stack(cfg, num_layers=cfg.decoder_layers if cross else cfg.num_layers, causal=True,
                           cross=cross)
    dense_kw = dict(std=cfg.init_std, **kw)
    if cfg.pooler:
      self.pooler = dense(cfg.d_model, (P.EMBED, None), use_bias=True, name='pooler', **dense_kw)
    if cfg.head.lm:
      if cfg.family is Family.ENCODER:  # BERT's MLM transform: dense -> act -> norm before the projection.
        # (to the embedding width, which ALBERT factorises)
        self.mlm_dense = dense(cfg.embed_width, (P.EMBED, None), use_bias=cfg.use_bias, name='mlm_dense', **dense_kw)
        self.mlm_norm = norm(cfg.norm, eps=cfg.norm_eps, use_bias=cfg.use_bias, name='mlm_norm', **kw)
      if not cfg.tie_embeddings:
        self.lm_head = VocabKernel(cfg.embed_width, cfg.vocab_size, std=cfg.init_std, param_dtype=cfg.param_dtype,
                                   name='lm_head')
      if cfg.lm_head_bias:
        self.lm_bias = self.param('lm_bias', partitioned(nn.initializers.zeros_init(), (P.VOCAB,)),
                                  (cfg.vocab_size,), cfg.param_dtype)
    if cfg.head is Head.CLASSIFIER:
      self.classifier_dropout = Dropout(cfg.dropout_rate)
      self.classifier = dense(cfg.num_labels, (None, None), use_bias=True, name='classifier', **dense_kw)
    if cfg.head is Head.PRETRAINING:  # HF's sop_classifier: dropout + Linear(d_model, 2) on the pooled [CLS]
      self.sop_dropout = Dropout(cfg.dropout_rate)
      self.sop_classifier = dense(SENTENCE_ORDER_CLASSES, (None, None), use_bias=True, name='sop_classifier',
                                  **dense_kw)
    if cfg.head is Head.SPAN:  # HF's qa_outputs: no dropout before it (as Bert/Roberta/AlbertForQuestionAnswering)
      self.qa_outputs = dense(2, (None, None), use_bias=True, name='qa_outputs', **dense_kw)

  def _embed_tokens(self, ids: jax.Array) -> jax.Array:
    x = self.token_embed(ids)
    if self.cfg.scale_embeddings:  # Vaswani et al. §3.4: embeddings times sqrt(d_model).
      x = x * jnp.sqrt(jnp.asarray(self.cfg.d_model, x.dtype))
    return x

  def _patch_grid(self, pixel_values: jax.Array, interpolate_pos_encoding: bool) -> tuple[int, int]:
    """The (rows, columns) of patches of images in HF's layout (B, C, H, W), checked against the config."""
    cfg = self.cfg
    if pixel_values.ndim != 4:
      raise ValueError(f'pixel_values of shape {pixel_values.shape}: expected (batch, channels, height, width)')
    _, channels, height, width = pixel_values.shape
    if channels != cfg.num_channels:
      raise ValueError(f'pixel_values of shape {pixel_values.shape} has {channels} channels but model.num_channels='
                       f'{cfg.num_channels}: convert the images (axis 1 is the channel axis) or set num_channels')
    if height % cfg.patch_size or width % cfg.patch_size:
      raise ValueError(f'pixel_values of {height}x{width} pixels: model.patch_size={cfg.patch_size} must divide the '
                       'height and the width; resize or crop the images')
    grid = (height // cfg.patch_size, width // cfg.patch_size)
    if grid != cfg.patch_grid and not interpolate_pos_encoding:
      raise ValueError(f'pixel_values of {height}x{width} pixels, but model.image_size={cfg.image_size}: the position '
                       f'table holds a {cfg.patch_grid[0]}x{cfg.patch_grid[1]} grid of patches; resize the images to '
                       f'{cfg.image_size}x{cfg.image_size}, or pass interpolate_pos_encoding=True to resize the table')
    return grid

  def encode(self, input_ids: jax.Array | None = None, attention_mask: jax.Array | None = None,
             token_type_ids: jax.Array | None = None, position_ids: jax.Array | None = None,
             segment_ids: jax.Array | None = None, deterministic: bool = True,
             first_rows: int | None = None, pixel_values: jax.Array | None = None,
             interpolate_pos_encoding: bool = False) -> jax.Array:
    """input_ids: (B, S), or pixel_values: (B, C, H, W) (inputs=patches) -> encoder hidden states (B, S, D),
    S = 1 + (H/p)(W/p) for images, or (B, first_rows, D) (see `Stack`)."""
    if self.cfg.inputs is Inputs.TOKENS:
      if input_ids is None or pixel_values is not None:
        raise ValueError('model.inputs=tokens reads input_ids, not pixel_values')
      return self.encoder(self._embed_tokens(input_ids), valid=masks.token_validity(attention_mask, segment_ids),
                          segment_ids=segment_ids, positions=position_ids, token_type_ids=token_type_ids,
                          deterministic=deterministic, first_rows=first_rows)
    # Every image is whole: no padding or packing to mask (and mean pooling averages every patch).
    token_args = dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                      position_ids=position_ids, segment_ids=segment_ids)
    if pixel_values is None or (given := [k for k, v in token_args.items() if v is not None]):
      raise ValueError('model.inputs=patches reads pixel_values (batch, channels, height, width) alone'
                       + (f', not {", ".join(given)}' if pixel_values is not None else ''))
    grid = self._patch_grid(pixel_values, interpolate_pos_encoding)
    return self.encoder(self.patch_embed(pixel_values), deterministic=deterministic, first_rows=first_rows, grid=grid)

  def _pool(self, hidden: jax.Array) -> jax.Array:
    """(B, T, D) -> (B, D): what model.pooling reads (the first position, or the mean of the patches after it)."""
    return hidden[:, 0] if self.cfg.pooling is Pooling.CLS else jnp.mean(hidden[:, 1:], axis=1)

  def decode(self, decoder_input_ids: jax.Array, decoder_attention_mask: jax.Array | None = None,
             encoder_hidden: jax.Array | None = None, attention_mask: jax.Array | None = None,
             position_ids: jax.Array | None = None, segment_ids: jax.Array | None = None,
             encoder_segment_ids: jax.Array | None = None, deterministic: bool = True,
             decode: bool = False) -> jax.Array:
    """decoder_input_ids: (B, T) -> decoder hidden states (B, T, D); with decode=True, T new tokens are
    appended to the key/value cache (collection 'cache', pass mutable=['cache'])."""
    return self.decoder(self._embed_tokens(decoder_input_ids),
                        valid=masks.token_validity(decoder_attention_mask, segment_ids), segment_ids=segment_ids,
                        positions=position_ids, memory=encoder_hidden,
                        memory_valid=masks.token_validity(attention_mask, encoder_segment_ids),
                        memory_segment_ids=encoder_segment_ids, deterministic=deterministic, decode=decode)

  def lm_projection(self, hidden: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """The LM head as (head input (B, T, E), vocabulary kernel (V, E), bias (V,) or None), all in the compute
    dtype, E the embedding width (d_model unless factorised): logits = head input @ kernel.T + bias. A loss can
    then compute the logits a chunk at a time (trainer/losses.projected_cross_entropy_sums) instead of holding
    all of them."""
    cfg = self.cfg
    if cfg.family is Family.ENCODER:  # BERT's MLM transform: dense -> act -> norm before the projection.
      hidden = self.mlm_norm(activation_fn(cfg.activation)(self.mlm_dense(hidden)))
    if cfg.tie_embeddings:
      if cfg.scale_tied_logits:  # T5 v1.0: rescale before re-using the input embedding (Mesh TF).
        hidden = hidden * cfg.d_model ** -0.5
      kernel = self.token_embed.embedding
    else:
      kernel = jnp.transpose(self.lm_head())
    bias = self.lm_bias.astype(cfg.dtype) if cfg.lm_head_bias else None
    return hidden.astype(cfg.dtype), kernel.astype(cfg.dtype), bias

  def lm_logits(self, hidden: jax.Array) -> jax.Array:
    """(B, T, D) -> (B, T, V) float32 vocabulary logits."""
    hidden, kernel, bias = self.lm_projection(hidden)
    logits = jnp.einsum('btd,vd->btv', hidden, kernel)
    if bias is not None:
      logits = logits + bias
    return nn.with_logical_constraint(logits.astype(jnp.float32), (P.BATCH, P.LENGTH, P.VOCAB))

  def __call__(self, input_ids: jax.Array | None = None, attention_mask: jax.Array | None = None,
               token_type_ids: jax.Array | None = None, position_ids: jax.Array | None = None,
               segment_ids: jax.Array | None = None, decoder_input_ids: jax.Array | None = None,
               decoder_attention_mask: jax.Array | None = None, decoder_position_ids: jax.Array | None = None,
               decoder_segment_ids: jax.Array | None = None, encoder_hidden: jax.Array | None = None,
               deterministic: bool = True, decode: bool = False, head_only: bool = False,
               logits: bool = True, head_positions: jax.Array | None = None,
               pixel_values: jax.Array | None = None, interpolate_pos_encoding: bool = False) -> dict[str, Any]:
    """Runs the family's path and head. The argument names follow HF transformers.

    encoder: input_ids (B, S) [+ attention_mask, token_type_ids]. decoder: input_ids (B, T) [+ attention_mask].
    encoder_decoder: input_ids (B, S) and decoder_input_ids (B, T) with their masks; pass encoder_hidden
    instead of input_ids to reuse an encoding (incremental decoding). model.inputs=patches: pixel_values
    (B, C, H, W) instead of input_ids; interpolate_pos_encoding=True reads images of another size than
    model.image_size with the position table resized to their grid (HF's argument of that name).

    head_only: the caller reads only the head's output, so the model may skip the rest. An encoder
    classifier with pooling=cls reads position 0 alone: its last layer then computes that position only (same
    logits; 'hidden' is (B, 1, D)). Other heads read every position and are unaffected.

    logits=False: an LM head returns 'lm_projection' = `lm_projection(hidden)` instead of 'logits', for a loss
    that computes the logits a chunk at a time.

    head_positions: (B, P) int, an LM head's positions: it runs at these alone ('logits' (B, P, V)), e.g. the
    ~15% of positions MLM predicts (BERT's masked_lm_positions), including its dense + norm transform.
    """
    cfg = self.cfg
    out: dict[str, Any] = {}
    match cfg.family:
      case Family.ENCODER:
        first_rows = 1 if head_only and cfg.head is Head.CLASSIFIER and cfg.pooling is Pooling.CLS else None
        hidden = self.encode(input_ids, attention_mask, token_type_ids, position_ids, segment_ids, deterministic,
                             first_rows, pixel_values, interpolate_pos_encoding)
      case Family.DECODER:
        hidden = self.decode(input_ids, attention_mask, position_ids=position_ids, segment_ids=segment_ids,
                             deterministic=deterministic, decode=decode)
      case Family.ENCODER_DECODER:
        if decoder_input_ids is None:
          raise ValueError('an encoder_decoder model needs decoder_input_ids')
        if encoder_hidden is None:
          encoder_hidden = self.encode(input_ids, attention_mask, position_ids=position_ids,
                                       segment_ids=segment_ids, deterministic=deterministic)
        out['encoder_hidden'] = encoder_hidden
        hidden = self.decode(decoder_input_ids, decoder_attention_mask, encoder_hidden, attention_mask,
                             decoder_position_ids, decoder_segment_ids, segment_ids, deterministic, decode)
    out['hidden'] = hidden
    if cfg.pooler:
      out['pooled'] = activation_fn(cfg.pooler_activation)(self.pooler(self._pool(hidden)))
    elif cfg.head is Head.CLASSIFIER:  # ViTForImageClassification: the classifier reads the final hidden states
      out['pooled'] = self._pool(hidden)
    if head_positions is not None:
      if not cfg.head.lm:
        raise ValueError(f'head_positions: only an LM head reads chosen positions, not model.head={cfg.head.value}')
      hidden = jnp.take_along_axis(hidden, head_positions[..., None].astype(jnp.int32), axis=1)
    match cfg.head:
      case Head.LM | Head.PRETRAINING if not logits:
        out['lm_projection'] = self.lm_projection(hidden)
      case Head.LM | Head.PRETRAINING:
        out['logits'] = self.lm_logits(hidden)
      case Head.CLASSIFIER:
        pooled = self.classifier_dropout(out['pooled'], deterministic=deterministic)
        out['logits'] = self.classifier(pooled).astype(jnp.float32)
        if cfg.num_labels == 1:  # regression, in the labels' units
          out['logits'] = cfg.target_mean + cfg.target_scale * out['logits']
      case Head.SPAN:
        out['logits'] = nn.with_logical_constraint(self.qa_outputs(hidden).astype(jnp.float32),
                                                   (P.BATCH, P.LENGTH, None))
      case Head.NONE:
        pass
    if cfg.head is Head.PRETRAINING:
      pooled = self.sop_dropout(out['pooled'], deterministic=deterministic)
      out['sop_logits'] = self.sop_classifier(pooled).astype(jnp.float32)
    return out
