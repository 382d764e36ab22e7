"""Building a model from its config, initialising parameters and caches, and reshaping layer stacks."""

from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from model.config import Family, Inputs, ModelConfig
from model.transformer import Transformer

Params = dict[str, Any]
_LAYER_KEY = re.compile(r'^layers_(\d+)$')


def build(cfg: ModelConfig) -> Transformer:
  """The linen module of `cfg`; it holds no parameters (see `init_params`)."""
  if not isinstance(cfg, ModelConfig):
    raise TypeError(f'model.build expects a ModelConfig, got {type(cfg).__name__}: use ModelConfig.from_dict')
  return Transformer(cfg)


def dummy_inputs(cfg: ModelConfig, batch: int = 1, length: int = 8) -> dict[str, jax.Array]:
  """Inputs of the right names and shapes for `init` / `eval_shape`: ids, or images of model.image_size."""
  if cfg.inputs is Inputs.PATCHES:
    return {'pixel_values': jnp.zeros((batch, cfg.num_channels, cfg.image_size, cfg.image_size), jnp.float32)}
  # No longer than the position table holds (the parameters' shapes do not depend on the length).
  ids = jnp.zeros((batch, min(length, cfg.max_len - cfg.position_offset)), jnp.int32)
  if cfg.family is Family.ENCODER_DECODER:
    return {'input_ids': ids, 'decoder_input_ids': ids}
  return {'input_ids': ids}


def init_params(module: Transformer, rng: jax.Array, batch: int = 1, length: int = 8) -> Params:
  """Randomly initialised parameters, unboxed (plain arrays; the logical names are on `nn.get_partition_spec`
  of `module.init`'s boxed output, which the sharded init of the training loop uses)."""
  variables = module.init({'params': rng, 'dropout': rng}, **dummy_inputs(module.cfg, batch, length))
  return nn.unbox(variables['params'])


def count_params(cfg: ModelConfig) -> int:
  """Number of parameters, computed from shapes alone (nothing is allocated); tied weights count once."""
  shapes = jax.eval_shape(lambda: init_params(build(cfg), jax.random.key(0)))
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(shapes)))


def init_cache(module: Transformer, batch: int, max_length: int, encoder_length: int | None = None) -> Params:
  """A zero key/value cache for decoding up to `max_length` tokens (the 'cache' collection)."""
  cfg = module.cfg
  if not cfg.has_decoder:
    raise ValueError(f'family={cfg.family.value} has no decoder to cache')
  ids = jnp.zeros((batch, max_length), jnp.int32)
  kwargs: dict[str, Any] = {'input_ids': ids}
  if cfg.family is Family.ENCODER_DECODER:
    if encoder_length is None:
      raise ValueError('an encoder_decoder cache needs encoder_length, the length of the encoded input')
    kwargs = {'decoder_input_ids': ids, 'encoder_hidden': jnp.zeros((batch, encoder_length, cfg.d_model), cfg.dtype)}
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), decode=True, **kwargs)['cache'])
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def stack_layers(params: Params) -> Params:
  """Unscanned tree (`layers_0`, `layers_1`, ...) -> scanned tree (`layers` with a leading layer axis)."""
  if not isinstance(params, dict):
    return params
  out = {k: stack_layers(v) for k, v in params.items() if not _LAYER_KEY.match(k)}
  indices = sorted(int(m.group(1)) for k in params if (m := _LAYER_KEY.match(k)))
  if indices:
    if indices != list(range(len(indices))):
      raise ValueError(f'layer indices are not 0..n-1: {indices}')
    layers = [stack_layers(params[f'layers_{i}']) for i in indices]
    out['layers'] = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
  return out


def unstack_layers(params: Params) -> Params:
  """Scanned tree (`layers` with a leading layer axis) -> unscanned tree (`layers_0`, `layers_1`, ...)."""
  if not isinstance(params, dict):
    return params
  out = {k: unstack_layers(v) for k, v in params.items() if k != 'layers'}
  if 'layers' in params:
    n = jax.tree.leaves(params['layers'])[0].shape[0]
    for i in range(n):
      out[f'layers_{i}'] = jax.tree.map(lambda x, i=i: x[i], params['layers'])
  return out
