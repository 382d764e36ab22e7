"""BERT-base (Devlin et al. 2019): 12 layers, d_model 768, MLM head tied to the embeddings.

Command:
  python train.py --config configs/bert_base.py --workdir runs/bert_base
  python describe.py --config configs/bert_base.py   # parameters and a timed forward pass
Expected: 109,514,298 parameters (109,482,240 for HF BertModel: no MLM head, with pooler).
"""

from __future__ import annotations

import ml_collections

from configs.presets import ADAMW_PRETRAINING, bert, make_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg  # no variants
  return make_config(
      bert('base'),
      data=dict(source='tfds:wikipedia/20230601.en', tokenizer='wordpiece', objective='mlm', seq_len=128),
      optim=ADAMW_PRETRAINING | dict(learning_rate=1e-4, warmup_steps=10_000),
      train=dict(num_steps=1_000_000, batch_size=256))
