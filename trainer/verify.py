"""Checks a workdir's checkpoints, reading all a restore reads: `python -m trainer.checkpoint verify <workdir>`.

  $ python -m trainer.checkpoint verify runs/gpt_tiny
  /abs/runs/gpt_tiny/checkpoints
    100                        ok: 14 arrays (17.4 MB), data iterator of 1 process, config
    200                        damaged: state/d/8f3a...: Requested byte range [0, 1753) is not valid for value of ...
    200.corrupt                set aside: found damaged when a run resumed
    300.orbax-checkpoint-tmp   unfinished save: a run killed while saving; removed when the run resumes
  the latest step, 200, is damaged: a run resumes from step 100 and sets the damaged steps aside

Every committed step is read in full: orbax's metadata, the config, every process's iterator state and every
array, onto this host's CPU (the shapes come from the checkpoint's metadata; no model or config is needed).
Exit status 0 if the latest step is good, 1 otherwise (also when there is no step at all).
"""

from __future__ import annotations

import dataclasses
import enum
import sys
from collections.abc import Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from trainer import checkpoint

TMP_SUFFIX = '.orbax-checkpoint-tmp'


class Status(enum.Enum):
  OK = 'ok'
  DAMAGED = 'damaged'
  SET_ASIDE = 'set aside'
  UNFINISHED = 'unfinished save'


@dataclasses.dataclass(frozen=True)
class Entry:
  """One folder of the checkpoint directory: a step (`step` set), a step set aside, or a save never finished."""

  name: str
  status: Status
  detail: str
  step: int | None = None


def _host_target(step_dir: epath.Path) -> checkpoint.PyTree:
  """The saved state's tree as abstract arrays on this host's first CPU device, from its metadata."""
  handler = ocp.PyTreeCheckpointHandler()
  try:
    tree = handler.metadata(step_dir / checkpoint.STATE).tree
  finally:
    handler.close()
  cpu = jax.sharding.SingleDeviceSharding(jax.local_devices(backend='cpu')[0])
  return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=cpu), tree)


def _read_step(ckpt: checkpoint.Checkpointer, step: int) -> Entry:
  step_dir = ckpt.directory / str(step)
  try:
    checkpoint.check_files(step_dir)
    target = _host_target(step_dir)
    restored = ckpt.restore(target, step, restore_data_iterator=False)  # every process's file: check_files
  except checkpoint.DamagedCheckpointError as e:
    return Entry(str(step), Status.DAMAGED, e.reason, step)
  except Exception as e:  # pylint: disable=broad-exception-caught
    reason = checkpoint.damage_reason(step_dir, e) or checkpoint.save_cause(e)
    return Entry(str(step), Status.DAMAGED, reason, step)
  leaves = jax.tree.leaves(restored.state)
  size = sum(np.asarray(leaf).nbytes for leaf in leaves)
  held = [f'{len(leaves)} arrays ({size / 1e6:.1f} MB)']
  iterator_dir = step_dir / checkpoint.DATA_ITERATOR
  if iterator_dir.is_dir():
    counts = sorted({int(name.split('-of-')[1][:-len('.json')]) for name in (p.name for p in iterator_dir.iterdir())
                     if checkpoint._PROCESS_FILE.match(name)})  # pylint: disable=protected-access
    held.append(f'data iterator of {"/".join(map(str, counts))} process{"" if counts == [1] else "es"}')
  if restored.config is not None:
    held.append('config')
  return Entry(str(step), Status.OK, ', '.join(held), step)


def verify(workdir: epath.PathLike) -> list[Entry]:
  """Every folder of `workdir`'s checkpoint directory with what state it is in, steps oldest first."""
  directory = checkpoint.checkpoint_dir(workdir)
  if not directory.is_dir():
    return []
  entries = []
  with checkpoint.Checkpointer(directory, read_only=True) as ckpt:
    for step in ckpt.all_steps():
      entries.append(_read_step(ckpt, step))
  for path in sorted(directory.iterdir(), key=lambda p: p.name):
    if path.is_dir() and checkpoint.CORRUPT_SUFFIX in path.name:
      entries.append(Entry(path.name, Status.SET_ASIDE, 'found damaged when a run resumed'))
    elif path.is_dir() and path.name.endswith(TMP_SUFFIX):
      entries.append(Entry(path.name, Status.UNFINISHED, 'a run killed while saving; removed when the run resumes'))
  return entries


def summary(entries: Sequence[Entry]) -> tuple[bool, str]:
  """Whether the latest step is good, and the last line of the report saying so."""
  steps = [e for e in entries if e.step is not None]
  if not steps:
    return False, 'no committed step: a run starts from the beginning' + (
        ' only once the folders set aside are moved away' if any(e.status is Status.SET_ASIDE for e in entries)
        else '')
  latest = steps[-1]
  if latest.status is Status.OK:
    return True, f'the latest step, {latest.step}, is good'
  good = [e.step for e in steps if e.status is Status.OK]
  then = (f'a run resumes from step {good[-1]} and sets the damaged steps aside' if good else
          'no step is good: a run stops with an error; start afresh in a new workdir')
  return False, f'the latest step, {latest.step}, is damaged: {then}'


def report(workdir: epath.PathLike, entries: Sequence[Entry]) -> str:
  width = max((len(e.name) for e in entries), default=0) + 3
  lines = [str(checkpoint.checkpoint_dir(workdir))]
  lines += [f'  {e.name:<{width}}{e.status.value}: {e.detail}' for e in entries]
  return '\n'.join(lines + [summary(entries)[1]])


def main(argv: Sequence[str]) -> int:
  """`verify <workdir>` (the subcommand name optional): prints the report; 0 if the latest step is good."""
  args = [a for a in argv if a != 'verify']
  if len(args) != 1:
    print('usage: python -m trainer.checkpoint verify <workdir>', file=sys.stderr)
    return 2
  logging.set_verbosity(logging.ERROR)  # orbax logs every file it opens at INFO, and warns on host restores
  entries = verify(args[0])
  print(report(args[0], entries), flush=True)
  return 0 if summary(entries)[0] else 1


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
