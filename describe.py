"""Builds the model of a config (or loads an HF checkpoint directory), reports its parameters, and times a
jitted forward pass on a batch of the config's shape.

  python describe.py --config configs/gpt_tiny.py [--config.model.position=rope]
  python describe.py --hf_dir path/to/hf/checkpoint      # a directory written by HF save_pretrained
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from ml_collections import config_flags

import model
from core import cli, compile_cache
from model import hf

_CONFIG = config_flags.DEFINE_config_file('config', None, 'A configs/*.py file (optionally :arg).')
_HF_DIR = flags.DEFINE_string('hf_dir', None, 'Load this HF checkpoint directory instead of initialising.')
_BATCH = flags.DEFINE_integer('batch_size', 4, 'Batch size of the timed forward pass.')
_LENGTH = flags.DEFINE_integer('seq_len', None, 'Sequence length (default: config.data.seq_len, or 128).')


def _param_table(params: dict[str, Any]) -> list[tuple[str, int]]:
  return [(name, sum(int(np.prod(x.shape)) for x in jax.tree.leaves(sub))) for name, sub in params.items()]


def describe(cfg: model.ModelConfig, params: dict[str, Any], batch: int, length: int) -> dict[str, float]:
  """Prints the parameter breakdown and times the forward pass; returns the figures."""
  module = model.build(cfg)
  total = sum(n for _, n in _param_table(params))
  offset = f' (from row {cfg.position_offset})' if cfg.position_offset else ''
  print(f'family={cfg.family.value} position={cfg.position.value}{offset} norm={cfg.norm.value}/'
        f'{cfg.norm_placement.value} activation={cfg.activation.value}{" (gated)" if cfg.gated_ffn else ""} '
        f'head={cfg.head.value} layers={cfg.num_layers} d_model={cfg.d_model} heads={cfg.num_heads}x{cfg.kv_dim}')
  if cfg.inputs is model.Inputs.PATCHES:
    print(f'inputs=patches: {cfg.num_channels}x{cfg.image_size}x{cfg.image_size} images in {cfg.patch_size}x'
          f'{cfg.patch_size} patches: [CLS] + {cfg.position_rows - 1} = {cfg.position_rows} tokens, '
          f'pooling={cfg.pooling.value}')
  for name, n in _param_table(params):
    print(f'  {name:<16} {n:>14,}')
  print(f'  {"total":<16} {total:>14,}')
  if cfg.family is model.Family.ENCODER and (cfg.head, cfg.pooler) != (model.Head.NONE, True):
    # Published encoder sizes count HF's base class (BertModel, AlbertModel): no head, with the pooler.
    base = model.count_params(cfg.replace(head=model.Head.NONE, num_labels=0, pooler=True, lm_head_bias=False,
                                          target_mean=0.0, target_scale=1.0))
    print(f'  {"HF base model":<16} {base:>14,}  (no head, with pooler)')

  rng = np.random.default_rng(0)
  if cfg.inputs is model.Inputs.PATCHES:  # images of the config's size; `length` is their [CLS] + patches
    size = (batch, cfg.num_channels, cfg.image_size, cfg.image_size)
    inputs = {'pixel_values': jnp.asarray(rng.standard_normal(size), jnp.float32)}
  else:
    ids = jnp.asarray(rng.integers(0, cfg.vocab_size, (batch, length)), jnp.int32)
    inputs = {'input_ids': ids, 'attention_mask': jnp.ones_like(ids)}
  if cfg.family is model.Family.ENCODER_DECODER:
    inputs |= {'decoder_input_ids': ids, 'decoder_attention_mask': jnp.ones_like(ids)}
  forward = jax.jit(lambda p, x: module.apply({'params': p}, **x))
  start = time.perf_counter()
  compiled = forward.lower(params, inputs).compile()
  compile_s = time.perf_counter() - start
  jax.block_until_ready(compiled(params, inputs))  # warm-up
  steps, start = 5, time.perf_counter()
  for _ in range(steps):
    out = jax.block_until_ready(compiled(params, inputs))
  step_s = (time.perf_counter() - start) / steps
  shapes = {k: tuple(v.shape) for k, v in out.items()}
  print(f'forward ({batch}x{length}) on {jax.devices()[0].platform}: compile {compile_s:.2f} s, '
        f'{step_s * 1e3:.1f} ms/batch, {batch * length / step_s:,.0f} tokens/s; outputs {shapes}')
  figures = {'params': total, 'compile_s': compile_s, 'step_s': step_s}
  if cfg.head.lm:
    # At initialisation an LM is near-uniform over the vocabulary, so its cross-entropy against random
    # targets (independent of the inputs) should be close to ln(V); far from it means a broken head or init.
    targets = jnp.asarray(rng.integers(0, cfg.vocab_size, (batch, length)), jnp.int32)
    logp = jax.nn.log_softmax(out['logits'], axis=-1)
    nll = float(-jnp.mean(jnp.take_along_axis(logp, targets[..., None], axis=-1)))
    print(f'cross-entropy against random targets: {nll:.3f} (ln V = {np.log(cfg.vocab_size):.3f})')
    figures['nll'] = nll
  return figures


def main(argv: list[str]) -> None:
  del argv
  config = _CONFIG.value
  compile_cache.enable(config.train.get('compilation_cache', compile_cache.AUTO) if config is not None else
                       compile_cache.AUTO)
  if _HF_DIR.value:
    cfg, params = hf.from_pretrained(_HF_DIR.value)
    length = _LENGTH.value or min(128, cfg.max_len)
  elif config is not None:
    cfg = model.ModelConfig.from_dict(config.model)
    params = model.init_params(model.build(cfg), jax.random.key(config.train.seed))
    length = _LENGTH.value or config.data.seq_len
  else:
    cli.fail('give --config configs/<name>.py or --hf_dir <directory>')
  if cfg.inputs is model.Inputs.PATCHES:
    if _LENGTH.value:
      cli.fail(f'--seq_len={_LENGTH.value}: an image model runs [CLS] + its patches ({cfg.position_rows} tokens at '
               f'model.image_size={cfg.image_size}); drop --seq_len')
    length = cfg.position_rows
  describe(cfg, params, _BATCH.value, length)


if __name__ == '__main__':
  cli.run(main)
