"""Evaluation, the program: the task's official metrics, predictions files and generated samples of a checkpoint.

  python eval.py --workdir runs/sst2 [--step best|latest|N] [--out_dir DIR]
  python eval.py --workdir runs/sst2 --config configs/glue.py:sst2 [--config.eval.max_examples=9] [--config.mesh.data=2]

Runs evaluation.evaluate.evaluate_checkpoint (see its docstring): restores `--step` (latest, best by
validation loss, or a number) with the config the run was trained with (saved in its checkpoint), scores every
example of `eval.splits`, writes <workdir>/eval/step_<N>/ and prints a table. `--config` is needed only to
change eval.*, the mesh, data.data_dir or the model's execution fields (its model and data fields must be
the trained ones; train.* and optim.* are always the trained ones): see evaluate.effective_config.
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from core import cli
from evaluation.evaluate import evaluate_checkpoint
from trainer import distributed


def define_flags() -> None:
  """eval.py's flags (defined when it runs as a program, not on import)."""
  config_flags.DEFINE_config_file('config', None, 'Optional: the configs/*.py file the run was trained with, to '
                                  'change eval.*, mesh.* (default: the config saved in the checkpoint).',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'The training run to evaluate.')
  flags.DEFINE_string('step', 'latest', "Checkpoint: 'latest', 'best' (lowest validation loss) or a step.")
  flags.DEFINE_string('out_dir', None, 'Where results go (default <workdir>/eval/step_<N>).')


def main(argv: list[str]) -> None:
  del argv
  values = flags.FLAGS
  if not values.workdir:
    cli.fail('give --workdir <dir> of a trained run (and optionally --config configs/<name>.py)')
  # Before anything touches a device; without --config, a cluster JAX detects by itself.
  distributed.maybe_initialize(values.config.get('distributed') if values.config is not None else None)
  step: str | int = int(values.step) if values.step.isdigit() else values.step
  evaluate_checkpoint(values.config, values.workdir, step=step, out_dir=values.out_dir)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
