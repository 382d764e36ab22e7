"""Model presets shared by the config files: one size table and one function per published family.

A family is a set of `ModelConfig` field values, never a module of its own; every field can still be
overridden from the command line (`--config.model.position=rope`).
"""

from __future__ import annotations

from typing import Any

import ml_collections

from model.config import ModelConfig

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


def make_config(model: dict[str, Any], *, source: str, objective: str, seq_len: int, batch_size: int,
                tokenizer: str, num_steps: int, learning_rate: float, warmup_steps: int,
                decoder_seq_len: int | None = None, source_feature: str | None = None,
                target_feature: str | None = None, optimizer: str = 'adamw', schedule: str = 'warmup_cosine',
                weight_decay: float = 0.01, log_every: int = 50, eval_every: int = 500, eval_batches: int = 20,
                checkpoint_every: int = 1000) -> ml_collections.ConfigDict:
  """The config tree of a setup (sections model, data, optim, mesh, train, eval, distributed).

  `model` holds every ModelConfig field (validated here, so a typo in a config file fails on load), which
  also lets any field be overridden from the command line; `data` the fields of data.tasks.DataConfig,
  `optim` of trainer.optim.OptimConfig, `mesh` of trainer.mesh.MeshConfig. Data fields that default to None
  are typed placeholders, so that `--config.data.decoder_seq_len=128` can set them (ml_collections refuses to
  override a plain None)."""
  full_model = ModelConfig.from_dict(model).to_dict()
  config = ml_collections.ConfigDict()
  config.model = full_model
  config.data = ml_collections.ConfigDict({
      'source': source, 'objective': objective, 'seq_len': seq_len,
      'decoder_seq_len': _or_placeholder(decoder_seq_len, int), 'tokenizer': tokenizer, 'packing': False,
      'data_dir': None, 'worker_count': 0, 'source_feature': _or_placeholder(source_feature, str),
      'target_feature': _or_placeholder(target_feature, str)})
  config.optim = ml_collections.ConfigDict({
      'name': optimizer, 'learning_rate': learning_rate, 'schedule': schedule, 'warmup_steps': warmup_steps,
      'end_lr_ratio': 0.1, 'weight_decay': weight_decay, 'clip_norm': 1.0, 'b1': 0.9, 'b2': 0.98, 'eps': 1e-8})
  config.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1, 'tensor': 1, 'rules': {}})
  config.train = ml_collections.ConfigDict({
      'num_steps': num_steps, 'batch_size': batch_size, 'microbatches': 1, 'seed': 0, 'z_loss': 0.0,
      'log_every': log_every, 'eval_every': eval_every, 'eval_batches': eval_batches,
      'checkpoint_every': checkpoint_every, 'keep': 3, 'init_from': '', 'nan_policy': 'halt'})
  # eval.py (evaluation/config.py): the splits scored, the metrics (empty: the objective's usual ones), GLUE
  # submission files, generation settings (decoding.GenerateConfig fields over the task's defaults).
  config.eval = ml_collections.ConfigDict({
      'splits': ('validation',), 'metrics': (), 'predict_splits': (), 'submission': (), 'batch_size': 0,
      'max_examples': 0, 'num_samples': 3, 'prompt_len': 16, 'generate': {}})
  # Multi-host: empty means "ask JAX's cluster detection (SLURM, TPU pods, Open MPI) when it finds one".
  config.distributed = ml_collections.ConfigDict({'coordinator_address': '', 'num_processes': 0, 'process_id': -1})
  return config


def _or_placeholder(value: Any, kind: type) -> Any:
  """value, or for None a placeholder of type `kind` (None until set, and settable from the command line)."""
  return ml_collections.config_dict.placeholder(kind) if value is None else value
