"""T5-small (Raffel et al. 2020): 6+6 layers, d_model 512, relative positions; v1.0 (tied LM head) or `:v1.1`.

Command:
  python train.py --config configs/t5_small.py[:v1.1] --workdir runs/t5_small
  python describe.py --config configs/t5_small.py[:v1.1]   # parameters and a timed forward pass
Expected: 60,506,624 parameters (as HF T5ForConditionalGeneration counts them).
"""

from __future__ import annotations

import ml_collections

from configs.presets import make_config, t5


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """arg: the T5 version, 'v1.0' (default) or 'v1.1'."""
  version = (arg or 'v1.0').removeprefix('v')
  # 512 input tokens with 15% noise in spans of mean length 3 give 114 target tokens (T5 paper, Sec. 3.1.4).
  return make_config(
      t5('small', version=version),
      data=dict(source='tfds:c4/en', tokenizer='sentencepiece:auto,vocab_size=32000', objective='span_corruption',
                seq_len=512, decoder_seq_len=114),
      optim=dict(name='adafactor', learning_rate=1e-2, schedule='warmup_rsqrt', warmup_steps=10_000),
      train=dict(num_steps=524_288, batch_size=32))
