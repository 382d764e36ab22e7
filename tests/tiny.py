"""Tiny configs of every family and variant, shared by the tests (small enough to compile in about a second)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import model
from configs import presets

_SMALL = dict(d_model=32, num_heads=4, d_ff=64, num_layers=2, dropout_rate=0.0, attention_dropout_rate=0.0)
VOCAB = 101

TINY: dict[str, model.ModelConfig] = {
    'bert': model.ModelConfig(**presets.bert('tiny', vocab_size=VOCAB, max_len=64, **_SMALL)),
    'gpt2': model.ModelConfig(**presets.gpt2('tiny', vocab_size=VOCAB, max_len=64, **_SMALL)),
    # An ablation of GPT-2 by config alone: rotary positions, RMSNorm, SwiGLU, no biases.
    'gpt_rope': model.ModelConfig(**presets.gpt2('tiny', vocab_size=VOCAB, max_len=64, position='rope', norm='rms',
                                                 activation='silu', gated_ffn=True, use_bias=False, **_SMALL)),
    # T5 with head_dim (d_kv) independent of d_model / num_heads.
    't5': model.ModelConfig(**presets.t5('tiny', vocab_size=VOCAB, **(_SMALL | dict(head_dim=12, ffn_dropout_rate=0.0)))),
    't5_v11': model.ModelConfig(**presets.t5('tiny', version='1.1', vocab_size=VOCAB,
                                             **(_SMALL | dict(head_dim=12, ffn_dropout_rate=0.0)))),
    'vaswani': model.ModelConfig(**presets.vaswani('tiny', vocab_size=VOCAB, max_len=64, **_SMALL)),
}
DECODERS = ('gpt2', 'gpt_rope', 't5', 't5_v11', 'vaswani')


def params_for(cfg: model.ModelConfig, seed: int = 0) -> dict:
  """Random parameters; norm scales and biases are perturbed too, so a mix-up of them cannot go unseen."""
  params = model.init_params(model.build(cfg), jax.random.key(seed))
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  leaves = [x + 0.1 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
  return jax.tree.unflatten(tree, leaves)


def random_ids(shape: tuple[int, ...], seed: int = 0, low: int = 1) -> jnp.ndarray:
  return jnp.asarray(np.random.default_rng(seed).integers(low, VOCAB, shape), jnp.int32)


def inputs_for(cfg: model.ModelConfig, ids: jnp.ndarray, mask: jnp.ndarray | None = None,
               decoder_ids: jnp.ndarray | None = None, decoder_mask: jnp.ndarray | None = None) -> dict:
  """The apply() keyword arguments of a family: encoder-decoders get decoder inputs (default: ids again)."""
  out = {'input_ids': ids, 'attention_mask': mask}
  if cfg.family is model.Family.ENCODER_DECODER:
    out['decoder_input_ids'] = ids if decoder_ids is None else decoder_ids
    out['decoder_attention_mask'] = decoder_mask
  return out
