"""Evaluation, the program: the task's official metrics, predictions files and generated samples of a checkpoint.

  python eval.py --config configs/glue.py:sst2 --workdir runs/sst2 [--step best] [--config.mesh.data=2]

Runs evaluation.evaluate.evaluate_checkpoint (see its docstring): restores `--step` (latest, best by
validation loss, or a number) onto the mesh of this config, scores every example of `eval.splits`, writes
<workdir>/eval/step_<N>/ and prints a table.
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from evaluation.evaluate import evaluate_checkpoint
from trainer import distributed


def define_flags() -> None:
  """eval.py's flags (defined when it runs as a program, not on import)."""
  config_flags.DEFINE_config_file('config', None, 'The configs/*.py file the run was trained with.',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'The training run to evaluate.')
  flags.DEFINE_string('step', 'latest', "Checkpoint: 'latest', 'best' (lowest validation loss) or a step.")
  flags.DEFINE_string('out_dir', None, 'Where results go (default <workdir>/eval/step_<N>).')


def main(argv: list[str]) -> None:
  del argv
  values = flags.FLAGS
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  if values.config is None or not values.workdir:
    raise app.UsageError('give --config configs/<name>.py and --workdir <dir> of a trained run')
  distributed.maybe_initialize(values.config.get('distributed'))
  step: str | int = int(values.step) if values.step.isdigit() else values.step
  evaluate_checkpoint(values.config, values.workdir, step=step, out_dir=values.out_dir)


if __name__ == '__main__':
  define_flags()
  app.run(main)
