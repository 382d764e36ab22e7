"""Fine-tuning, ours beside HF transformers (PyTorch), on the same split, weights and budget, in one run.

  python bench/finetune_vs_hf.py --task movie_binary                  # MiniLM-L6 weights, 2 epochs
  python bench/finetune_vs_hf.py --task movie_regression              # the mean score, MSE
  python bench/finetune_vs_hf.py --task movie_binary --init random    # what pretraining buys
  python bench/finetune_vs_hf.py --task movie_binary --sides tfidf    # TF-IDF + logistic regression
  python bench/finetune_vs_hf.py --task movie_binary --small        # short runs: start-up matters (issue 18)
  more: --epochs, --max_train N (a quick check on the first N training examples), --bucket/--no_bucket,
        --sides ours,hf,tfidf, --runs N, --json PATH

--small: the first 2,000 training rows, 2 epochs, each side launched twice (--runs 2): a first run (ours with
an empty compilation cache of its own) and a second run of the same config (warm caches: compiled programs,
the OS's file cache). Reported per run: the wall time from launching the process to the end of training, and
our start-up breakdown (the 'startup' row of metrics.jsonl: seconds per phase before the first step).

The budget of both sides: the built-in 80/10/10 split (data/datasets), batch 32, max length 64, AdamW
(lr 5e-5, betas 0.9/0.999, eps 1e-8, weight decay 0.01 except biases and norms), linear warmup over 10% of
the steps then linear decay to 0, gradient clipping at norm 1, dropout 0.1, ceil(epochs * N / 32) updates.
Ours: `runner.train_and_evaluate` on configs/glue.py:<task> (the MiniLM weights through train.init_from),
then `evaluation.evaluate.evaluate_checkpoint` on the test split. With --bucket (default) our batches are cut to the
smallest of the length buckets 16/24/32/48/64 holding their longest example, over windows of 32 sorted
batches (data/bucketing.py); --no_bucket pads every batch to 64 like the HF side. HF: BertForSequenceClassification
from the same directory, a plain PyTorch loop (Trainer's optimizer, schedule and clipping, without its
bookkeeping), BertTokenizerFast padding to max_length 64. Each side runs in its own process (the HF one
never imports jax), one after the other, on every core. Reported: the test metric, training wall time
(ours includes compiling one step per bucket, checkpointing and a one-batch validation pass at the end;
HF's is its loop alone)
and training examples/s, with the ratio ours / HF.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault('HF_HUB_OFFLINE', '1')  # weights come from the package's directory, never a hub

BATCH, MAX_LEN, LR, WARMUP_RATIO, WEIGHT_DECAY = 32, 64, 5e-5, 0.1, 0.01
SMALL_ROWS = 2000  # --small: a short fine-tune, where start-up is much of the time (issue 18)
TASKS = {'movie_binary': 'builtin:movie_sentiment/binary', 'movie_regression': 'builtin:movie_sentiment/regression'}


def _split(task: str, split: str, limit: int | None = None) -> tuple[list[str], np.ndarray]:
  from data import sources  # pylint: disable=import-outside-toplevel
  source = sources.open_source(TASKS[task], split)
  count = len(source) if limit is None else min(limit, len(source))
  rows = [source[i] for i in range(count)]
  (text,) = source.info.text_features
  return [r[text] for r in rows], np.asarray([r[source.info.label_feature] for r in rows])


def _scores(task: str, preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  from evaluation import metrics  # pylint: disable=import-outside-toplevel  (numpy only)
  if task.endswith('regression'):
    return {'pearson': metrics.pearson(preds, labels), 'spearman': metrics.spearman(preds, labels)}
  return {'accuracy': metrics.accuracy(preds, labels), 'f1': metrics.f1(preds, labels)}


def run_ours(args: argparse.Namespace) -> dict[str, Any]:
  from evaluation import evaluate as evaluation_main  # pylint: disable=import-outside-toplevel
  from trainer import runner  # pylint: disable=import-outside-toplevel
  from configs import glue  # pylint: disable=import-outside-toplevel
  config = glue.get_config(args.task)
  config.train.num_epochs = args.epochs
  config.train.log_every = 100
  config.train.eval_batches = 1  # the loop's end-of-training validation pass: one batch (HF's loop has none)
  if args.init == 'random':
    config.train.init_from = ''
  if not args.bucket:  # configs/glue.py buckets by default (16/24/32/48/64 at length 64)
    config.data.length_buckets = ()
  config.eval.splits = ('test',)
  if args.max_train:  # a quick check: the first examples only, through a TSV copy of them
    config.data.source = _subset_tsv(args.task, args.max_train)
  workdir = Path(tempfile.mkdtemp(prefix='finetune_ours_'))
  start = time.perf_counter()
  runner.train_and_evaluate(config, workdir)
  train_s = time.perf_counter() - start
  trained_at = time.time()
  from trainer import metrics  # pylint: disable=import-outside-toplevel
  (startup,) = metrics.read_metrics(workdir / metrics.JSONL_NAME, metrics.Split.STARTUP)
  results = evaluation_main.evaluate_checkpoint(config, workdir)['test']
  num_train = len(_split(args.task, 'train', args.max_train or None)[0])
  return {'side': 'ours', 'train_s': train_s, 'examples_per_s': args.epochs * num_train / train_s,
          'test': {k: v for k, v in results.items() if k != 'examples'}, 'trained_at': trained_at,
          'startup': {k: v for k, v in startup.items() if k.endswith('_s')}}


def _subset_tsv(task: str, limit: int) -> str:
  folder = Path(tempfile.mkdtemp(prefix='finetune_subset_'))
  for split, name in (('train', 'train'), ('validation', 'dev'), ('test', 'test')):
    texts, labels = _split(task, split, limit if split == 'train' else None)
    lines = ['text\tlabel'] + [f'{t.replace(chr(9), " ")}\t{y}' for t, y in zip(texts, labels)]
    (folder / f'{name}.tsv').write_text('\n'.join(lines) + '\n')
  return f'tsv:{folder}'


def run_hf(args: argparse.Namespace) -> dict[str, Any]:
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  from configs.glue import minilm_dir  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count() or 1)
  regression = args.task.endswith('regression')
  path = minilm_dir()
  hf_config = transformers.BertConfig.from_pretrained(path, num_labels=1 if regression else 2,
                                                      problem_type='regression' if regression else None)
  model = (transformers.BertForSequenceClassification.from_pretrained(path, config=hf_config)
           if args.init == 'pretrained' else transformers.BertForSequenceClassification(hf_config))
  tokenizer = transformers.BertTokenizerFast.from_pretrained(path)

  def encode(texts: list[str]) -> dict[str, Any]:
    return tokenizer(texts, padding='max_length', truncation=True, max_length=MAX_LEN, return_tensors='pt')

  texts, labels = _split(args.task, 'train', args.max_train or None)
  inputs = encode(texts)
  targets = torch.tensor(labels, dtype=torch.float32 if regression else torch.long)
  steps = math.ceil(args.epochs * len(texts) / BATCH)
  no_decay = ('bias', 'LayerNorm.weight')  # HF Trainer's grouping
  groups = [{'params': [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
             'weight_decay': WEIGHT_DECAY},
            {'params': [p for n, p in model.named_parameters() if any(k in n for k in no_decay)], 'weight_decay': 0.0}]
  optimizer = torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.999), eps=1e-8)
  schedule = transformers.get_linear_schedule_with_warmup(optimizer, max(1, round(WARMUP_RATIO * steps)), steps)
  generator = torch.Generator().manual_seed(0)
  order = torch.cat([torch.randperm(len(texts), generator=generator) for _ in range(math.ceil(args.epochs) + 1)])
  model.train()
  start = time.perf_counter()
  for step in range(steps):
    rows = order[step * BATCH:(step + 1) * BATCH]
    out = model(input_ids=inputs['input_ids'][rows], attention_mask=inputs['attention_mask'][rows],
                token_type_ids=inputs['token_type_ids'][rows], labels=targets[rows])
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)
    if (step + 1) % 100 == 0:
      print(f'hf step {step + 1}/{steps}  loss {out.loss.item():.4f}  {time.perf_counter() - start:.0f}s', flush=True)
  train_s = time.perf_counter() - start
  trained_at = time.time()
  model.eval()
  test_texts, test_labels = _split(args.task, 'test')
  preds = []
  with torch.no_grad():
    for i in range(0, len(test_texts), 128):
      logits = model(**encode(test_texts[i:i + 128])).logits
      preds.append((logits[:, 0] if regression else logits.argmax(-1)).numpy())
  return {'side': 'hf', 'train_s': train_s, 'examples_per_s': args.epochs * len(texts) / train_s,
          'test': _scores(args.task, np.concatenate(preds), test_labels), 'trained_at': trained_at}


def run_tfidf(args: argparse.Namespace) -> dict[str, Any]:
  """The classical baseline: TF-IDF of word 1-2-grams and logistic (or ridge) regression."""
  from sklearn.feature_extraction.text import TfidfVectorizer  # pylint: disable=import-outside-toplevel
  from sklearn.linear_model import LogisticRegression, Ridge  # pylint: disable=import-outside-toplevel
  texts, labels = _split(args.task, 'train', args.max_train or None)
  test_texts, test_labels = _split(args.task, 'test')
  start = time.perf_counter()
  vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
  features = vectorizer.fit_transform(texts)
  regression = args.task.endswith('regression')
  estimator = Ridge(alpha=1.0) if regression else LogisticRegression(C=4.0, max_iter=2000)
  estimator.fit(features, labels)
  train_s = time.perf_counter() - start
  trained_at = time.time()
  preds = estimator.predict(vectorizer.transform(test_texts))
  return {'side': 'tfidf', 'train_s': train_s, 'examples_per_s': len(texts) / train_s,
          'test': _scores(args.task, np.asarray(preds), test_labels), 'trained_at': trained_at}


SIDES = {'ours': run_ours, 'hf': run_hf, 'tfidf': run_tfidf}


def _child(side: str, argv: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
  """One side in a fresh process: its own threads and memory, and the HF side never imports jax. Adds
  'launch_s': from launching the process to the end of its training."""
  with tempfile.NamedTemporaryFile(suffix='.json') as out:
    launched = time.time()
    subprocess.run([sys.executable, __file__, *argv, '--side', side, '--result', out.name], check=True, env=env)
    result = json.loads(Path(out.name).read_text())
  return result | {'launch_s': result['trained_at'] - launched}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--task', choices=sorted(TASKS), default='movie_binary')
  parser.add_argument('--init', choices=('pretrained', 'random'), default='pretrained')
  parser.add_argument('--epochs', type=float, default=2.0)
  parser.add_argument('--max_train', type=int, default=0)
  # Explicit flags: argparse's BooleanOptionalAction would spell the negative --no-bucket.
  parser.add_argument('--bucket', dest='bucket', action='store_true', default=True)
  parser.add_argument('--no_bucket', dest='bucket', action='store_false')
  parser.add_argument('--sides', default='ours,hf')
  parser.add_argument('--small', action='store_true', help='2,000 training rows, 2 epochs, 2 runs (docstring)')
  parser.add_argument('--runs', type=int, default=0, help='launches of each side (default 1; --small: 2)')
  parser.add_argument('--json', default='')
  parser.add_argument('--side', choices=sorted(SIDES), help=argparse.SUPPRESS)
  parser.add_argument('--result', help=argparse.SUPPRESS)
  args = parser.parse_args()  # a mistyped flag is an error, not a silent default
  if args.small:
    args.max_train, args.epochs, args.runs = args.max_train or SMALL_ROWS, 2.0, args.runs or 2
  if args.side:  # a child: run one side, write its result
    Path(args.result).write_text(json.dumps(SIDES[args.side](args)))
    return
  argv = [a for a in sys.argv[1:] if a != '--small']
  argv += ['--max_train', str(args.max_train), '--epochs', str(args.epochs)]
  sides = [s.strip() for s in args.sides.split(',') if s.strip()]
  # Our side's compiled programs in a folder of this benchmark: its first run compiles, the next ones reuse.
  env = dict(os.environ, TJ_COMPILATION_CACHE=tempfile.mkdtemp(prefix='finetune_jax_cache_'))
  results = [_child(side, argv, env) | {'run': run} for run in range(1, max(args.runs, 1) + 1) for side in sides]
  print(f'\n{args.task}, init {args.init}, {args.epochs:g} epochs, batch {BATCH}, max length {MAX_LEN}, '
        f'{os.cpu_count()} cores, buckets {"on" if args.bucket else "off"} (ours)'
        + (f', first {args.max_train:,} training rows' if args.max_train else ''))
  for r in results:
    metrics = '  '.join(f'{k} {v:.4f}' for k, v in r['test'].items())
    print(f'  run {r["run"]} {r["side"]:<6} test {metrics}   train {r["train_s"]:7.1f} s   '
          f'{r["examples_per_s"]:7.1f} examples/s   launch to trained {r["launch_s"]:7.1f} s')
    if 'startup' in r:
      print('      start-up ' + ', '.join(f'{k[:-2]} {v:.1f}' for k, v in r['startup'].items()))
  for run in range(1, max(args.runs, 1) + 1):
    by_side = {r['side']: r for r in results if r['run'] == run}
    if 'ours' in by_side and 'hf' in by_side:
      ours, hf = by_side['ours'], by_side['hf']
      print(f'  run {run}: ours / hf examples/s {ours["examples_per_s"] / hf["examples_per_s"]:.2f}x; '
            f'hf / ours launch-to-trained time {hf["launch_s"] / ours["launch_s"]:.2f}x')
  if args.json:
    Path(args.json).write_text(json.dumps({'args': vars(args), 'results': results}, indent=2))


if __name__ == '__main__':
  main()
