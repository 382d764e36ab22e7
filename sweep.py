"""Architecture ablations: a grid of config values x seeds, each cell a plain train.py run, and a report.

  python sweep.py --config configs/gpt_tiny.py --sweep 'model.position=learned,sinusoidal,rope,relative' \
      [--sweep 'model.norm_placement=pre,post'] [--seeds 2] --workdir runs/pos [--parallel 2] [--config.<field>=...]

runs every cell (the product of the --sweep values, x seeds: train.seed 0..N-1, or the values of
`--sweep train.seed=...`) as `python train.py --config <config> --workdir runs/pos/<variant>/seed_<s>
--config.<field>=<value> ... --config.train.seed=<s> <your --config overrides>`, `--parallel` at a time (with more
than one, XLA_PYTHON_CLIENT_PREALLOCATE=false unless set, for cells sharing a GPU). A cell's output goes to its
train.log; a line per cell start and finish (with its final validation loss) is printed. Then it writes
runs/pos/results.md (one row per variant, sorted by final validation loss: mean ± std over seeds, parameters,
tokens/s, wall time, best step), results.json (with every seed's figures) and curves.png.

Every cell's config is checked before anything runs (a malformed --sweep, an unknown field, a value the field
rejects: one line, exit 2). Re-running the same command resumes the unfinished cells (train.py resumes by
itself) and skips the finished ones (those with a done.json, or whose checkpoint of step train.num_steps has
its evaluation); another spec in the same workdir is an error naming what differs. A failed cell's log's last
line is printed and the others go on; the sweep then exits 1 listing the failed cells. SIGTERM or Ctrl-C
stops the running cells (they save a checkpoint) and the sweep exits 1: rerun the command to resume.

  python sweep.py ... --print_commands      # one train.py command per cell, shell-quoted; runs nothing
  python sweep.py --report runs/pos         # the report now, also while cells run (unfinished rows marked)

--print_commands writes runs/pos/sweep.json too, so that --report knows the sweep when a cluster scheduler
runs the printed commands as separate jobs.
"""

from __future__ import annotations

import shlex
import sys

from absl import flags
from ml_collections import config_flags

from core import cli
from core.paths import user_path
from trainer import report, sweep, sweep_cells


def define_flags() -> None:
  config_flags.DEFINE_config_file('config', None, 'A configs/*.py file (optionally :arg).', lock_config=True)
  flags.DEFINE_multi_string('sweep', [], "<section>.<field>=<v1>,<v2>,...: the values of one axis of the grid, "
                            "e.g. 'model.position=learned,rope'. Repeat for a grid of several axes.")
  flags.DEFINE_integer('seeds', None, 'Runs of every variant, with train.seed 0..N-1 (default 1).')
  flags.DEFINE_string('workdir', None, "The sweep's folder: sweep.json, a folder per cell, the results.")
  flags.DEFINE_integer('parallel', 1, 'Cells run at once.')
  flags.DEFINE_bool('print_commands', False, 'Print the train.py command of every cell and exit.')
  flags.DEFINE_string('report', None, "A sweep's workdir: write its results.md, results.json and curves.png now.")


def main(argv: list[str]) -> None:
  del argv
  f = flags.FLAGS
  if f.report:
    if f.config is not None or f.sweep or f.workdir:
      cli.fail('--report <workdir> takes no --config, --sweep or --workdir: the sweep is read from its sweep.json')
    workdir = user_path(f.report)
    print('\n'.join(map(str, report.write(sweep.read_spec(workdir), workdir))))
    return
  if f.config is None or not f.workdir:
    cli.fail("give --config configs/<name>.py, --sweep '<section>.<field>=<v1>,<v2>' and --workdir <dir> "
             '(or --report <workdir>)')
  if f.parallel < 1:
    cli.fail(f'--parallel={f.parallel}: must be >= 1 (the cells run at once)')
  spec = sweep.make_spec(f['config'].config_filename, f.sweep, seeds=f.seeds, overrides=sweep.config_overrides(
      sys.argv), base=f.config)
  workdir = user_path(f.workdir)
  planned = sweep.plan(spec, workdir)  # every cell checked: nothing is written before
  sweep.save_spec(spec, workdir)
  if f.print_commands:
    print('\n'.join(shlex.join(sweep.command(spec, p.cell)) for p in planned))
    return
  print(f'sweep {spec.title()}: {len(planned)} cells in {workdir}, {f.parallel} at a time', flush=True)
  outcome = sweep_cells.run(spec, planned, parallel=f.parallel, echo=lambda line: print(line, flush=True))
  print('\n'.join(f'wrote {p}' for p in report.write(spec, workdir)), flush=True)
  if outcome.stopped_by is not None:
    cli.fail(f'stopped by signal {outcome.stopped_by}: rerun the same command to resume', cli.HALTED)
  if outcome.failed:
    cli.fail(f'{len(outcome.failed)} of {len(planned)} cells failed (their train.log in {workdir}): '
             + '; '.join(outcome.failed), cli.HALTED)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
