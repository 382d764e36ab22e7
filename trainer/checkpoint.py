"""Checkpoints of a training run: the sharded train state, the data iterator position(s) and the config.

One orbax `CheckpointManager` over `<workdir>/checkpoints`; a checkpoint is a folder per step:

  <workdir>/checkpoints/<step>/
    state/           the train state, any pytree of jax.Arrays (a dict, a flax struct, optax states):
                     PyTreeCheckpointHandler (OCDBT + zarr3), every process writes the shards it owns
    data_iterator/   process_<p>-of-<P>.json: process p's `InputIterator.get_state()`, one file per process
    config/          config.json (exact; what `restore` returns) and config.txt (str(ConfigDict), for people)
    metrics/         the step's eval metrics, only when they hold the tracked (best-by) metric
  <step>.orbax-checkpoint-tmp/   a save in flight, or one killed mid-write

Never half-written: orbax writes every item under the tmp folder and renames it to `<step>` only once all
processes have finished (the commit). Tmp folders are not steps: `latest_step`, `restore` and retention
never see them, and a writable `Checkpointer` removes leftovers of a killed run when it opens the workdir.

Saves are asynchronous: `save` returns once the arrays are copied off the devices (so the caller may donate
or overwrite them at once); the write and the commit run in a background thread. The next `save`,
`restore` and `close` wait for it; call `wait_until_finished` (or `close`) before the process exits.

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
  if ckpt.latest_step() is not None:        # resume: the state and this process's iterator position
    restored = ckpt.restore(abstract_state)
    state, start = restored.state, restored.step
    iterator.set_state(restored.data_iterator)
  else:
    state, start = sharded_init(rng), 0
    if config.train.init_from:              # fine-tune: the parameters of another run, nothing else
      state = state.replace(params=restore_params(config.train.init_from, abstract_state.params))
  for step in range(start + 1, num_steps + 1):
    state, metrics = train_step(state, next(iterator), rng)
    ckpt.save(step, state, data_iterator=iterator.get_state(), metrics=eval_metrics_of_this_step,
              force=step == num_steps)      # every save_every steps, and the last one
  ckpt.close()                              # waits for the write in flight
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

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
      raise ValueError(
          f'{directory} holds the data iterator states of {counts or "no"} processes, this run has {count}: '
          f'resume with that many processes, or restore with restore_data_iterator=False to restart the '
          f'input pipeline from its beginning')
    return json.loads(path.read_text())


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
    return json.loads((directory / 'config.json').read_text())


@ocp.args.register_with_handler(ConfigHandler, for_save=True)
@dataclasses.dataclass
class ConfigSave(ocp.args.CheckpointArgs):
  item: Mapping[str, Any]  # JSON-able (config_to_json)


@ocp.args.register_with_handler(ConfigHandler, for_restore=True)
@dataclasses.dataclass
class ConfigRestore(ocp.args.CheckpointArgs):
  pass


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
        cleanup_tmp_directories=not read_only, create=not read_only)
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
    if step in self._manager.all_steps():
      logging.info('checkpoint of step %d already saved in %s', step, self.directory)
      return False
    items: dict[str, ocp.args.CheckpointArgs] = {STATE: ocp.args.PyTreeSave(state)}
    if data_iterator is not None:
      items[DATA_ITERATOR] = ProcessJsonSave(dict(data_iterator))
    if self._config is not None:
      items[CONFIG] = ConfigSave(self._config)
    saved = self._manager.save(step, args=ocp.args.Composite(**items), metrics=self._tracked(metrics), force=True)
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
    """Blocks until the save in flight (if any) is committed; raises its error if it failed."""
    self._manager.wait_until_finished()
    self._pending_step = None

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

  def restore(self, target: PyTree, step: StepSpec = 'latest', *, restore_data_iterator: bool = True) -> Restored:
    """The checkpoint of `step` ('latest', 'best' or a number) onto `target`'s structure and shardings.

    `target` is the train state as abstract arrays, `jax.ShapeDtypeStruct(shape, dtype, sharding=...)`
    (or concrete arrays, whose shardings are used): the mesh and device count may differ from the run
    that saved it. Each process gets its own data iterator state (same process count needed).
    """
    step = self._resolve(step)
    items: dict[str, ocp.args.CheckpointArgs] = {STATE: _restore_args(target)}
    if restore_data_iterator and self._has_item(step, DATA_ITERATOR):
      items[DATA_ITERATOR] = ProcessJsonRestore()
    if self._has_item(step, CONFIG):
      items[CONFIG] = ConfigRestore()
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    config = restored.get(CONFIG)
    return Restored(step=step, state=restored[STATE], data_iterator=restored.get(DATA_ITERATOR),
                    config=None if config is None else ml_collections.ConfigDict(config))

  def restore_params(self, target: PyTree, step: StepSpec = 'latest', *, key: str = 'params') -> PyTree:
    """Only the subtree `key` of the saved state (the parameters, not the optimizer state) onto `target`
    (abstract arrays with shardings); what else the checkpoint holds is not read."""
    step = self._resolve(step)
    args = _restore_args({key: target}, partial=True)
    return self._manager.restore(step, args=ocp.args.Composite(**{STATE: args}))[STATE][key]

  def saved_config(self, step: StepSpec = 'latest') -> ml_collections.ConfigDict | None:
    """The config saved with a checkpoint (None if it has none); no arrays are read."""
    step = self._resolve(step)
    if not self._has_item(step, CONFIG):
      return None
    restored = self._manager.restore(step, args=ocp.args.Composite(**{CONFIG: ConfigRestore()}))
    return ml_collections.ConfigDict(restored[CONFIG])

  def check_config(self, config: ml_collections.ConfigDict | Mapping[str, Any], *,
                   allowed: Iterable[str] = RUNTIME_FIELDS,
                   defaults: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Raises ConfigMismatchError if the latest checkpoint's config differs from `config` in more than
    the `allowed` runtime fields. Nothing to check in an empty workdir."""
    if self.latest_step() is None:
      return
    saved = self.saved_config()
    if saved is not None:
      check_config(saved.to_dict(), config, allowed=allowed, defaults=defaults,
                   where=f'{self.directory} (step {self.latest_step()})')

  def close(self) -> None:
    """Waits for the save in flight and releases orbax's threads."""
    self._manager.close()
    self._pending_step = None

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
