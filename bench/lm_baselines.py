"""Classical language-model baselines on gpt_tiny's data: where the tiny GPT stands against n-gram models.

  python bench/lm_baselines.py [--orders 3,4,5] [--workdir runs/gpt_tiny[,runs/other_gpt_run,...]] [--out fig.png]

Trains interpolated modified Kneser-Ney n-gram models (evaluation/ngram.py) of each order, a bigram KN and an
add-one unigram on the training split of configs/gpt_tiny.py and scores its validation split, with the GPT's
own tokens and rows, so the figures compare directly with eval.py's for a gpt_tiny run:

- Tokens: gpt_tiny's SentencePiece 'auto' vocabulary of 8,000 (data.tokenizer), from <workdir>/tokenizer with
  --workdir, else trained on the training split once into bench/.cache/lm_baselines/tokenizer as the runner
  does. Documents are tokenized and joined by EOS, then cut into rows of seq_len + 1 = 129 tokens
  (data/tasks.py _causal_lm; the tail that fills no row is dropped, as the GPT's).
- Training: the n-grams are counted over the training split's stream (its rows joined back together), so an
  n-gram may span a row boundary, and a document boundary through its EOS, like the GPT-2 text the GPT reads.
- Scoring: exactly the tokens eval.py scores: every validation row, its 128 targets (row[1:]) with the GPT's
  loss weights. Each token is predicted from at most n-1 previous tokens of its own row: the context restarts
  at every row as the GPT's does (which sees up to 128 tokens of the row); where the row has fewer than n-1
  tokens before it (its first n-2 targets), the KN model of the order that context allows scores it.
- Perplexity = exp(total NLL / tokens); bits per byte = total NLL in bits / the UTF-8 bytes of the decoded
  targets of each row (evaluation/evaluate.py target_bytes, the denominator eval.py uses).
With --workdir (one gpt_tiny run, or several comma-separated, the first one's tokenizer used), the validation
figures of each <workdir>/eval/step_*/metrics.json are printed beside; --out draws every row's perplexity as a
bar chart (PNG).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configs import gpt_tiny  # noqa: E402
from core.paths import user_path  # noqa: E402
from data import tasks  # noqa: E402
from data.tokenization import TokenizerSpec, auto_model_path  # noqa: E402
from evaluation import metrics as M  # noqa: E402
from evaluation.config import EvalConfig  # noqa: E402
from evaluation.evaluate import target_bytes  # noqa: E402
from evaluation.ngram import KneserNey, add_one_unigram  # noqa: E402

CACHE = Path(__file__).resolve().parent / '.cache' / 'lm_baselines'
Row = tuple[str, float, float, float, str]  # model, tokens, perplexity, bits per byte, train seconds


def parse_orders(text: str) -> tuple[int, ...]:
  """'3,4,5' -> (3, 4, 5)."""
  try:
    orders = tuple(int(part) for part in text.split(','))
  except ValueError:
    orders = ()
  if not orders or min(orders) < 2:
    raise SystemExit(f'--orders={text!r}: give comma-separated n-gram orders of at least 2, e.g. --orders 3,4,5')
  return tuple(sorted(set(orders)))


def load_tasks(workdir: Path | None, split: str) -> tuple[tasks.Task, tasks.Task, Path]:
  """gpt_tiny's train and `split` tasks, and the tokenizer model they use (the run's, or trained once here)."""
  config = gpt_tiny.get_config()
  data = tasks.DataConfig.from_dict(config.data)
  folder = CACHE / 'tokenizer' if workdir is None else workdir / 'tokenizer'
  model_path = auto_model_path(TokenizerSpec.parse(data.tokenizer), folder)
  if workdir is not None and not model_path.exists():  # never train a vocabulary into someone's run
    raise SystemExit(f'--workdir {workdir}: no {model_path.relative_to(workdir)}, the tokenizer of a gpt_tiny run; '
                     f'give the workdir of one (python train.py --config configs/gpt_tiny.py --workdir ...) or no '
                     '--workdir')
  if not model_path.exists():
    print(f'training the SentencePiece vocabulary of {data.tokenizer!r} once into {folder}', flush=True)
  train = tasks.build_task(data, 'train', seed=config.train.seed, tokenizer_dir=folder)
  return train, tasks.build_task(data, split, seed=config.train.seed, tokenizer=train.tokenizer), model_path


def scored_rows(task: tasks.Task) -> tuple[np.ndarray, np.ndarray]:
  """(N, seq_len + 1) validation rows and (N, seq_len) the GPT's loss weights of their targets row[1:]."""
  rows = np.asarray(task.source)
  weights = np.zeros((rows.shape[0], rows.shape[1] - 1))
  for i in range(len(rows)):
    example = task.transform(i, rows[i])
    if not np.array_equal(example['targets'], rows[i, 1:]):
      raise AssertionError(f'validation row {i}: the causal_lm targets are not row[1:]; this script assumes '
                           'unpacked rows (data.packing=False)')
    weights[i] = example['loss_weights']
  return rows, weights


def measure(name: str, fit: Callable[[], Callable[[np.ndarray], np.ndarray]], rows: np.ndarray,
            weights: np.ndarray, num_bytes: int) -> Row:
  """`fit()` returns the scorer: rows -> (N, L) ln p of every token; only the weighted targets count."""
  start = time.perf_counter()
  score = fit()
  seconds = time.perf_counter() - start
  nll = -float((score(rows)[:, 1:] * weights).sum())
  tokens = float(weights.sum())
  return name, tokens, M.perplexity(nll, tokens), M.bits_per_byte(nll, num_bytes), f'{seconds:.1f}'


def gpt_rows(workdir: Path, split: str) -> list[Row]:
  """The `split` figures of each <workdir>/eval/step_*/metrics.json, in step order."""
  found = []
  for path in (workdir / 'eval').glob('step_*/metrics.json'):
    match = re.fullmatch(r'step_(\d+)', path.parent.name)
    figures = json.loads(path.read_text()).get(split)
    if match and figures and {'tokens', 'perplexity', 'bits_per_byte'} <= set(figures):
      found.append((int(match[1]), figures))
  shown = os.path.relpath(workdir) if workdir.is_relative_to(Path.cwd()) else workdir  # as the user named it
  return [(f'gpt_tiny step {step} (eval.py, {shown})', f['tokens'], f['perplexity'], f['bits_per_byte'], '')
          for step, f in sorted(found)]


def plot(rows: list[Row], out: Path) -> None:
  """A dot per row at its validation perplexity (log scale, lower is better), the best n-gram's as a dashed line."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
  names = [n.replace(' (eval.py, ', ' (') for n, *_ in rows][::-1]
  values = [p for _, _, p, _, _ in rows][::-1]
  gpt = [n.startswith('gpt_tiny') for n in names]
  fig, ax = plt.subplots(figsize=(10, 0.4 * len(rows) + 1.4))
  ax.scatter(values, range(len(values)), c=['tab:blue' if g else 'tab:grey' for g in gpt], zorder=3)
  for y, v in enumerate(values):
    ax.annotate(f'{v:.2f}', (v, y), xytext=(6, -3), textcoords='offset points', fontsize=8)
  best = min(v for v, g in zip(values, gpt) if not g)
  ax.axvline(best, color='tab:grey', linestyle='--', linewidth=1, label=f'best n-gram ({best:.2f})')
  ax.set_yticks(range(len(names)), names, fontsize=8)
  ax.set_xscale('log')
  ax.set_xlim(min(values) * 0.9, max(values) * 1.25)
  ax.grid(axis='x', which='both', alpha=0.3)
  ax.set_xlabel('validation perplexity per token, log scale (the same tokens for every row; lower is better)')
  ax.set_title('tiny GPT runs (blue) against n-gram models (grey)')
  ax.legend(loc='lower right', fontsize=8)
  fig.tight_layout()
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out, dpi=100)
  plt.close(fig)
  print(f'wrote {out}')


def table(rows: list[Row]) -> str:
  lines = ['| model | validation tokens | perplexity | bits per byte | train s |', '|---|---:|---:|---:|---:|']
  lines += [f'| {n} | {t:,.0f} | {p:.2f} | {b:.4f} | {s} |' for n, t, p, b, s in rows]
  return '\n'.join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--orders', default='3,4,5', help='Kneser-Ney orders, comma-separated (>= 2)')
  parser.add_argument('--workdir', default=None, help='gpt_tiny runs, comma-separated: the first one\'s tokenizer, '
                      'and their eval figures beside')
  parser.add_argument('--out', default=None, help='a PNG of every row\'s perplexity')
  args = parser.parse_args()
  orders = parse_orders(args.orders)
  workdirs = [user_path(w.strip()) for w in args.workdir.split(',')] if args.workdir else []
  for path in workdirs:
    if not path.is_dir():
      raise SystemExit(f'--workdir {path}: no such folder; give gpt_tiny runs (python train.py --config '
                       'configs/gpt_tiny.py --workdir ...) or no --workdir')
  workdir = workdirs[0] if workdirs else None
  split = EvalConfig.from_config(gpt_tiny.get_config()).splits[0]  # the split eval.py scores first
  train, valid, model_path = load_tasks(workdir, split)
  vocab = train.tokenizer.vocab_size
  stream = np.asarray(train.source).reshape(-1)  # the training rows joined back into the stream
  rows, weights = scored_rows(valid)
  num_bytes = target_bytes(valid, None)
  print(f'tokenizer {model_path} ({vocab:,} ids); train: {len(stream):,} tokens ({len(train.source):,} rows); '
        f'{split}: {len(rows):,} rows of '
        f'{rows.shape[1]}, {weights.sum():,.0f} targets scored, {num_bytes:,} UTF-8 bytes; n-gram context '
        'restarts at each row', flush=True)

  def unigram() -> Callable[[np.ndarray], np.ndarray]:
    table = add_one_unigram([stream], vocab)
    return lambda r: table[r]

  def kneser_ney(order: int) -> Callable[[], Callable[[np.ndarray], np.ndarray]]:
    def fit() -> Callable[[np.ndarray], np.ndarray]:
      model = KneserNey.fit([stream], order, vocab)
      return lambda r: np.stack(model.log_probs(list(r)))
    return fit

  results = [measure('unigram, add-one', unigram, rows, weights, num_bytes)]
  for order in sorted({2, *orders}):
    results.append(measure(f'{order}-gram, interpolated modified KN', kneser_ney(order), rows, weights, num_bytes))
    print(table(results[-1:]).splitlines()[-1], flush=True)
  gpt = [row for path in workdirs for row in gpt_rows(path, split)]
  print(table(results + gpt))
  if args.out:
    plot(results + gpt, user_path(args.out))
  for name, tokens, *_ in gpt:
    if tokens != results[0][1]:
      print(f'note: {name} scored {tokens:,.0f} tokens, not all {results[0][1]:,.0f} (eval.max_examples set?): its '
            'figures cover the first rows only')


if __name__ == '__main__':
  main()
