"""A 2-layer, 128-wide ALBERT for CPU runs and tests (ALBERT's pretraining on the built-in corpus: MLM + sentence
order, data.objective=mlm_sop): 64-wide embeddings, both layers applying one shared set of parameters.

Command:
  python train.py --config configs/albert_tiny.py --workdir runs/albert_tiny
  python describe.py --config configs/albert_tiny.py   # parameters and a timed forward pass
Expected: 768,386 parameters (with the pooler and the sentence-order classifier; 751,616 without them).
"""

from __future__ import annotations

import ml_collections

from configs.presets import ADAMW_PRETRAINING, CPU_TINY_MODEL, CPU_TINY_TRAIN, albert, make_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg  # no variants
  return make_config(
      albert('tiny', vocab_size=8000, max_len=256, embedding_size=64, **CPU_TINY_MODEL),
      data=dict(source='builtin:sotu', tokenizer='sentencepiece:auto,vocab_size=8000', objective='mlm_sop',
                seq_len=128),
      optim=ADAMW_PRETRAINING | dict(learning_rate=1e-3, warmup_steps=30),
      train=CPU_TINY_TRAIN | dict(num_steps=300, batch_size=32, log_every=20, eval_every=100, eval_batches=10,
                                  checkpoint_every=100))
