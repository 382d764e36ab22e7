"""Distillation (DistilBERT's recipe) on a fine-tuning task; `arg` = a configs/glue.py task (default movie_binary).

The student is MiniLM at half its depth (3 layers, d_model 384, 12 heads), initialised from layers 0, 2, 4 of the
teacher (embeddings, pooler and classifier copied), and trained on 5 x KL(T=2) + 2 x cross-entropy + 1 x cosine
of the last hidden states against the teacher (trainer/distill.py). The teacher is the MiniLM fine-tune of the
same task (configs/glue.py); both read MiniLM's WordPiece ids. Everything else is configs/glue.py's task setup.

Commands (the built-in movie-sentiment task; the teacher first, as in the README):
  python train.py --config configs/glue.py:movie_binary --workdir runs/movie_binary
  python train.py --config configs/distill.py:movie_binary --workdir runs/movie_binary_distilled \
      --config.distill.teacher=runs/movie_binary
  python eval.py  --config configs/distill.py:movie_binary --workdir runs/movie_binary_distilled
The teacher may also be an HF directory of a BertForSequenceClassification of the same vocabulary and labels.
Expected: (README, measured 2026-11-30, 2 seeds) test accuracy 0.831 +- 0.005 (the same student on the labels alone,
--config.distill.alpha_kl=0 --config.distill.alpha_cos=0: 0.825 +- 0.003; the teacher: 0.841), at 2.36x the
teacher's inference examples/s (bench/inference_speed.py); its training step costs about half the teacher's plus
the teacher's forward pass.
"""

from __future__ import annotations

import ml_collections

from configs import glue


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  task = arg or 'movie_binary'
  if ',' in task or task not in glue.TASKS:
    raise ValueError(f'configs/distill.py:{arg}: give a task alone (the student is half of MiniLM), one of '
                     f'{sorted(glue.TASKS)}')
  config = glue.get_config(task)  # MiniLM's fields and tokenizer, the task's data, optimiser and evaluation
  config.model.num_layers = 3
  config.train.init_from = ''  # the student starts from the teacher's layers instead
  config.distill.teacher = f'runs/{task}'  # configs/glue.py's command trains it there
  config.distill.init_student = 'alternate_layers'
  return config
