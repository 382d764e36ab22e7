"""Training curves of any set of workdirs in one figure: train and validation loss, learning rate, tokens/s.

  python plot.py runs/a runs/b [--out curves.png]
  python plot.py runs/pos runs/baseline --out compare.png   # runs/pos: a sweep.py workdir

A train.py workdir is one line; a sweep.py workdir expands to one line per variant, the mean over its seeds
with a shaded min-max band. Lines are labelled by their folders relative to the workdirs' common parent.
"""

from __future__ import annotations

from absl import flags

from core import cli
from core.paths import user_path
from trainer import curves, report


def define_flags() -> None:
  flags.DEFINE_string('out', 'curves.png', 'The PNG to write.')


def main(argv: list[str]) -> None:
  if len(argv) < 2:
    cli.fail('give one or more workdirs: python plot.py runs/a runs/b [--out curves.png]')
  common, series = report.workdir_series([user_path(a) for a in argv[1:]])
  out = user_path(flags.FLAGS.out)
  curves.draw(series, curves.RUN_PANELS, out, title=str(common))
  print(f'wrote {out}')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
