"""A 2-layer, 128-wide GPT for CPU runs and tests (causal LM on the built-in corpus).

Command:
  python train.py --config configs/gpt_tiny.py --workdir runs/gpt_tiny
  python describe.py --config configs/gpt_tiny.py   # parameters and a timed forward pass
Expected: 1,453,568 parameters; validation loss 5.40 (perplexity 221) after the 300 steps, from
ln 8000 = 8.99 at initialisation (2-core CPU, a few minutes).
"""

from __future__ import annotations

import ml_collections

from configs.presets import ADAMW_PRETRAINING, CPU_TINY_MODEL, CPU_TINY_TRAIN, gpt2, make_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg  # no variants
  return make_config(
      gpt2('tiny', vocab_size=8000, max_len=256, **CPU_TINY_MODEL),
      data=dict(source='builtin:sotu', tokenizer='sentencepiece:auto,vocab_size=8000', objective='causal_lm',
                seq_len=128),
      optim=ADAMW_PRETRAINING | dict(learning_rate=1e-3, warmup_steps=30),
      train=CPU_TINY_TRAIN | dict(num_steps=300, batch_size=32, log_every=20, eval_every=100, eval_batches=10,
                                  checkpoint_every=100))
