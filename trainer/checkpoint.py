"""Checkpoints of a training run: the sharded train state, the data iterator position(s) and the config.

One orbax `CheckpointManager` over `<workdir>/checkpoints`; a checkpoint is a folder per step:

  <workdir>/checkpoints/<step>/
    state/           the train state, any pytree of jax.Arrays (a dict, a flax struct, optax states):
                     PyTreeCheckpointHandler (OCDBT + zarr3), every process writes the shards it owns
    data_iterator/   process_<p>-of-<P>.json: process p's `InputIterator.get_state()`, one file per process
    config/          config.json (exact; what `restore` returns) and config.txt (str(ConfigDict), for people)
    metrics/         the step's eval metrics, only when they hold the tracked (best-by) metric
  <step>.orbax-checkpoint-tmp/   a save in flight, or one killed mid-write
  <step>.corrupt/                a step found damaged on resume, set aside (never deleted; `.corrupt.<n>` if taken)

Never half-written: orbax writes every item under the tmp folder and renames it to `<step>` only once all
processes have finished (the commit). Tmp folders are not steps: `latest_step`, `restore` and retention
never see them, and a writable `Checkpointer` removes leftovers of a killed run when it opens the workdir.

Saves are asynchronous: `save` returns once the arrays are copied off the devices (so the caller may donate
or overwrite them at once); the write and the commit run in a background thread. The next `save`,
`restore` and `close` wait for it; call `wait_until_finished` (or `close`) before the process exits.

Damage (a truncated or missing tensor file, bad or missing metadata, an empty config.json, a missing iterator
file) makes `restore` raise DamagedCheckpointError, one line naming the step's folder and the file. `resume`, the
run's restore, sets such a step aside (renames it `<step>.corrupt`) and walks back to the previous good one; with
none left it raises NoGoodCheckpointError. `python -m trainer.checkpoint verify <workdir>` reads every step as a
restore would (trainer/verify.py).

A save that fails in the background (disk full, permission denied) raises CheckpointSaveError, one line naming
the step, the folder, the cause and the last good step, from `check_for_errors` (the loop calls it after every
step), the next `save`, `wait_until_finished` or `close`. The previous checkpoints stay: retention deletes old
steps only once a save has committed.

Restoring onto another mesh or device count: `restore` takes a TARGET tree of `jax.ShapeDtypeStruct`s
with `sharding=` (e.g. `jax.eval_shape` of the sharded init); each process reads the pieces its devices
need. Data iterator states are per process and are restored only by a run with the same process count
(process p gets file p); with another count, pass `restore_data_iterator=False` and start the pipeline
afresh. Configs go through JSON, so tuples come back as lists.

In the training loop (every process runs the same calls):

  ckpt = Checkpointer(workdir, config=config, save_every=config.train.checkpoint_every, keep=config.train.keep,
                      best_metric='loss', best_mode='min')   # save(metrics=) holds the eval 'loss'
  ckpt.check_config(config)                 # ConfigMismatchError if the workdir was written by another config
  abstract_state = jax.eval_shape(sharded_init, rng)   # ShapeDtypeStructs carrying this mesh's shardings
  restored = ckpt.resume(abstract_state)    # the latest good step (damaged ones set aside), None if none
  if restored is not None:                  # resume: the state and this process's iterator position
    state, start = restored.state, restored.step
    iterator.set_state(restored.data_iterator)
  else:
    state, start = sharded_init(rng), 0
    if config.train.init_from:              # fine-tune: the parameters of another run, nothing else
      state = state.replace(params=restore_params(config.train.init_from, abstract_state.params))
  for step in range(start + 1, num_steps + 1):
    state, metrics = train_step(state, next(iterator), rng)
    ckpt.check_for_errors()                 # CheckpointSaveError as soon as a background save has failed
    ckpt.save(step, state, data_iterator=iterator.get_state(), metrics=eval_metrics_of_this_step,
              force=step == num_steps)      # every save_every steps, and the last one
  ckpt.close()                              # waits for the write in flight
"""

from __future__ import annotations

import dataclasses
import errno
import fnmatch
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from core.paths import user_path
from model.config import EXECUTION_FIELDS

PyTree = Any
StepSpec = int | Literal['latest', 'best']

CHECKPOINT_SUBDIR = 'checkpoints'
STATE, DATA_ITERATOR, CONFIG = 'state', 'data_iterator', 'config'

# Config fields that may differ between the run that wrote a workdir and the run that resumes it: they
# change how long, how often or where the run goes, not what it computes (fnmatch patterns, dotted paths).
RUNTIME_FIELDS: tuple[str, ...] = (
    'train.num_steps', 'train.num_epochs', 'train.log_every', 'train.eval_every', 'train.eval_batches',
    'train.checkpoint_every', 'train.keep',
    'train.logits_chunk',  # how the same loss is computed (trainer/losses.projected_cross_entropy_sums)
    'train.compilation_cache',  # where compiled programs are kept
    'mesh.*', 'data.worker_count', 'data.data_dir', 'eval.*', *(f'model.{f}' for f in EXECUTION_FIELDS),
)

_PROCESS_FILE = re.compile(r'^process_(\d+)-of-(\d+)\.json$')


# ----------------------------------------------------------------------------------------------------
# Item handlers. orbax's JsonCheckpointHandler writes on the primary process only, so per-process
# iterator states need their own handler; the config gets one to add the human-readable copy.

def _write_text(path: epath.Path, text: str) -> None:
  """The one place items' small files are written (a seam for the tests' slow and crashing writes)."""
  path.write_text(text)


def _process_file(index: int, count: int) -> str:
  return f'process_{index}-of-{count}.json'


class _FilesHandler(ocp.AsyncCheckpointHandler):
  """An item of small text files: `files(item)` names those this process writes."""

  def files(self, item: Mapping[str, Any]) -> dict[str, str]:
    raise NotImplementedError

  async def async_save(self, directory: epath.Path, args: ProcessJsonSave | ConfigSave) -> list[ocp.future.Future]:
    files = self.files(args.item)  # serialised now: a value JSON cannot hold fails in the caller's thread

    async def write() -> None:
      for name, text in files.items():
        _write_text(directory / name, text)

    # Runs in the background commit thread, once the tmp folders exist on every process.
    return [ocp.future.CommitFutureAwaitingContractedSignals(write(), name=type(self).__name__)]

  def save(self, directory: epath.Path, args: ProcessJsonSave | ConfigSave) -> None:
    for name, text in self.files(args.item).items():
      _write_text(directory / name, text)

  def metadata(self, directory: epath.Path) -> None:
    return None

  def finalize(self, directory: epath.Path) -> None:
    pass

  def close(self) -> None:
    pass


class ProcessJsonHandler(_FilesHandler):
  """Each process writes its own JSON dict (`process_<p>-of-<P>.json`) and restores its own."""

  def files(self, item: Mapping[str, Any]) -> dict[str, str]:
    return {_process_file(jax.process_index(), jax.process_count()): json.dumps(dict(item), indent=2, sort_keys=True)}

  def restore(self, directory: epath.Path, args: ProcessJsonRestore | None = None) -> dict[str, Any]:
    count = jax.process_count()
    path = directory / _process_file(jax.process_index(), count)
    if not path.exists():
      counts = sorted({int(m.group(2)) for p in directory.iterdir() if (m := _PROCESS_FILE.match(p.name))})
      if not counts or count in counts:  # the other processes' files are there: this one was lost
        raise DamagedCheckpointError(directory.parent, f'{DATA_ITERATOR}/{path.name} is missing')
      raise ProcessCountError(
          f'{directory} holds the data iterator states of {counts} processes, this run has {count}: '
          f'resume with that many processes, or restore with restore_data_iterator=False to restart the '
          f'input pipeline from its beginning')
    return _read_json(path, directory.parent)


@ocp.args.register_with_handler(ProcessJsonHandler, for_save=True)
@dataclasses.dataclass
class ProcessJsonSave(ocp.args.CheckpointArgs):
  item: Mapping[str, Any]


@ocp.args.register_with_handler(ProcessJsonHandler, for_restore=True)
@dataclasses.dataclass
class ProcessJsonRestore(ocp.args.CheckpointArgs):
  pass


class ConfigHandler(_FilesHandler):
  """The config as `config.json` (restored) and `config.txt` (YAML-like, for people), by process 0."""

  def files(self, item: Mapping[str, Any]) -> dict[str, str]:
    if jax.process_index() != 0:
      return {}
    return {'config.json': json.dumps(item, indent=2, sort_keys=True),
            'config.txt': str(ml_collections.ConfigDict(item))}

  def restore(self, directory: epath.Path, args: ConfigRestore | None = None) -> dict[str, Any]:
    return _read_json(directory / 'config.json', directory.parent)


@ocp.args.register_with_handler(ConfigHandler, for_save=True)
@dataclasses.dataclass
class ConfigSave(ocp.args.CheckpointArgs):
  item: Mapping[str, Any]  # JSON-able (config_to_json)


@ocp.args.register_with_handler(ConfigHandler, for_restore=True)
@dataclasses.dataclass
class ConfigRestore(ocp.args.CheckpointArgs):
  pass


# ----------------------------------------------------------------------------------------------------
# Damage: what makes a committed step unreadable, in one line.

class DamagedCheckpointError(ValueError):
  """A committed checkpoint that cannot be read; `reason` names the file and what is wrong with it."""

  def __init__(self, step_dir: epath.PathLike, reason: str) -> None:
    super().__init__(f'checkpoint {step_dir} is damaged: {reason}')
    self.step_dir, self.reason = epath.Path(step_dir), reason


class ProcessCountError(ValueError):
  """A checkpoint's data iterator states are those of another number of processes (not damage)."""


class NoGoodCheckpointError(RuntimeError):
  """Every checkpoint of a workdir is damaged (and set aside)."""


class CheckpointSaveError(RuntimeError):
  """A save failed (often in the background): the message names the step, the folder, the cause, the fix."""


CORRUPT_SUFFIX = '.corrupt'
_STEP_METADATA = '_CHECKPOINT_METADATA'  # orbax writes it with every committed step: its items
_MAX_REASON = 240
# orbax's barriers between processes are named '<prefix>_<what>'; `resume` meets one a failed restore skipped.
_BARRIER_PREFIX = 'trainer_checkpoint'


def _read_json(path: epath.Path, step_dir: epath.Path) -> Any:
  """A small JSON file of a checkpoint; DamagedCheckpointError if it is missing, empty or does not parse."""
  name = path.relative_to(step_dir).as_posix()
  try:
    text = path.read_text()
  except FileNotFoundError:
    raise DamagedCheckpointError(step_dir, f'{name} is missing') from None
  except (OSError, UnicodeDecodeError) as e:
    raise DamagedCheckpointError(step_dir, f'{name} cannot be read: {e}') from None
  if not text.strip():
    raise DamagedCheckpointError(step_dir, f'{name} is empty')
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise DamagedCheckpointError(step_dir, f'{name} is not valid JSON ({e})') from None


def check_files(step_dir: epath.PathLike) -> None:
  """Raises DamagedCheckpointError if a committed step's small files (orbax's step and tree metadata, the
  config, every process's iterator state) are missing or unreadable. Reads no array data."""
  step_dir = epath.Path(step_dir)
  items = _read_json(step_dir / _STEP_METADATA, step_dir).get('item_handlers') or {}
  for item in items:
    if not (step_dir / item).is_dir():
      raise DamagedCheckpointError(step_dir, f'{item}/ is missing')
  if STATE in items:
    _read_json(step_dir / STATE / '_METADATA', step_dir)
  if CONFIG in items:
    _read_json(step_dir / CONFIG / 'config.json', step_dir)
  if DATA_ITERATOR in items:
    folder = step_dir / DATA_ITERATOR
    found = {(int(m.group(1)), int(m.group(2))) for p in folder.iterdir() if (m := _PROCESS_FILE.match(p.name))}
    if not found:
      raise DamagedCheckpointError(step_dir, f'{DATA_ITERATOR}/ is empty (no process_<p>-of-<P>.json)')
    for count in {c for _, c in found}:  # each process count present must have all its files
      for index in range(count):
        _read_json(folder / _process_file(index, count), step_dir)


# tensorstore's errors: 'OUT_OF_RANGE: Error opening ... local file "<path>": <detail> [tensorstore_spec=...]'
_TS_ERROR = re.compile(r'^(DATA_LOSS|OUT_OF_RANGE|NOT_FOUND|FAILED_PRECONDITION|INVALID_ARGUMENT|UNKNOWN): (.*)',
                       re.DOTALL)
_TS_FILE = re.compile(r'local file "([^"]+)"(?::\s*)?')


def _chain(error: BaseException) -> list[BaseException]:
  out: list[BaseException] = []
  while error is not None and error not in out:
    out.append(error)
    error = error.__cause__ or error.__context__
  return out


def _short(text: str) -> str:
  line = ' '.join(text.split(' [tensorstore_spec')[0].split())
  return line if len(line) <= _MAX_REASON else line[:_MAX_REASON - 3] + '...'


def damage_reason(step_dir: epath.PathLike, error: BaseException) -> str | None:
  """The one-line reason why reading `step_dir` failed with `error` if that is damage of its files (a
  truncated or missing tensor file, a bad manifest, a file that does not parse), else None (e.g. a target
  that does not match: the caller's error, raised as it is)."""
  step_dir = epath.Path(step_dir)
  for e in _chain(error):
    if isinstance(e, DamagedCheckpointError):
      return e.reason
    if isinstance(e, ProcessCountError):
      return None
    if isinstance(e, (json.JSONDecodeError, UnicodeDecodeError)):
      return _short(f'a file does not parse: {e}')
    if isinstance(e, OSError):
      name = e.filename and os.path.relpath(e.filename, step_dir)
      return _short(f'{name}: {e.strerror or e}' if name else str(e))
    if isinstance(e, ValueError) and (match := _TS_ERROR.match(str(e))):
      code, message = match.groups()
      message = message.split(' [tensorstore_spec')[0]
      files = [m for m in _TS_FILE.finditer(message) if m.group(1).startswith(str(step_dir))]
      if not files:
        continue
      name, detail = os.path.relpath(files[-1].group(1), step_dir), message[files[-1].end():].strip()
      if detail:  # what tensorstore found wrong with the last file it names
        return _short(f'{name}: {detail}')
      return _short(f'{name} is missing' if code == 'NOT_FOUND' else f'{name}: {code}')
  return None


def _is_closed_loop(error: BaseException | None) -> bool:
  return isinstance(error, RuntimeError) and str(error) == 'Event loop is closed'


def _quiet_closed_loop_callbacks() -> None:
  """After a failed read or write, tensorstore completes the other reads or writes of the operation whose
  asyncio loop has closed: each prints a 'RuntimeError: Event loop is closed' traceback, through
  sys.unraisablehook (restores) or sys.excepthook (saves; a full disk: ~90 of them). Those, and only those, are
  dropped (installed once, by the first Checkpointer, for the rest of the process)."""
  if getattr(sys.unraisablehook, 'drops_closed_loop_callbacks', False):
    return
  unraisable_hook, except_hook = sys.unraisablehook, sys.excepthook

  def on_unraisable(unraisable: Any) -> None:
    if not _is_closed_loop(unraisable.exc_value):
      unraisable_hook(unraisable)

  def on_exception(kind: type[BaseException], error: BaseException, trace: Any) -> None:
    if not _is_closed_loop(error):
      except_hook(kind, error, trace)

  on_unraisable.drops_closed_loop_callbacks = True
  sys.unraisablehook, sys.excepthook = on_unraisable, on_exception


def save_cause(error: BaseException) -> str:
  """A failed save's cause in one line: '[Errno 28] No space left on device' when an OS error is behind it."""
  for e in _chain(error):
    if isinstance(e, OSError) and e.errno:
      return f'[Errno {e.errno}] {e.strerror or os.strerror(e.errno)}'
    if match := re.search(r"os_error_code='(\d+)'", str(e)):  # tensorstore's write errors
      code = int(match.group(1))
      return f'[Errno {code}] {os.strerror(code)}'
  return _short(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)


def _save_errno(error: BaseException) -> int | None:
  for e in _chain(error):
    if isinstance(e, OSError) and e.errno:
      return e.errno
    if match := re.search(r"os_error_code='(\d+)'", str(e)):
      return int(match.group(1))
  return None


# ----------------------------------------------------------------------------------------------------
# Configs.

class ConfigMismatchError(ValueError):
  """A workdir holds checkpoints of a different config."""


def config_to_json(config: ml_collections.ConfigDict | Mapping[str, Any]) -> dict[str, Any]:
  """The config as plain JSON types (tuples become lists), as it is saved and compared."""
  try:
    text = (config.to_json(sort_keys=True) if isinstance(config, ml_collections.ConfigDict)
            else json.dumps(dict(config), sort_keys=True))
  except TypeError as e:
    raise TypeError(f'the config must hold only JSON-able values to be checkpointed: {e}') from e
  return json.loads(text)


def _flatten(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  out: dict[str, Any] = {}
  for key, value in tree.items():
    path = f'{prefix}{key}'
    if isinstance(value, Mapping) and value:
      out.update(_flatten(value, path + '.'))
    else:
      out[path] = value
  return out


def _same(a: Any, b: Any) -> bool:
  # NaN == NaN here: the same config written twice is the same config.
  nan = lambda x: isinstance(x, float) and math.isnan(x)  # noqa: E731
  return a == b or (nan(a) and nan(b))


_MISSING = '<absent>'


def config_differences(saved: Mapping[str, Any], config: ml_collections.ConfigDict | Mapping[str, Any],
                       allowed: Iterable[str] = RUNTIME_FIELDS,
                       defaults: Mapping[str, Mapping[str, Any]] | None = None) -> list[tuple[str, Any, Any]]:
  """(dotted field, saved value, new value) for every field that differs and is not `allowed`. `defaults`
  ({section: {field: default}}) stand in for the fields a saved config lacks: a config saved before a
  field existed was run with its default."""
  saved = config_to_json(saved)
  for section, values in config_to_json(defaults or {}).items():
    saved[section] = values | saved.get(section, {})
  old, new = _flatten(saved), _flatten(config_to_json(config))
  allowed = tuple(allowed)
  diffs = []
  for path in sorted(old.keys() | new.keys()):
    a, b = old.get(path, _MISSING), new.get(path, _MISSING)
    if not _same(a, b) and not any(fnmatch.fnmatchcase(path, pattern) for pattern in allowed):
      diffs.append((path, a, b))
  return diffs


def check_config(saved: Mapping[str, Any], config: ml_collections.ConfigDict | Mapping[str, Any], *,
                 allowed: Iterable[str] = RUNTIME_FIELDS, where: str = 'the workdir',
                 defaults: Mapping[str, Mapping[str, Any]] | None = None) -> None:
  """Raises ConfigMismatchError naming every field of `config` that differs from `saved` (the config of a
  checkpoint), apart from the runtime fields `allowed` to change on resume; see config_differences."""
  diffs = config_differences(saved, config, allowed, defaults)
  if diffs:
    lines = '\n'.join(f'  {path}: saved {a!r}, now {b!r}' for path, a, b in diffs)
    raise ConfigMismatchError(
        f'{where} holds a different config; these fields differ:\n{lines}\n'
        f'Use a new workdir, or set them back (fields free to change on resume: {", ".join(allowed)})')


# ----------------------------------------------------------------------------------------------------
# The checkpointer.

@dataclasses.dataclass(frozen=True)
class Restored:
  """What `Checkpointer.restore` returns. `data_iterator` is this process's state; None when the
  checkpoint has none or it was not asked for. `config` is None when the checkpoint has none."""

  step: int
  state: PyTree
  data_iterator: dict[str, Any] | None
  config: ml_collections.ConfigDict | None


def checkpoint_dir(workdir: epath.PathLike) -> epath.Path:
  """Where a workdir's checkpoints live, as an absolute path (orbax refuses relative ones); a path that
  already is a checkpoint folder is kept as it is."""
  path = epath.Path(user_path(workdir))
  return path if path.name == CHECKPOINT_SUBDIR else path / CHECKPOINT_SUBDIR


def _check_target(target: PyTree) -> None:
  """Every leaf needs a sharding: without one orbax restores a host numpy array, silently."""
  missing = [jax.tree_util.keystr(path) for path, leaf in jax.tree_util.tree_leaves_with_path(target)
             if getattr(leaf, 'sharding', None) is None]
  if missing:
    raise ValueError(f'restore target leaves need a sharding (jax.ShapeDtypeStruct(shape, dtype, '
                     f'sharding=...)); {len(missing)} have none: {missing[:5]}{" ..." if len(missing) > 5 else ""}')


def _restore_args(target: PyTree, partial: bool = False) -> ocp.args.PyTreeRestore:
  _check_target(target)
  return ocp.args.PyTreeRestore(item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                                partial_restore=partial)


class Checkpointer:
  """Saves and restores a run's checkpoints under `<workdir>/checkpoints` (see the module docstring).

  Every process of a run creates one and calls the same methods in the same order (orbax synchronises
  them). Retention keeps the last `keep` checkpoints and, with `best_metric`, also the single best one
  by that metric (`best_mode` 'min' or 'max'); a checkpoint saved without the metric is never the best.

  Args:
    workdir: the run's folder (or directly its checkpoint folder).
    config: saved with every checkpoint; None saves none.
    save_every: `should_save(step)` is True for positive multiples of it (None: only forced saves);
      a preemption notice from JAX's preemption service also triggers a save.
    keep: how many of the latest checkpoints to keep (None: all).
    best_metric, best_mode: the metric (a key of `save(metrics=...)`) whose best checkpoint is kept.
    async_save: write in the background (the default); False blocks in `save` until committed.
    read_only: for evaluation and `init_from`: no writes, no clean-up of the folder.
  """

  def __init__(self, workdir: epath.PathLike, *, config: ml_collections.ConfigDict | Mapping[str, Any] | None = None,
               save_every: int | None = None, keep: int | None = 3, best_metric: str | None = None,
               best_mode: Literal['min', 'max'] = 'min', async_save: bool = True, read_only: bool = False) -> None:
    if save_every is not None and save_every < 1:
      raise ValueError(f'train.checkpoint_every={save_every}: must be a positive integer (or None)')
    if keep is not None and keep < 1:
      raise ValueError(f'train.keep={keep}: must keep at least 1 checkpoint (or None for all)')
    if best_mode not in ('min', 'max'):
      raise ValueError(f'best_mode={best_mode!r}: must be "min" or "max"')
    self._config = None if config is None else config_to_json(config)  # fails now, not mid-run
    self._read_only = read_only
    _quiet_closed_loop_callbacks()  # a failed save or restore's tensorstore callbacks print tracebacks otherwise
    self._best_metric = best_metric
    self._pending_step: int | None = None
    policies = ocp.checkpoint_managers
    # Not orbax's default save policy: it also saves the first step it sees (InitialSavePolicy).
    save_policies: list[Any] = [policies.PreemptionCheckpointingPolicy()]
    if save_every is not None:
      save_policies.append(policies.FixedIntervalPolicy(save_every))
    # Not max_to_keep + best_fn: orbax would then keep the `keep` best, not the last `keep` and the best.
    keep_policies: list[Any] = [policies.LatestN(n=keep)]
    best_fn = None
    if best_metric is not None:
      best_fn = lambda metrics: metrics[best_metric]  # noqa: E731 (metrics always hold it, see save)
      keep_policies.append(policies.BestN(get_metric_fn=best_fn, reverse=best_mode == 'min', n=1,
                                          keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        save_decision_policy=policies.AnySavePolicy(save_policies),
        preservation_policy=policies.AnyPreservationPolicy(keep_policies),
        best_fn=best_fn, best_mode=best_mode,  # best_fn also makes orbax write and reload the metrics
        enable_async_checkpointing=async_save, read_only=read_only,
        cleanup_tmp_directories=not read_only, create=not read_only,
        multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=_BARRIER_PREFIX))
    self._manager = ocp.CheckpointManager(checkpoint_dir(workdir), options=options)

  @property
  def directory(self) -> epath.Path:
    return self._manager.directory

  def should_save(self, step: int) -> bool:
    """True at positive multiples of `save_every` (and on a preemption notice), unless already saved."""
    return step > 0 and self._manager.should_save(step)

  def save(self, step: int, state: PyTree, *, data_iterator: Mapping[str, Any] | None = None,
           metrics: Mapping[str, Any] | None = None, force: bool = False) -> bool:
    """Starts saving `state` (jax.Arrays), this process's iterator state and the config as `step`.

    Returns whether a save started: False when `should_save(step)` is False (unless `force`, e.g. at the
    end of training) or when `step` is already saved. The state may be donated or overwritten as soon as
    this returns. `metrics` (e.g. eval results) are kept with the checkpoint when they hold `best_metric`
    with a finite value; otherwise the checkpoint takes no part in the best-by-metric retention.
    """
    if not (force or self.should_save(step)):
      return False
    self.wait_until_finished()  # the previous save's failure is reported as that step's
    if step in self._manager.all_steps():
      logging.info('checkpoint of step %d already saved in %s', step, self.directory)
      return False
    items: dict[str, ocp.args.CheckpointArgs] = {STATE: ocp.args.PyTreeSave(state)}
    if data_iterator is not None:
      items[DATA_ITERATOR] = ProcessJsonSave(dict(data_iterator))
    if self._config is not None:
      items[CONFIG] = ConfigSave(self._config)
    try:
      saved = self._manager.save(step, args=ocp.args.Composite(**items), metrics=self._tracked(metrics), force=True)
    except Exception as e:  # the synchronous part (e.g. creating the tmp folder) met a full or read-only disk
      if _save_errno(e) is None:
        raise
      raise self._save_error(step, e) from e
    if saved:
      self._pending_step = step
    return saved

  def _tracked(self, metrics: Mapping[str, Any] | None) -> dict[str, float] | None:
    if self._best_metric is None or metrics is None or self._best_metric not in metrics:
      return None
    value = float(metrics[self._best_metric])
    if not math.isfinite(value):  # a diverged eval is never the best
      return None
    return {k: float(v) for k, v in metrics.items() if _is_finite_scalar(v)}

  def wait_until_finished(self) -> None:
    """Blocks until the save in flight (if any) is committed; CheckpointSaveError if it failed."""
    step, self._pending_step = self._pending_step, None
    try:
      self._manager.wait_until_finished()
    except Exception as e:
      raise self._save_error(step, e) from e

  def check_for_errors(self) -> None:
    """CheckpointSaveError if the save in flight has failed; returns at once while it is still writing (the
    training loop calls this after every step, so that a full disk stops the run before the next save)."""
    if self._pending_step is not None and not self._manager.is_saving_in_progress():
      self.wait_until_finished()  # finished: returns at once, or raises its error

  def _save_error(self, step: int | None, error: BaseException) -> CheckpointSaveError:
    """One line: the step, the folder, the cause, the last good step and what to do."""
    # From the folder, not orbax's list: that already dropped the steps retention meant to delete after this save.
    good = sorted(int(p.name) for p in self.directory.iterdir() if p.name.isdigit() and int(p.name) != step)
    code = _save_errno(error)
    if code in (errno.ENOSPC, errno.EDQUOT):
      fix = 'free space'
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
      fix = f'make {self.directory} writable'
    else:
      fix = 'fix the cause'
    if good:
      then = f'the last good checkpoint is step {good[-1]}: {fix} and rerun the same command to resume'
    else:
      then = f'no checkpoint was saved before it: {fix} and rerun the same command to start again'
    return CheckpointSaveError(f'saving step {step} to {self.directory} failed: {save_cause(error)}; {then}')

  def all_steps(self) -> list[int]:
    """Committed steps, oldest first."""
    steps = list(self._manager.all_steps())
    if self._pending_step in steps and self._manager.is_saving_in_progress():
      steps.remove(self._pending_step)  # orbax lists a step as soon as its save starts
    return steps

  def latest_step(self) -> int | None:
    """The latest committed step (a save still in flight is not one), or None."""
    steps = self.all_steps()
    return steps[-1] if steps else None

  def best_step(self) -> int | None:
    """The step with the best `best_metric`, or None (no metric tracked, or no checkpoint has it).
    Waits for a save in flight, which may be the best."""
    if self._best_metric is None:
      return None
    self._commit_pending()
    return self._manager.best_step()

  def _commit_pending(self) -> None:
    if self._pending_step is not None:
      self.wait_until_finished()

  def _resolve(self, step: StepSpec) -> int:
    self._commit_pending()
    if step == 'latest':
      resolved = self.latest_step()
    elif step == 'best':
      resolved = self.best_step()
    elif isinstance(step, int) and step in self.all_steps():
      resolved = step
    else:
      raise FileNotFoundError(f'no checkpoint of step {step!r} in {self.directory}; steps: {self.all_steps()}')
    if resolved is None:
      what = f'with metric {self._best_metric!r}' if step == 'best' else 'committed'
      raise FileNotFoundError(f'no checkpoint {what} in {self.directory}')
    return resolved

  def resolve_step(self, step: StepSpec = 'latest') -> int:
    """The step number that `step` ('latest', 'best' or a number) names, or an error naming what exists."""
    return self._resolve(step)

  def _has_item(self, step: int, name: str) -> bool:
    return (self.directory / str(step) / name).exists()

  def _read(self, step: int, items: Mapping[str, ocp.args.CheckpointArgs]) -> Any:
    """orbax's restore of `items` of `step`; DamagedCheckpointError (one line) if its files are damaged."""
    step_dir = self.directory / str(step)
    check_files(step_dir)
    try:
      return self._manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:
      reason = damage_reason(step_dir, e)
      if reason is None:
        raise
      logging.info('reading %s failed', step_dir, exc_info=e)  # the full error, for `--verbosity=0`
      raise DamagedCheckpointError(step_dir, reason) from None

  def restore(self, target: PyTree, step: StepSpec = 'latest', *, restore_data_iterator: bool = True) -> Restored:
    """The checkpoint of `step` ('latest', 'best' or a number) onto `target`'s structure and shardings.

    `target` is the train state as abstract arrays, `jax.ShapeDtypeStruct(shape, dtype, sharding=...)`
    (or concrete arrays, whose shardings are used): the mesh and device count may differ from the run
    that saved it. Each process gets its own data iterator state (same process count needed, else
    ProcessCountError). A step whose files are damaged raises DamagedCheckpointError.
    """
    step = self._resolve(step)
    items: dict[str, ocp.args.CheckpointArgs] = {STATE: _restore_args(target)}
    if restore_data_iterator and self._has_item(step, DATA_ITERATOR):
      items[DATA_ITERATOR] = ProcessJsonRestore()
    if self._has_item(step, CONFIG):
      items[CONFIG] = ConfigRestore()
    restored = self._read(step, items)
    config = restored.get(CONFIG)
    return Restored(step=step, state=restored[STATE], data_iterator=restored.get(DATA_ITERATOR),
                    config=None if config is None else ml_collections.ConfigDict(config))

  def restore_params(self, target: PyTree, step: StepSpec = 'latest', *, key: str = 'params') -> PyTree:
    """Only the subtree `key` of the saved state (the parameters, not the optimizer state) onto `target`
    (abstract arrays with shardings); what else the checkpoint holds is not read."""
    step = self._resolve(step)
    return self._read(step, {STATE: _restore_args({key: target}, partial=True)})[STATE][key]

  def saved_config(self, step: StepSpec = 'latest') -> ml_collections.ConfigDict | None:
    """The config saved with a checkpoint (None if it has none); no arrays are read."""
    step = self._resolve(step)
    if not self._has_item(step, CONFIG):
      return None
    return ml_collections.ConfigDict(self._read(step, {CONFIG: ConfigRestore()})[CONFIG])

  def resume(self, target: PyTree, *, report: Callable[[str], None] = print) -> Restored | None:
    """What a run resumes from: `restore(target)` of the latest step that reads, or None in a new workdir.

    A damaged step (DamagedCheckpointError) is reported in one line and set aside, renamed `<step>.corrupt`
    (by process 0; never deleted), and the previous step is tried. NoGoodCheckpointError if none reads,
    or if the workdir holds only steps set aside earlier. Several processes: every process attempts each
    step and they agree; a step that fails on any process is set aside. A read-only Checkpointer skips
    damaged steps without renaming them.
    """
    self._commit_pending()
    set_aside: list[str] = []
    for step in reversed(self.all_steps()):
      restored, reason = self._attempt(step, target)
      if restored is not None:
        return restored
      set_aside.append(self._set_aside(step, reason, report))
    if not set_aside:
      set_aside = [p.name for p in self._set_aside_folders()]
      if not set_aside:
        return None  # a new workdir
    raise NoGoodCheckpointError(
        f'no good checkpoint in {self.directory}: set aside as damaged: {"; ".join(set_aside)}. To start afresh, '
        f'use a new --workdir or move {self.directory} away; `python -m trainer.checkpoint verify '
        f'{self.directory.parent}` lists what it holds')

  def _attempt(self, step: int, target: PyTree) -> tuple[Restored | None, str]:
    """`restore(target, step)`, or None and why not; the same outcome on every process."""
    restored, reason = None, ''
    try:
      restored = self.restore(target, step)
    except DamagedCheckpointError as e:
      restored, reason = None, e.reason
      if jax.process_index() != 0:
        logging.warning('process %d: %s', jax.process_index(), e)
    if jax.process_count() > 1:
      if restored is None:  # orbax's restore ends in a barrier of all processes, which this one did not reach
        ocp.multihost.sync_global_processes(
            ocp.multihost.unique_barrier_key('Checkpointer:restore', prefix=_BARRIER_PREFIX))
      flags = multihost_utils.process_allgather(np.array([restored is None], np.int32))
      failed = [i for i, flag in enumerate(np.asarray(flags).reshape(-1)) if flag]
      if failed and restored is not None:
        restored, reason = None, f'unreadable on process(es) {failed}: see their log'
    return restored, reason

  def _set_aside_folders(self) -> list[epath.Path]:
    if not self.directory.exists():
      return []
    return sorted(p for p in self.directory.glob(f'*{CORRUPT_SUFFIX}*') if p.is_dir())

  def _set_aside(self, step: int, reason: str, report: Callable[[str], None]) -> str:
    """Renames the damaged `step` to `<step>.corrupt` (`.corrupt.<n>` if taken); its description."""
    step_dir = self.directory / str(step)
    if self._read_only:
      report(f'checkpoint step {step} in {step_dir} is damaged ({reason}); trying the previous step')
      return f'{step} ({reason})'
    new, n = self.directory / f'{step}{CORRUPT_SUFFIX}', 0
    while new.exists():
      n += 1
      new = self.directory / f'{step}{CORRUPT_SUFFIX}.{n}'
    if jax.process_count() > 1:  # every process has named it before process 0 renames it
      ocp.multihost.sync_global_processes(f'{_BARRIER_PREFIX}_naming_{step}')
    if jax.process_index() == 0:
      step_dir.rename(new)
    if jax.process_count() > 1:
      ocp.multihost.sync_global_processes(f'{_BARRIER_PREFIX}_set_aside_{step}')
    self._manager.reload()  # forget the step: saving it again must not be skipped as 'already saved'
    report(f'checkpoint step {step} in {step_dir} is damaged ({reason}); set aside as {new.name}, trying the '
           'previous step')
    return f'{step} -> {new.name} ({reason})'

  def check_config(self, config: ml_collections.ConfigDict | Mapping[str, Any], *,
                   allowed: Iterable[str] = RUNTIME_FIELDS,
                   defaults: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Raises ConfigMismatchError if the latest checkpoint's config differs from `config` in more than
    the `allowed` runtime fields. Nothing to check in an empty workdir. A step whose config is damaged is
    passed over for the one before it (`resume` sets it aside)."""
    for step in reversed(self.all_steps()):
      try:
        saved = self.saved_config(step)
      except DamagedCheckpointError:
        continue
      if saved is not None:
        check_config(saved.to_dict(), config, allowed=allowed, defaults=defaults,
                     where=f'{self.directory} (step {step})')
      return

  def close(self) -> None:
    """Waits for the save in flight and releases orbax's threads; CheckpointSaveError if that save failed."""
    step, self._pending_step = self._pending_step, None
    try:
      self._manager.close()
    except Exception as e:
      raise self._save_error(step, e) from e

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc: object) -> None:
    self.close()


def _is_finite_scalar(value: Any) -> bool:
  try:
    return math.isfinite(float(value))
  except (TypeError, ValueError):
    return False


def restore_params(path: epath.PathLike, target: PyTree, step: StepSpec = 'latest', *, key: str = 'params',
                   best_metric: str | None = None, best_mode: Literal['min', 'max'] = 'min') -> PyTree:
  """The parameters of another run's checkpoint (`config.init_from`, evaluation) onto `target`'s shardings.

  `path` is that run's workdir or its checkpoint folder; nothing in it changes. `step='best'` needs the
  run's `best_metric` and `best_mode`.
  """
  with Checkpointer(path, read_only=True, best_metric=best_metric, best_mode=best_mode) as ckpt:
    return ckpt.restore_params(target, step, key=key)


def abstract(tree: PyTree, shardings: PyTree | None = None) -> PyTree:
  """`jax.ShapeDtypeStruct`s of `tree`'s arrays, with `shardings` (a matching tree) or their own."""
  if shardings is None:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


if __name__ == '__main__':  # python -m trainer.checkpoint verify <workdir>: trainer/verify.py
  from trainer import verify  # pylint: disable=g-import-not-at-top
  sys.exit(verify.main(sys.argv[1:]))
