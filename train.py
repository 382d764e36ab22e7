"""Training, the program: `python train.py --config configs/<setup>.py --workdir <dir> [--config.<section>.<field>=...]`

  python train.py --config configs/gpt_tiny.py --workdir runs/gpt_tiny [--config.train.num_steps=100]

Runs trainer.runner.train_and_evaluate: the same command on one CPU, one GPU or a multi-host mesh
(`--config.mesh.*`); a run resumes by itself from its workdir; SIGTERM saves a checkpoint and exits 0.

  python train.py --config configs/gpt2_small.py --dry_run --config.mesh.fsdp=8 --dry_run_memory_gb=80

compiles the train step for that mesh on simulated CPU devices, runs nothing, and prints the memory per device
and the FLOPs per step (trainer/plan.py): whether a model fits a mesh, before paying for it.
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from core import cli
from trainer import checkpoint, distributed, plan, runner


def define_flags() -> None:
  """train.py's flags (defined when it runs as a program, not on import)."""
  config_flags.DEFINE_config_file('config', None, 'A configs/*.py file (optionally :arg).', lock_config=True)
  flags.DEFINE_string('workdir', None, 'Where checkpoints, metrics and the tokenizer go.')
  flags.DEFINE_bool('dry_run', False, 'Compile the train step for the mesh on simulated CPU devices, print its '
                    'memory per device and FLOPs per step, and exit (no workdir, no data).')
  flags.DEFINE_integer('dry_run_devices', None, 'With --dry_run: devices to simulate (default: the product of '
                       'the mesh sizes).')
  flags.DEFINE_float('dry_run_memory_gb', None, "With --dry_run: one device's memory in GB, to say whether the "
                     'step fits.')


def main(argv: list[str]) -> None:
  del argv
  if flags.FLAGS.config is None:
    cli.fail('give --config configs/<name>.py and --workdir <dir>')
  if flags.FLAGS.dry_run:
    plan.use_simulated_devices(plan.simulated_devices(flags.FLAGS.config, flags.FLAGS.dry_run_devices))
    print(plan.report(plan.plan(flags.FLAGS.config), flags.FLAGS.dry_run_memory_gb), flush=True)
    return
  if not flags.FLAGS.workdir:
    cli.fail('give --config configs/<name>.py and --workdir <dir>')
  distributed.maybe_initialize(flags.FLAGS.config.get('distributed'))  # before anything touches a device
  runner.train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == '__main__':
  define_flags()
  # A run that stopped itself (exit 1): the loss diverged, a save failed, no checkpoint of the workdir reads.
  cli.run(main, halts=(runner.TrainingHalted, checkpoint.CheckpointSaveError, checkpoint.NoGoodCheckpointError))
