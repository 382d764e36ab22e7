"""Flax (linen) Transformer blocks and the three families, as functions of a `ModelConfig`.

  cfg = model.ModelConfig.from_dict(config.model)
  module = model.build(cfg)
  params = model.init_params(module, jax.random.key(0))
  out = module.apply({'params': params}, input_ids=ids, attention_mask=mask)  # {'hidden', 'logits', ...}
"""

from model.config import (Activation, AttentionImpl, ConfigError, Family, Head, Inputs, ModelConfig, Norm,
                          NormPlacement, Pooling, Position, Remat)
from model.transformer import Transformer
from model.params import build, count_params, dummy_inputs, init_cache, init_params, stack_layers, unstack_layers

__all__ = [
    'Activation', 'AttentionImpl', 'ConfigError', 'Family', 'Head', 'Inputs', 'ModelConfig', 'Norm', 'NormPlacement',
    'Pooling', 'Position', 'Remat', 'Transformer', 'build', 'count_params', 'dummy_inputs', 'init_cache', 'init_params',
    'stack_layers', 'unstack_layers',
]
