"""A sweep's cells (trainer/sweep.py) as runs: where each stands (not started, unfinished, finished), its
done.json, and running the unfinished ones as train.py subprocesses, N at a time.

  outcome = run(spec, plan(spec, workdir), parallel=2)    # a line per cell start and finish; skips finished ones

A cell has finished when it has a done.json (written here once its train.py exited 0 at its last step, with
that step evaluated), or, for a cell run outside the sweep (a printed command run by a cluster scheduler),
when its checkpoint of step train.num_steps is committed and metrics.jsonl holds that step's evaluation.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from trainer import checkpoint, metrics
from trainer.sweep import Cell, PlannedCell, Spec, command

DONE_JSON = 'done.json'
LOG_NAME = 'train.log'


class CellState(enum.Enum):
  NEW = 'not started'
  PARTIAL = 'unfinished'
  FINISHED = 'finished'


def read_rows(workdir: Path) -> list[dict[str, Any]]:
  """The rows of a run's metrics.jsonl (none if absent); a line being written (torn) is left out."""
  path = workdir / metrics.JSONL_NAME
  rows = []
  if path.is_file():
    for line in path.read_text().splitlines():
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        continue
      rows.append({k: float(v) if v in ('NaN', 'Infinity', '-Infinity') else v for k, v in row.items()})
  return rows


def last_eval(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
  return next((dict(r) for r in reversed(rows) if r.get('split') == metrics.Split.EVAL.value), None)


def committed_step(workdir: Path) -> int:
  """The latest committed checkpoint step (0: none); a save in flight is a temporary folder, not counted."""
  folder = Path(checkpoint.checkpoint_dir(workdir))
  return max((int(p.name) for p in folder.iterdir() if p.name.isdigit()), default=0) if folder.is_dir() else 0


def cell_state(workdir: Path, num_steps: int) -> tuple[CellState, int]:
  """(state, latest committed step). Finished: a done.json, or (for a cell run outside the sweep) the
  checkpoint of step train.num_steps with its evaluation in metrics.jsonl."""
  step = committed_step(workdir)
  if (workdir / DONE_JSON).is_file():
    return CellState.FINISHED, step
  final = last_eval(read_rows(workdir))
  if num_steps and step == num_steps and final is not None and final['step'] == step:
    return CellState.FINISHED, step
  return (CellState.PARTIAL if step or (workdir / metrics.JSONL_NAME).exists() else CellState.NEW), step


def mark_done(workdir: Path) -> dict[str, Any]:
  """Writes <cell>/done.json: its last step, final evaluation and wall time (first to last metrics row)."""
  rows = read_rows(workdir)
  final = last_eval(rows) or {}
  done = {'step': committed_step(workdir), 'final': {k: v for k, v in final.items() if k not in ('split', 'step')},
          'wall_time_s': rows[-1]['wall_time'] - rows[0]['wall_time'] if rows else 0.0}
  done['final'].pop('wall_time', None)
  (workdir / DONE_JSON).write_text(json.dumps(strict_json(done), indent=2, allow_nan=False) + '\n')
  return done


def strict_json(value: Any) -> Any:
  """`value` for strict JSON: NaN and +-inf as the strings float() reads back, as metrics.jsonl writes them."""
  if isinstance(value, float) and not math.isfinite(value):
    return 'NaN' if math.isnan(value) else ('Infinity' if value > 0 else '-Infinity')
  if isinstance(value, dict):
    return {k: strict_json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [strict_json(v) for v in value]
  return value


# --- running ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Outcome:
  failed: tuple[str, ...]  # '<cell>: <its log's last line>'
  stopped_by: int | None  # the signal that stopped the sweep; its running cells resume on a re-run


def _last_line(path: Path) -> str:
  lines = [line.strip() for line in path.read_text(errors='replace').splitlines() if line.strip()] \
      if path.is_file() else []
  return lines[-1] if lines else '<no output>'


def _loss(done: Mapping[str, Any]) -> str:
  loss = done.get('final', {}).get('loss')
  return f'validation loss {loss:.4f}' if isinstance(loss, float) and math.isfinite(loss) else 'no validation loss'


def run(spec: Spec, planned: Sequence[PlannedCell], *, parallel: int, echo: Callable[[str], None] = print,
        poll_s: float = 0.2) -> Outcome:
  """Runs the unfinished cells as train.py subprocesses, `parallel` at a time, and prints a line per cell
  start and finish. SIGTERM or SIGINT stops the sweep: the running cells get SIGTERM (they save and exit)."""
  total, count = len(planned), 0
  queue: list[tuple[PlannedCell, int]] = []
  for item in planned:
    state, step = cell_state(item.cell.workdir, item.num_steps)
    if state is CellState.FINISHED:
      done_path = item.cell.workdir / DONE_JSON
      done = json.loads(done_path.read_text()) if done_path.is_file() else mark_done(item.cell.workdir)
      count += 1
      echo(f'[{count}/{total}] {item.cell.name}: finished earlier, {_loss(done)}')
    else:
      queue.append((item, step))
  env = dict(os.environ)
  if parallel > 1:  # cells sharing one GPU: each takes memory as it needs it, not 75% of the device at start
    env.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  running: dict[subprocess.Popen, tuple[PlannedCell, float]] = {}
  stop: dict[str, int | None] = {'signal': None}
  failed: list[str] = []

  def on_signal(signum: int, frame: Any) -> None:
    del frame
    stop['signal'] = signum
    for proc in running:
      proc.send_signal(signal.SIGTERM)

  previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    while running or (queue and stop['signal'] is None):
      while queue and len(running) < parallel and stop['signal'] is None:
        item, step = queue.pop(0)
        running[_launch(spec, item.cell, env)] = (item, time.monotonic())
        echo(f'[{count}/{total}] start {item.cell.name}' + (f' (resuming from step {step})' if step else ''))
      time.sleep(poll_s)
      for proc in [p for p in running if p.poll() is not None]:
        item, started = running.pop(proc)
        message = _finished(item, proc.returncode, stop['signal'], time.monotonic() - started)
        count += not message.startswith('stopped')  # the count of cells done or failed
        if message.startswith('FAILED'):
          failed.append(f'{item.cell.name}: {_last_line(item.cell.workdir / LOG_NAME)}')
        echo(f'[{count}/{total}] {message}')
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  return Outcome(tuple(failed), stop['signal'])


def _launch(spec: Spec, cell: Cell, env: Mapping[str, str]) -> subprocess.Popen:
  cell.workdir.mkdir(parents=True, exist_ok=True)
  argv = command(spec, cell)
  with open(cell.workdir / LOG_NAME, 'a') as log:
    log.write(f'== {time.strftime("%Y-%m-%d %H:%M:%S")} {shlex.join(argv)}\n')
    log.flush()
    # Ctrl-C reaches the whole process group: the cells ignore it, and the sweep sends them SIGTERM instead,
    # on which train.py saves a checkpoint and exits (SIGINT would end it without one).
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=dict(env),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))


def _finished(item: PlannedCell, returncode: int, stopped_by: int | None, seconds: float) -> str:
  """The line of a cell whose train.py exited; writes its done.json when it finished."""
  cell, took = item.cell, metrics.format_duration(seconds)
  state, step = cell_state(cell.workdir, item.num_steps)
  final = last_eval(read_rows(cell.workdir))
  if returncode == 0 and stopped_by is None and state is not CellState.FINISHED and not item.num_steps:
    # A run measured in epochs: train.py exited by itself with its last checkpoint evaluated.
    state = CellState.FINISHED if step and final is not None and final['step'] == step else state
  if returncode == 0 and state is CellState.FINISHED:
    return f'done {cell.name} in {took}: {_loss(mark_done(cell.workdir))}'
  if stopped_by is not None:
    return f'stopped {cell.name} at step {step} (signal {stopped_by})'
  why = f'exit {returncode}' if returncode else f'exit 0 at step {step} of {item.num_steps or "?"}'
  return f'FAILED {cell.name} ({why}): {_last_line(cell.workdir / LOG_NAME)}'


def iter_seed_dirs(variant_dir: Path) -> Iterator[Path]:
  """The seed_<s> folders of a variant, in seed order."""
  found = [p for p in variant_dir.iterdir() if p.is_dir() and re.fullmatch(r'seed_-?\d+', p.name)]
  yield from sorted(found, key=lambda p: int(p.name[5:]))
