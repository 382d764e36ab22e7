"""Does MLM pretraining on the built-in corpora help a fine-tune? The summary of the README's ablation.

  python bench/pretraining_transfer.py --pretraining runs/mlm_budget \
      --finetunes 0=runs/movie_random,300=runs/movie_mlm_300,1000=runs/movie_mlm_1000,3000=runs/movie_mlm_3000 \
      --out docs/ablations/pretraining.png

Reads the sweeps' results.json (sweep.py writes them at the end, `sweep.py --report` at any time): the final
MLM validation loss of each pretraining budget (`--pretraining`, a sweep over train.num_steps), and for each
budget (0 = random weights) the fine-tunes' validation accuracy per learning rate, mean ± std over seeds.
For each budget the learning rate with the best mean validation accuracy is then scored on the test split
with eval.py's code (evaluation.evaluate.evaluate_checkpoint, every test sentence; kept in
<cell>/eval/step_<N>/metrics.json and reused when there): the choice is made on validation, the figure
reported on test. Prints two markdown tables and draws validation accuracy against the pretraining budget, a
line per learning rate with its seed band, the chosen cells' test accuracy beside, and the test accuracy of
bench/finetune_vs_hf.py's TF-IDF + logistic regression baseline on the same split as a reference line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.paths import user_path  # noqa: E402

METRIC = 'accuracy'  # movie_binary's official metric; the fine-tune loop reports it on validation


def read_results(workdir: Path) -> dict[str, Any]:
  path = workdir / 'results.json'
  if not path.is_file():
    raise SystemExit(f'{path} does not exist: run the sweep (or `python sweep.py --report {workdir}`) first')
  return json.loads(path.read_text())


def seed_values(variant: Mapping[str, Any], metric: str) -> list[float]:
  """The metric of every finished seed of a variant."""
  return [s['final'][metric] for s in variant['seeds'] if s['state'] == 'finished' and metric in s['final']]


def mean_std(values: Sequence[float]) -> str:
  if not values:
    return 'not run'
  std = f' ± {statistics.stdev(values):.3f}' if len(values) > 1 else ''
  return f'{statistics.fmean(values):.3f}{std}'


def parse_finetunes(text: str) -> dict[int, Path]:
  out = {}
  for item in text.split(','):
    budget, sep, path = item.partition('=')
    if not sep or not budget.strip().isdigit() or not path.strip():
      raise SystemExit(f'--finetunes: {item!r} is not <pretraining steps>=<sweep workdir> (0 = random weights)')
    out[int(budget)] = user_path(path.strip())
  return dict(sorted(out.items()))


def test_accuracy(cell: Path, step: int) -> float:
  """The test accuracy of `cell`'s checkpoint `step`, from eval.py's metrics.json (evaluated here if missing)."""
  metrics = cell / 'eval' / f'step_{step}' / 'metrics.json'
  if not metrics.is_file():
    from evaluation.evaluate import evaluate_checkpoint  # pylint: disable=import-outside-toplevel
    print(f'evaluating {cell} (step {step}) on its eval splits', flush=True)
    evaluate_checkpoint(None, cell, step=step)
  return float(json.loads(metrics.read_text())['test'][METRIC])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--pretraining', required=True, help='the MLM sweep over train.num_steps')
  parser.add_argument('--finetunes', required=True, help='<steps>=<fine-tune sweep>,...; 0 = random weights')
  parser.add_argument('--out', default='pretraining.png', help='the PNG to write')
  args = parser.parse_args()
  finetunes = parse_finetunes(args.finetunes)

  mlm = {int(v['assignment']['train.num_steps']): v for v in read_results(user_path(args.pretraining))['variants']}
  print('| MLM pretraining steps | MLM validation loss | perplexity |\n|---:|---:|---:|')
  for budget, variant in sorted(mlm.items()):
    print(f"| {budget:,} | {mean_std(seed_values(variant, 'loss'))} | {mean_std(seed_values(variant, 'perplexity'))} |")

  rows, lines, chosen = [], {}, {}
  for budget, workdir in finetunes.items():
    if budget and budget not in mlm:
      raise SystemExit(f'--finetunes: {budget} steps is not a budget of --pretraining {args.pretraining} '
                       f'({sorted(mlm)})')
    variants = read_results(workdir)['variants']
    best = max(variants, key=lambda v: statistics.fmean(seed_values(v, METRIC) or [float('-inf')]))
    for variant in sorted(variants, key=lambda v: float(v['assignment']['optim.learning_rate'])):
      lr = variant['assignment']['optim.learning_rate']
      values = seed_values(variant, METRIC)
      lines.setdefault(lr, {})[budget] = values
      test = ''
      if variant is best and values:
        tests = [test_accuracy(Path(s['workdir']), s['step']) for s in variant['seeds'] if s['state'] == 'finished']
        chosen[budget] = tests
        test = mean_std(tests)
      rows.append(f"| {budget:,} | {lr} | {mean_std(values)} | {test} |")
  print('\n| pretraining steps (0: random weights) | fine-tune learning rate | validation accuracy | '
        'test accuracy (best learning rate on validation) |\n|---:|---:|---:|---:|')
  print('\n'.join(rows))
  from bench.finetune_vs_hf import run_tfidf  # pylint: disable=import-outside-toplevel
  tfidf = run_tfidf(argparse.Namespace(task='movie_binary', max_train=0))['test'][METRIC]
  print(f'\nTF-IDF (1-2-grams) + logistic regression, same training split: test accuracy {tfidf:.3f}')
  plot(lines, chosen, tfidf, user_path(args.out))
  print(f'\nwrote {user_path(args.out)}')


def plot(lines: Mapping[str, Mapping[int, list[float]]], chosen: Mapping[int, list[float]], tfidf: float,
         out: Path) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  budgets = sorted({b for by_budget in lines.values() for b in by_budget})
  x = {b: i for i, b in enumerate(budgets)}  # evenly spaced: 0 (random weights) has no place on a log axis
  fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
  for lr, by_budget in lines.items():
    points = [(x[b], v) for b, v in sorted(by_budget.items()) if v]
    xs = [p for p, _ in points]
    ax.plot(xs, [statistics.fmean(v) for _, v in points], marker='o', label=f'validation, lr {lr}')
    ax.fill_between(xs, [min(v) for _, v in points], [max(v) for _, v in points], alpha=0.2)
  tests = [(x[b], v) for b, v in sorted(chosen.items()) if v]
  ax.errorbar([p for p, _ in tests], [statistics.fmean(v) for _, v in tests],
              yerr=[[statistics.fmean(v) - min(v) for _, v in tests], [max(v) - statistics.fmean(v) for _, v in tests]],
              fmt='ks', capsize=3, label='test, best lr on validation')
  ax.axhline(tfidf, color='grey', linestyle='--', label='test, TF-IDF + logistic regression')
  ax.set_xticks(range(len(budgets)), ['random' if b == 0 else f'{b:,}' for b in budgets])
  ax.set_xlabel('MLM pretraining steps before the fine-tune')
  ax.set_ylabel('movie_binary accuracy')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  ax.set_title('Tiny BERT: fine-tune accuracy against its pretraining budget (band: min-max over seeds)', fontsize=9)
  fig.tight_layout()
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out)
  plt.close(fig)


if __name__ == '__main__':
  main()
