"""ALBERT-base v2 (Lan et al. 2020): 12 layers of d_model 768 sharing one set of parameters, 128-wide embeddings,
pretrained as ALBERT was: MLM (head tied to the embeddings) + sentence-order prediction (data.objective=mlm_sop).

Command:
  python train.py --config configs/albert_base.py --workdir runs/albert_base
  python describe.py --config configs/albert_base.py   # parameters and a timed forward pass
Expected: 11,813,810 parameters (AlbertForPreTraining: MLM head, pooler, sentence-order classifier); describe.py
also prints 11,683,584 for HF's AlbertModel (no head, with pooler).
"""

from __future__ import annotations

import ml_collections

from configs.presets import ADAMW_PRETRAINING, albert, make_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg  # no variants
  return make_config(
      albert('base'),
      data=dict(source='tfds:wikipedia/20230601.en', tokenizer='sentencepiece:auto,vocab_size=30000',
                objective='mlm_sop', seq_len=128),
      optim=ADAMW_PRETRAINING | dict(learning_rate=1e-4, warmup_steps=10_000),
      train=dict(num_steps=1_000_000, batch_size=256))
