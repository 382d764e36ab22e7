"""The base Transformer of Vaswani et al. (2017): 6+6 post-LN layers, d_model 512, 37k shared vocabulary,
trained as in the paper on WMT14 English -> German (seq2seq; 'tfds:wmt14_translate/de-en' read from its 'en'
feature to its 'de' feature, prepared as array_record: see data/sources.py).

Command:
  python train.py --config configs/transformer_base.py --workdir runs/transformer_base
  python describe.py --config configs/transformer_base.py   # parameters and a timed forward pass
Expected: 63,082,496 parameters (the paper rounds to 65M; see tests/test_configs.py).
"""

from __future__ import annotations

import ml_collections

from configs.presets import ADAMW_PRETRAINING, make_config, vaswani


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg  # no variants
  # One length for both sides, 256 tokens as in Flax's examples/wmt.
  return make_config(
      vaswani('small'),
      data=dict(source='tfds:wmt14_translate/de-en', source_feature='en', target_feature='de',
                tokenizer='sentencepiece:auto,vocab_size=37000', objective='seq2seq', seq_len=256, decoder_seq_len=256),
      optim=ADAMW_PRETRAINING | dict(learning_rate=7e-4, warmup_steps=4000, schedule='warmup_rsqrt'),
      train=dict(num_steps=100_000, batch_size=64))
