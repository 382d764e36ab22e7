"""GPT-2 small (Radford et al. 2019): 12 layers, d_model 768, 1024 positions, tied LM head.

Command:
  python train.py --config configs/gpt2_small.py --workdir runs/gpt2_small
  python describe.py --config configs/gpt2_small.py   # parameters and a timed forward pass
Expected: 124,439,808 parameters (as HF GPT2LMHeadModel counts them).
"""

from __future__ import annotations

import ml_collections

from configs.presets import ADAMW_PRETRAINING, gpt2, make_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg  # no variants
  return make_config(
      gpt2('base'),
      data=dict(source='tfds:c4/en', tokenizer='gpt2_bpe', objective='causal_lm', seq_len=1024),
      optim=ADAMW_PRETRAINING | dict(learning_rate=6e-4, warmup_steps=2000),
      train=dict(num_steps=600_000, batch_size=16))
