"""A 2-layer, 128-wide RoBERTa for CPU runs and tests (MLM on the built-in corpus): bert_tiny with RoBERTa's
positions (from row 2, padding at row 1), one token type and LayerNorm eps 1e-5.

Its vocabulary is a byte-level BPE of 8,000 ids with RoBERTa's specials, trained on the corpus on first use
(2 s; kept in <workdir>/tokenizer).

Command:
  python train.py --config configs/roberta_tiny.py --workdir runs/roberta_tiny
  python describe.py --config configs/roberta_tiny.py   # parameters and a timed forward pass
Expected: 1,478,720 parameters.
"""

from __future__ import annotations

import ml_collections

from configs.presets import ADAMW_PRETRAINING, CPU_TINY_MODEL, CPU_TINY_TRAIN, make_config, roberta


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg  # no variants
  return make_config(
      roberta('tiny', vocab_size=8000, max_len=258, **CPU_TINY_MODEL),
      data=dict(source='builtin:sotu', tokenizer='byte_bpe:auto,vocab_size=8000', objective='mlm', seq_len=128),
      optim=ADAMW_PRETRAINING | dict(learning_rate=1e-3, warmup_steps=30),
      train=CPU_TINY_TRAIN | dict(num_steps=300, batch_size=32, log_every=20, eval_every=100, eval_batches=10,
                                  checkpoint_every=100))
