"""A sweep's results (trainer/sweep.py): results.md, results.json and curves.png in its workdir, at the end of the
sweep or at any time with `python sweep.py --report <workdir>` (unfinished cells are marked).

  variants = collect(spec, workdir)          # every variant's seeds: metrics.jsonl rows, state, figures
  write(spec, workdir, variants)             # results.md (sorted by final validation loss), .json, curves.png

One row per variant: its final validation metrics as mean ± std over its seeds (sample std, with >= 2 seeds),
parameters (jax.eval_shape of the model's init: exact, nothing compiled), tokens/s (the median of each seed's
logged train rates, averaged over seeds), wall time (a seed's first to last metrics row, averaged), and the best
step (the lowest validation loss of the mean over seeds).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax

import model
from data.tasks import DataConfig
from trainer import curves, metrics
from trainer.sweep import SWEEP_JSON, Cell, Spec, cell_config, cells, read_spec, variants
from trainer.sweep_cells import CellState, cell_state, iter_seed_dirs, read_rows, strict_json

RESULTS_MD, RESULTS_JSON, CURVES_PNG = 'results.md', 'results.json', 'curves.png'
_NOT_METRICS = ('step', 'split', 'wall_time')


@dataclasses.dataclass(frozen=True)
class SeedResult:
  """One cell: where it stands and what its metrics.jsonl holds."""

  seed: int
  workdir: Path
  state: CellState
  step: int  # its latest committed checkpoint
  num_steps: int
  rows: list[dict[str, Any]]

  @property
  def final(self) -> dict[str, float]:
    """The metrics of its last evaluation (of the final step once finished)."""
    last = next((r for r in reversed(self.rows) if r['split'] == metrics.Split.EVAL.value), {})
    return {k: float(v) for k, v in last.items() if k not in _NOT_METRICS}

  @property
  def tokens_per_sec(self) -> float | None:
    rates = [r['tokens_per_sec'] for r in self.rows if 'tokens_per_sec' in r and math.isfinite(r['tokens_per_sec'])]
    return statistics.median(rates) if rates else None

  @property
  def wall_time_s(self) -> float | None:
    return self.rows[-1]['wall_time'] - self.rows[0]['wall_time'] if self.rows else None

  def to_json(self) -> dict[str, Any]:
    return {'seed': self.seed, 'workdir': str(self.workdir), 'state': self.state.value, 'step': self.step,
            'num_steps': self.num_steps, 'final': self.final, 'best_step': curves.best_step([self.rows]),
            'tokens_per_sec': self.tokens_per_sec, 'wall_time_s': self.wall_time_s}


@dataclasses.dataclass(frozen=True)
class VariantResult:
  name: str
  assignment: dict[str, str]
  params: int
  tokens_per_step: int  # batch_size x tokens per example: the x axis in tokens seen
  seeds: list[SeedResult]

  @property
  def finished(self) -> int:
    return sum(s.state is CellState.FINISHED for s in self.seeds)

  @property
  def status(self) -> str:
    if self.finished == len(self.seeds):
      return 'done'
    unfinished = [f'seed {s.seed} {s.state.value}' + (f' (step {s.step}/{s.num_steps or "?"})' if s.step else '')
                  for s in self.seeds if s.state is not CellState.FINISHED]
    return 'unfinished: ' + ', '.join(unfinished)

  def final(self) -> dict[str, tuple[float, float | None]]:
    """metric -> (mean, sample std or None) over the seeds that have an evaluation."""
    finals = [s.final for s in self.seeds if s.final]
    names = [k for k in finals[0] if all(k in f for f in finals)] if finals else []
    return {k: (statistics.fmean(f[k] for f in finals),
                statistics.stdev(f[k] for f in finals) if len(finals) > 1 else None) for k in names}

  def mean_of(self, values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None

  def sort_key(self) -> tuple[bool, float]:
    loss = self.final().get('loss', (math.nan, None))[0]
    return (not math.isfinite(loss), loss if math.isfinite(loss) else 0.0)

  def to_json(self) -> dict[str, Any]:
    return {'variant': self.name, 'assignment': self.assignment, 'status': self.status, 'params': self.params,
            'final': {k: {'mean': m, 'std': s} for k, (m, s) in self.final().items()},
            'best_step': curves.best_step([s.rows for s in self.seeds]),
            'tokens_per_sec': self.mean_of([s.tokens_per_sec for s in self.seeds]),
            'wall_time_s': self.mean_of([s.wall_time_s for s in self.seeds]),
            'seeds': [s.to_json() for s in self.seeds]}


@functools.cache
def _count_params(model_cfg: model.ModelConfig) -> int:
  module = model.build(model_cfg)
  shapes = jax.eval_shape(functools.partial(model.init_params, module), jax.random.key(0))
  return sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))


def collect(spec: Spec, workdir: Path) -> list[VariantResult]:
  """Every variant of the sweep, in the spec's order, with each seed's state and metrics so far."""
  by_variant: dict[str, list[Cell]] = {}
  for cell in cells(spec, workdir):
    by_variant.setdefault(cell.variant, []).append(cell)
  out = []
  for name, assignment in variants(spec):
    group = sorted(by_variant[name], key=lambda c: c.seed)
    config = cell_config(spec, group[0])
    model_cfg, data = model.ModelConfig.from_dict(config.model), DataConfig.from_dict(config.data)
    decoder = data.targets_len if model_cfg.family is model.Family.ENCODER_DECODER else None
    tokens = config.train.batch_size * metrics.tokens_per_example(model_cfg, data.seq_len, decoder)
    num_steps = int(config.train.num_steps)  # the seeds of a variant differ in train.seed alone
    seeds = []
    for cell in group:
      state, step = cell_state(cell.workdir, num_steps)
      seeds.append(SeedResult(cell.seed, cell.workdir, state, step, num_steps, read_rows(cell.workdir)))
    out.append(VariantResult(name, dict(assignment), _count_params(model_cfg), tokens, seeds))
  return out


def _figure(value: float | None, fmt: str = '{:.4f}') -> str:
  return '—' if value is None or not math.isfinite(value) else fmt.format(value)


def markdown(spec: Spec, results: Sequence[VariantResult]) -> str:
  """The results table, sorted by final validation loss (variants without one last)."""
  ordered = sorted(results, key=VariantResult.sort_key)
  names = ['loss']  # a column also before any evaluation
  for result in ordered:
    names += [k for k in result.final() if k not in names]
  names.sort(key=lambda k: (k != 'loss', k))
  lines = [f'# Sweep {spec.title()}', '',
           f'Config `{spec.config}`' + (f' with `{" ".join(spec.overrides)}`' if spec.overrides else '') +
           f'; seeds {list(spec.seeds)}. Written {time.strftime("%Y-%m-%d %H:%M")}.', '',
           'Final validation metrics: mean ± sample std over the seeds (std with 2 seeds or more). Tokens/s: the '
           'median of each seed\'s logged train rates, averaged; wall time: first to last metrics row, averaged; '
           'best step: the lowest mean validation loss. Sorted by final validation loss.', '']
  header = ['variant', 'seeds', *(f'val {k}' for k in names), 'params', 'tokens/s', 'wall time', 'best step',
            'status']
  lines += ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for r in ordered:
    final = r.final()
    cells = [f'`{r.name}`', f'{r.finished}/{len(r.seeds)}']
    for k in names:
      mean, std = final.get(k, (None, None))
      cells.append(_figure(mean) + (f' ± {std:.4f}' if std is not None else ''))
    tokens, wall = r.mean_of([s.tokens_per_sec for s in r.seeds]), r.mean_of([s.wall_time_s for s in r.seeds])
    best = curves.best_step([s.rows for s in r.seeds])
    cells += [f'{r.params:,}', _figure(tokens, '{:,.0f}'), metrics.format_duration(wall) if wall is not None else '—',
              '—' if best is None else str(best), r.status]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def write(spec: Spec, workdir: Path, results: Sequence[VariantResult] | None = None) -> list[Path]:
  """Writes results.md, results.json and curves.png into `workdir`; returns their paths."""
  results = collect(spec, workdir) if results is None else results
  md, js, png = workdir / RESULTS_MD, workdir / RESULTS_JSON, workdir / CURVES_PNG
  md.write_text(markdown(spec, results))
  ordered = sorted(results, key=VariantResult.sort_key)
  js.write_text(json.dumps(strict_json({'spec': spec.to_json(), 'variants': [r.to_json() for r in ordered]}), indent=2,
                           allow_nan=False) + '\n')
  series = [curves.Series(r.name, [s.rows for s in r.seeds if s.rows], r.tokens_per_step) for r in results]
  curves.draw(series, curves.SWEEP_PANELS, png, title=spec.title())
  return [md, js, png]


def workdir_series(paths: Sequence[Path]) -> tuple[Path, list[curves.Series]]:
  """(the common parent, the curves of `paths`): a train.py workdir is one series, a sweep.py workdir one per
  variant (its seeds the runs), a folder of seed_<s> runs one; each labelled relative to the common parent."""
  for path in paths:
    if not path.is_dir():
      raise FileNotFoundError(f'{path}: no such folder')
  common = Path(os.path.commonpath([p.parent for p in paths]))
  out = []
  for path in paths:
    label = str(path.relative_to(common))
    if (path / SWEEP_JSON).is_file():
      for name, _ in variants(read_spec(path)):
        runs = [read_rows(d) for d in iter_seed_dirs(path / name)] if (path / name).is_dir() else []
        out.append(curves.Series(f'{label}/{name}', [r for r in runs if r]))
    elif (path / metrics.JSONL_NAME).is_file():
      out.append(curves.Series(label, [read_rows(path)]))
    elif runs := [rows for d in iter_seed_dirs(path) if (rows := read_rows(d))]:
      out.append(curves.Series(label, runs))
    else:
      raise FileNotFoundError(f'{path}: neither a train.py workdir (no {metrics.JSONL_NAME}) nor a sweep.py workdir '
                              f'(no {SWEEP_JSON}) nor a folder of seed_<s> runs')
  return common, out
