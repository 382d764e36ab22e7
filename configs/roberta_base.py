"""RoBERTa-base (Liu et al. 2019): BERT-base's encoder with one token type, positions from row 2 of a
514-row table, MLM with dynamic masking (fresh masks every epoch) and no NSP, large batches of 512 tokens.

The vocabulary is a byte-level BPE of RoBERTa's size (50,265) with its specials (<s> 0, <pad> 1, </s> 2,
<unk> 3, <mask> 50264), trained on the corpus on first use (RoBERTa's own is GPT-2's merges, learnt on
WebText). An HF RoBERTa checkpoint imports (model/hf/roberta.py) and fine-tunes with its own vocab.json
(configs/glue.py:<task>,roberta_base).

Command:
  python train.py --config configs/roberta_base.py --workdir runs/roberta_base
  python describe.py --config configs/roberta_base.py   # parameters and a timed forward pass
Expected: 124,697,433 parameters (HF RobertaForMaskedLM); 124,645,632 for HF RobertaModel (no MLM head, with
pooler): `python describe.py --config configs/roberta_base.py --config.model.head=none --config.model.pooler=True
--config.model.lm_head_bias=False`.
"""

from __future__ import annotations

import ml_collections

from configs.presets import ADAMW_PRETRAINING, make_config, roberta


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg  # no variants
  return make_config(
      roberta('base'),
      data=dict(source='tfds:wikipedia/20230601.en', tokenizer='byte_bpe:auto,vocab_size=50265',
                objective='mlm', seq_len=512),
      # RoBERTa-base's recipe: 8k sequences a step, peak 6e-4 after 24k warm-up steps, 500k steps.
      optim=ADAMW_PRETRAINING | dict(learning_rate=6e-4, warmup_steps=24_000),
      train=dict(num_steps=500_000, batch_size=8192))
