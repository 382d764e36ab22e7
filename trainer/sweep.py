"""Architecture ablations as a workflow: a grid of config values x seeds, each cell a plain `python train.py` run
in its own folder, run as subprocesses N at a time; a re-run resumes the unfinished cells and skips the finished
ones. sweep.py is the program; trainer/sweep_cells.py runs the cells, trainer/report.py writes the results.

  spec = make_spec('configs/gpt_tiny.py', ['model.position=learned,rope'], seeds=2, overrides=(), base=config)
  cells = plan(spec, workdir)                  # every cell's typed config sections checked; nothing runs
  print(shlex.join(command(spec, cells[0].cell)))

A sweep's workdir:
  sweep.json               the spec (config path, sweeps, seeds, overrides); a re-run must give the same one
  <variant>/seed_<s>/      one train.py workdir per cell; <variant> reads e.g. 'position=rope,norm_placement=pre'
    train.log              the cell's output, appended by each launch after a '== <time> <command>' line
    done.json              written once the cell has finished: its last step, final evaluation and wall time
  results.md, results.json, curves.png       the report (trainer/report.py)
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags

from core.config import unknown_keys_message
from core.paths import user_path
from data.tasks import DataConfig
from evaluation.config import EvalConfig
from model.config import ModelConfig
from trainer.config import UNKNOWN_STEPS, TrainConfig
from trainer.distill import DistillConfig
from trainer.distributed import DistributedConfig
from trainer.mesh import MeshConfig
from trainer.optim import OptimConfig

SWEEP_JSON = 'sweep.json'
SEED_FIELD = 'train.seed'
TRAIN_PY = Path(__file__).resolve().parents[1] / 'train.py'
_OVERRIDE = re.compile(r'^--?(no)?config\.')


class SweepError(ValueError):
  """A sweep spec or sweep workdir that cannot be used; the message names the spec and the fix."""


@dataclasses.dataclass(frozen=True)
class Axis:
  """One `--sweep <field>=<v1>,<v2>,...`: a config field and its values as written on the command line."""

  field: str  # 'model.position'
  values: tuple[str, ...]

  @classmethod
  def parse(cls, spec: str) -> Axis:
    field, sep, values = spec.partition('=')
    field, items = field.strip(), [v.strip() for v in values.split(',')]
    if not sep or not field:
      raise SweepError(f"--sweep {spec}: expected <section>.<field>=<value>,<value>,..., e.g. --sweep "
                       "'model.position=learned,rope'")
    if not all(items):
      raise SweepError(f'--sweep {spec}: an empty value; give the values separated by commas, e.g. '
                       f'{field}=a,b (a value cannot hold a comma)')
    twice = sorted({v for v in items if items.count(v) > 1})
    if twice:
      raise SweepError(f'--sweep {spec}: {", ".join(twice)} given twice; give each value once')
    return cls(field, tuple(items))

  def __str__(self) -> str:
    return f'{self.field}={",".join(self.values)}'


@dataclasses.dataclass(frozen=True)
class Spec:
  """What a sweep runs; saved as <workdir>/sweep.json. Seeds are not an axis: train.seed of every variant."""

  config: str  # the config file as an absolute path, ':<arg>' included
  axes: tuple[Axis, ...]
  seeds: tuple[int, ...]
  overrides: tuple[str, ...]  # the user's --config.* arguments, verbatim, given to every cell

  def to_json(self) -> dict[str, Any]:
    return {'config': self.config, 'sweeps': [str(a) for a in self.axes], 'seeds': list(self.seeds),
            'overrides': list(self.overrides)}

  @classmethod
  def from_json(cls, values: Mapping[str, Any]) -> Spec:
    return cls(values['config'], tuple(Axis.parse(s) for s in values['sweeps']), tuple(values['seeds']),
               tuple(values['overrides']))

  def title(self) -> str:
    """'gpt_tiny.py: model.position x model.norm_placement, 2 seeds'."""
    swept = ' x '.join(a.field for a in self.axes) or 'seeds only'
    return f'{Path(self.config.split(":", 1)[0]).name}: {swept}, {len(self.seeds)} seed{"s" * (len(self.seeds) > 1)}'


@dataclasses.dataclass(frozen=True)
class Cell:
  """One run of the grid: a variant (one value of every axis) and a seed, in `workdir`."""

  variant: str  # the folder name: 'position=rope,norm_placement=pre' ('base' when only seeds vary)
  assignment: tuple[tuple[str, str], ...]  # (field, value as written) of every axis
  seed: int
  workdir: Path  # <sweep workdir>/<variant>/seed_<seed>

  @property
  def name(self) -> str:
    return f'{self.variant}/seed_{self.seed}'


@dataclasses.dataclass(frozen=True)
class PlannedCell:
  cell: Cell
  num_steps: int  # the cell's train.num_steps; 0 when train.num_epochs sets the length (known once data is read)


def config_overrides(argv: Sequence[str], flag_values: flags.FlagValues = flags.FLAGS) -> tuple[str, ...]:
  """The `--config.<field>=<value>` arguments of `argv` (after parsing), verbatim; a value given as the next
  argument (`--config.train.num_steps 100`) comes with its flag."""
  out, i = [], 1
  while i < len(argv) and argv[i] != '--':
    arg = argv[i]
    if _OVERRIDE.match(arg):
      out.append(arg)
      name = arg.lstrip('-').split('=', 1)[0]
      if '=' not in arg and name in flag_values and not flag_values[name].boolean and i + 1 < len(argv):
        out.append(argv[i + 1])
        i += 1
    i += 1
  return tuple(out)


def _override_field(arg: str) -> str | None:
  """'model.position' of '--config.model.position=rope' (or '--noconfig.model.x'); None for a bare value."""
  match = _OVERRIDE.match(arg)
  return arg[match.end():].split('=', 1)[0] if match else None


def make_spec(config: str, sweeps: Sequence[str], *, seeds: int | None, overrides: Sequence[str],
              base: ml_collections.ConfigDict) -> Spec:
  """The spec of `--config config --sweep ... [--seeds N] <overrides>`, every --sweep checked against `base`
  (the config with the overrides): malformed, swept twice, overridden as well, or a field the config lacks."""
  axes = [Axis.parse(s) for s in sweeps]
  for i, axis in enumerate(axes):
    earlier = next((a for a in axes[:i] if a.field == axis.field), None)
    if earlier is not None:
      raise SweepError(f'--sweep {axis}: {axis.field} is swept twice (also --sweep {earlier}); give all its values '
                       'in one --sweep')
    _check_field(base, axis)
  swept = {a.field: a for a in axes}
  for arg in overrides:
    field = _override_field(arg)
    if field in swept or (field == SEED_FIELD and seeds is not None):
      what = f'--sweep {swept[field]}' if field in swept else f'--seeds={seeds}'
      raise SweepError(f'{arg}: {field} is set by {what} as well; drop one of them')
  seed_axis = swept.pop(SEED_FIELD, None)
  if seed_axis is not None:
    if seeds is not None:
      raise SweepError(f'--seeds={seeds} and --sweep {seed_axis}: both set the seeds; give one of them')
    bad = [v for v in seed_axis.values if not re.fullmatch(r'-?\d+', v)]
    if bad:
      raise SweepError(f'--sweep {seed_axis}: {bad[0]!r} is not an integer seed')
    seed_values = tuple(int(v) for v in seed_axis.values)
    if len(set(seed_values)) != len(seed_values):
      raise SweepError(f'--sweep {seed_axis}: a seed given twice; give each seed once')
  elif any(_override_field(arg) == SEED_FIELD for arg in overrides):
    raise SweepError(f'{next(a for a in overrides if _override_field(a) == SEED_FIELD)}: the sweep sets train.seed '
                     f'(0..N-1 of --seeds N); to choose the seeds, give --sweep {SEED_FIELD}=<s1>,<s2>,... instead')
  else:
    count = 1 if seeds is None else seeds
    if count < 1:
      raise SweepError(f'--seeds={count}: must be >= 1 (the runs of each variant, with train.seed 0..N-1)')
    seed_values = tuple(range(count))
  path, _, arg = config.partition(':')
  absolute = str(user_path(path)) + (f':{arg}' if arg else '')
  return Spec(absolute, tuple(swept.values()), seed_values, tuple(overrides))


def _check_field(config: ml_collections.ConfigDict, axis: Axis) -> None:
  """A field the config has (the close matches named otherwise), and not a whole section."""
  node: Any = config
  parts = axis.field.split('.')
  for depth, key in enumerate(parts):
    where = '.'.join(parts[:depth]) or 'top-level'
    if not isinstance(node, ml_collections.ConfigDict):
      raise SweepError(f'--sweep {axis}: {where} is a value, not a section')
    if key not in node:
      raise SweepError(f'--sweep {axis}: ' + unknown_keys_message([key], node.keys(), where))
    node = node[key]
  if isinstance(node, ml_collections.ConfigDict):
    raise SweepError(f'--sweep {axis}: {axis.field} is a section; sweep one of its fields: {sorted(node.keys())}')


def load_config(config: str, args: Sequence[str]) -> ml_collections.ConfigDict:
  """The config train.py would build from `--config <config> <args>` (ml_collections parses every value by
  the type of its field); a bad value raises ValueError with the flags library's message."""
  argv = ['train.py', f'--config={config}', *args]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'config file', flag_values=values, lock_config=True,
                                  sys_argv=argv)
  try:
    values(argv)
    loaded = values.config
    loaded.keys()  # a config file that failed to load raises on first use
  except (flags.Error, AttributeError, KeyError, OSError) as e:
    lines = [line.strip() for line in str(e.args[0] if e.args else e).splitlines() if line.strip()]
    raise ValueError(lines[-1] if lines else type(e).__name__) from None
  return loaded


def check_sections(config: ml_collections.ConfigDict) -> TrainConfig:
  """Builds every typed section of `config` as train.py does before reading data (trainer.config.sections());
  the first error is raised. Returns config.train, typed."""
  train = TrainConfig.from_dict(config.train)
  OptimConfig.for_run(config.optim, train.num_steps or UNKNOWN_STEPS)
  ModelConfig.from_dict(config.model)
  DataConfig.from_dict(config.data)
  EvalConfig.from_config(config)
  MeshConfig.from_dict(config.mesh)
  DistributedConfig.from_dict(config.get('distributed'))
  DistillConfig.from_dict(config.get('distill'))
  return train


def cell_args(spec: Spec, assignment: Sequence[tuple[str, str]], seed: int | None) -> list[str]:
  """A cell's --config arguments: its values, its seed, then the user's overrides (as in `command`)."""
  seed_arg = [f'--config.{SEED_FIELD}={seed}'] if seed is not None else []
  return [*(f'--config.{f}={v}' for f, v in assignment), *seed_arg, *spec.overrides]


def cell_config(spec: Spec, cell: Cell) -> ml_collections.ConfigDict:
  return load_config(spec.config, cell_args(spec, cell.assignment, cell.seed))


def command(spec: Spec, cell: Cell) -> list[str]:
  """The cell's train.py command line: exactly what the sweep runs (and --print_commands prints)."""
  return [sys.executable, str(TRAIN_PY), '--config', spec.config, '--workdir', str(cell.workdir),
          *cell_args(spec, cell.assignment, cell.seed)]


def variants(spec: Spec) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
  """(folder name, assignment) of every point of the grid, the first axis varying slowest."""
  leaves = [a.field.rsplit('.', 1)[-1] for a in spec.axes]
  labels = [leaf if leaves.count(leaf) == 1 else a.field for leaf, a in zip(leaves, spec.axes)]
  out, seen = [], {}
  for values in itertools.product(*(a.values for a in spec.axes)):
    name = ','.join(f'{label}={re.sub(r"[^A-Za-z0-9._+-]", "_", v)}' for label, v in zip(labels, values))
    name = name or 'base'
    if name in seen:
      raise SweepError(f'--sweep values {seen[name]} and {list(values)} both make the folder name {name!r}; '
                       'values that differ only in characters other than letters, digits and ._+- cannot be told '
                       'apart')
    seen[name] = list(values)
    out.append((name, tuple(zip((a.field for a in spec.axes), values))))
  return out


def cells(spec: Spec, workdir: Path) -> list[Cell]:
  """Every cell, seed-major: every variant's first seed runs before any second seed."""
  return [Cell(name, assignment, seed, workdir / name / f'seed_{seed}')
          for seed in spec.seeds for name, assignment in variants(spec)]


def plan(spec: Spec, workdir: Path) -> list[PlannedCell]:
  """Every cell of the sweep with its config checked (each axis value alone first, so an error names its
  --sweep); nothing is read, compiled or written."""
  for axis in spec.axes:
    parsed: dict[str, str] = {}
    for value in axis.values:
      try:
        config = load_config(spec.config, cell_args(spec, [(axis.field, value)], None))
        check_sections(config)
      except (ValueError, TypeError) as e:
        raise SweepError(f'--sweep {axis}: {_one_line(e)}') from None  # the message names the field and value
      key = repr(config_value(config, axis.field))
      if key in parsed:
        raise SweepError(f'--sweep {axis}: {parsed[key]!r} and {value!r} are the same value ({key}); give each once')
      parsed[key] = value
  out = []
  for cell in cells(spec, workdir):
    try:
      train = check_sections(cell_config(spec, cell))
    except (ValueError, TypeError) as e:
      sweeps = ' --sweep '.join(map(str, spec.axes))
      raise SweepError(f'--sweep {sweeps}: the cell {cell.name}: {_one_line(e)}') from None
    out.append(PlannedCell(cell, train.num_steps))
  return out


def config_value(config: ml_collections.ConfigDict, field: str) -> Any:
  for key in field.split('.'):
    config = config[key]
  return config


def _one_line(error: BaseException) -> str:
  return ' '.join(str(error).split('\n')) or type(error).__name__


def read_spec(workdir: Path) -> Spec:
  path = workdir / SWEEP_JSON
  if not path.is_file():
    raise FileNotFoundError(f'{workdir}: no {SWEEP_JSON}, so not a sweep workdir (sweep.py --workdir writes it)')
  try:
    return Spec.from_json(json.loads(path.read_text()))
  except (ValueError, KeyError, TypeError) as e:
    raise SweepError(f'{path}: unreadable ({_one_line(e)}); restore it, or start the sweep in another '
                     '--workdir') from None


def save_spec(spec: Spec, workdir: Path) -> None:
  """Writes <workdir>/sweep.json, or checks that the one there is `spec` (naming what differs)."""
  path = workdir / SWEEP_JSON
  if path.exists():
    saved, given = read_spec(workdir).to_json(), spec.to_json()
    diffs = [f'{key} {saved[key]} there, {given[key]} here' for key in given if saved[key] != given[key]]
    if diffs:
      raise SweepError(f'{path} holds another sweep: {"; ".join(diffs)}. Rerun with the same spec, or give another '
                       '--workdir')
    return
  if workdir.is_dir() and any(workdir.iterdir()):
    raise SweepError(f'--workdir={workdir} holds files but no {SWEEP_JSON}: not a sweep workdir; give another '
                     '--workdir')
  workdir.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(spec.to_json(), indent=2) + '\n')
