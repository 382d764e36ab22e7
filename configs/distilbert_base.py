"""DistilBERT-base (Sanh et al. 2019): BERT-base at 6 layers without token types, MLM head tied to the
embeddings. Trained here with plain MLM; DistilBERT's own recipe adds a teacher (trainer/distill.py):
`--config.distill.teacher=<a BERT-base workdir or HF directory> --config.distill.init_student=alternate_layers`.

Command:
  python train.py --config configs/distilbert_base.py --workdir runs/distilbert_base
  python describe.py --config configs/distilbert_base.py   # parameters and a timed forward pass
Expected: 66,985,530 parameters (HF DistilBertForMaskedLM); 66,362,880 for HF DistilBertModel (no MLM head):
`python describe.py --config configs/distilbert_base.py --config.model.head=none --config.model.lm_head_bias=False`.
"""

from __future__ import annotations

import ml_collections

from configs.presets import ADAMW_PRETRAINING, distilbert, make_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg  # no variants
  return make_config(
      distilbert('base'),
      data=dict(source='tfds:wikipedia/20230601.en', tokenizer='wordpiece', objective='mlm', seq_len=128),
      optim=ADAMW_PRETRAINING | dict(learning_rate=1e-4, warmup_steps=10_000),
      train=dict(num_steps=1_000_000, batch_size=256))
