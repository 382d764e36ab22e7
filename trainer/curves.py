"""Training curves of several runs in one figure (matplotlib, Agg backend: no display needed): one line per
series, the mean over its runs (seeds), with a shaded min-max band when it has more than one.

  series = [Series('position=rope', [rows_seed0, rows_seed1], tokens_per_step=64)]   # metrics.jsonl rows
  draw(series, SWEEP_PANELS, Path('curves.png'), title='gpt_tiny.py: model.position, 2 seeds')

Used by the sweep's report (validation loss against steps and tokens seen) and by plot.py (train and
validation loss, learning rate, tokens/s).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainer.metrics import Split


class XAxis(enum.Enum):
  STEPS = 'steps'
  TOKENS = 'tokens seen'  # steps x batch_size x tokens per example


@dataclasses.dataclass(frozen=True)
class Series:
  label: str
  runs: list[list[dict[str, Any]]]  # each run's metrics.jsonl rows
  tokens_per_step: int | None = None  # needed for XAxis.TOKENS


@dataclasses.dataclass(frozen=True)
class Panel:
  metric: str
  split: Split
  x: XAxis = XAxis.STEPS
  log_y: bool = False

  @property
  def title(self) -> str:
    name = {'loss': 'loss', 'learning_rate': 'learning rate', 'tokens_per_sec': 'tokens/s'}.get(self.metric,
                                                                                                  self.metric)
    return f'{"validation" if self.split is Split.EVAL else "train"} {name}' if self.metric == 'loss' else name


SWEEP_PANELS = (Panel('loss', Split.EVAL), Panel('loss', Split.EVAL, XAxis.TOKENS))
RUN_PANELS = (Panel('loss', Split.TRAIN), Panel('loss', Split.EVAL), Panel('learning_rate', Split.TRAIN),
              Panel('tokens_per_sec', Split.TRAIN))


def curve(rows: Sequence[dict[str, Any]], metric: str, split: Split) -> dict[int, float]:
  """step -> value of `metric` in the rows of `split` (a step written twice, by a resumed run: its last value)."""
  return {int(r['step']): float(r[metric]) for r in rows if r.get('split') == split.value and metric in r}


def band(runs: Sequence[Sequence[dict[str, Any]]], metric: str,
         split: Split) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(steps, mean, min, max) over the runs that have each step (an unfinished seed stops early)."""
  per_run = [curve(rows, metric, split) for rows in runs]
  steps = sorted({s for c in per_run for s in c})
  values = [[c[s] for c in per_run if s in c] for s in steps]
  return (np.array(steps, float), np.array([np.mean(v) for v in values]), np.array([np.min(v) for v in values]),
          np.array([np.max(v) for v in values]))


def best_step(runs: Sequence[Sequence[dict[str, Any]]]) -> int | None:
  """The step of the lowest validation loss of the mean over the runs (None before any evaluation)."""
  steps, mean, _, _ = band(runs, 'loss', Split.EVAL)
  finite = np.isfinite(mean)
  return int(steps[finite][np.argmin(mean[finite])]) if finite.any() else None


def draw(series: Sequence[Series], panels: Sequence[Panel], out: Path, *, title: str) -> None:
  """Writes the figure of `panels` (side by side, two per row beyond two) to `out` (PNG)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')  # files only; never a display
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from matplotlib.ticker import MaxNLocator  # pylint: disable=g-import-not-at-top

  columns = min(len(panels), 2)
  rows = math.ceil(len(panels) / columns)
  fig, axes = plt.subplots(rows, columns, figsize=(6.4 * columns, 4.2 * rows), squeeze=False)
  colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
  for ax, panel in zip(axes.flat, panels):
    for i, s in enumerate(series):
      steps, mean, low, high = band(s.runs, panel.metric, panel.split)
      if not len(steps):
        continue
      x = steps * s.tokens_per_step if panel.x is XAxis.TOKENS and s.tokens_per_step else steps
      color = colors[i % len(colors)]
      ax.plot(x, mean, color=color, label=s.label, marker='o' if len(x) == 1 else None)
      if len(s.runs) > 1:
        ax.fill_between(x, low, high, color=color, alpha=0.2, linewidth=0)
    if panel.x is XAxis.STEPS:
      ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(panel.title)
    ax.set_xlabel(panel.x.value)
    if panel.log_y:
      ax.set_yscale('log')
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(panels):]:
    ax.set_visible(False)
  handles, labels = axes.flat[0].get_legend_handles_labels()
  for ax in list(axes.flat)[1:len(panels)]:  # series missing from the first panel still get a legend entry
    for h, label in zip(*ax.get_legend_handles_labels()):
      if label not in labels:
        handles.append(h)
        labels.append(label)
  if handles:
    fig.legend(handles, labels, loc='lower center', ncol=min(len(labels), 3), fontsize='small', frameon=False)
  fig.suptitle(title)
  legend_rows = math.ceil(len(labels) / 3) if handles else 0
  fig.tight_layout(rect=(0, min(0.05 * legend_rows / rows, 0.4), 1, 1))
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out, dpi=100)
  plt.close(fig)
