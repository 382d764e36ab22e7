"""The README's commands, run as written: from a fresh working directory, with its relative paths, `~` and
shell quoting, through bash, on one CPU device as a user has it.

Every `python train.py / eval.py / describe.py` and `python -m data.prepare` invocation of the README's
```bash blocks is extracted and run in README order; only short-run overrides are appended (`SHORT`). The
first train.py command (the Quickstart's) runs twice, the second time resuming from the first's checkpoint.
A command the README adds is run by this test without an edit here; one that cannot run on this machine
must be listed in `NOT_RUN` with the reason, or the test fails.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from data import prepare, raw
from trainer import metrics

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / 'README.md'
GLUE_FIXTURES = Path(__file__).parent / 'fixtures' / 'glue'
TIMEOUT = 600  # seconds per command; the slowest (a MiniLM fine-tune's compiles) takes about a minute

OURS = re.compile(r'\bpython (?:train|eval|describe)\.py\b|\bpython -m data\.prepare\b')
# Commands of the README that this machine cannot run, with the reason.
NOT_RUN = {
    'srun python train.py --config configs/gpt2_small.py --workdir /shared/runs/gpt2 --config.mesh.data=2 '
    '--config.mesh.fsdp=8 --config.model.dtype=bfloat16': 'a SLURM launch on two nodes of 8 GPUs',
}
FIRST_STEPS, RESUMED_STEPS = 2, 4


def readme_commands() -> list[str]:
  """Our commands in the README's bash blocks, in order: continuations joined, `&&` chains split, comments
  and `pip install` steps dropped, white space folded."""
  commands = []
  for block in re.findall(r'```bash\n(.*?)```', README.read_text(), re.DOTALL):
    for line in block.replace('\\\n', ' ').splitlines():
      line = re.sub(r'\s+#.*$', '', line).strip()
      if line.startswith('#'):
        continue
      commands += [' '.join(part.split()) for part in line.split('&&') if OURS.search(part)]
  return commands


def config_of(argv: list[str]) -> object:
  """The ConfigDict a command's --config flag names ('configs/glue.py:sst2' -> get_config('sst2'))."""
  path, _, arg = argv[argv.index('--config') + 1].partition(':')
  return importlib.import_module(path.removesuffix('.py').replace('/', '.')).get_config(arg or None)


def short(command: str, num_steps: int = FIRST_STEPS) -> str:
  """The command with the overrides that keep it short appended (and nothing else changed)."""
  argv = shlex.split(command)
  if 'train.py' in argv:
    extra = [f'--config.train.num_steps={num_steps}', '--config.train.checkpoint_every=2',
             '--config.train.log_every=1', '--config.train.eval_batches=1']
    if config_of(argv).train.get('num_epochs'):  # a fine-tune measured in epochs: count steps instead
      extra.append('--config.train.num_epochs=0')
  elif 'eval.py' in argv:
    extra = ['--config.eval.max_examples=32']
  else:
    extra = []
  return ' '.join([command, *extra])


@pytest.fixture(scope='module')
def workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
  """A fresh working directory holding the code (links to the checkout's files) and nothing else, and the
  environment of a user: one CPU device, a home with the GLUE archive in ~/glue_data, the usual data and
  raw-package folders. A compilation cache shared by the commands makes the resumed run's compile free."""
  cwd = tmp_path_factory.mktemp('readme')
  for entry in ROOT.iterdir():
    if entry.name not in ('runs', '.git', '.pytest_cache') and not entry.name.startswith('.'):
      (cwd / entry.name).symlink_to(entry)
  home = tmp_path_factory.mktemp('home')
  (home / 'glue_data').symlink_to(GLUE_FIXTURES)
  # Your own TSV task of the README (`tsv:my_task/`): a header, then text and label.
  (cwd / 'my_task').mkdir()
  for name, rows in (('train.tsv', 64), ('dev.tsv', 40)):
    lines = ['text\tlabel'] + [f'{"a fine film" if i % 2 else "a dull film"} number {i}\t{i % 2}'
                                   for i in range(rows)]
    (cwd / 'my_task' / name).write_text('\n'.join(lines) + '\n')
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'PYTHONPATH')}
  env |= {'HOME': str(home), 'JAX_PLATFORMS': 'cpu', 'TFDS_DATA_DIR': str(prepare.default_data_dir()),
          'TJ_RAW_DIR': str(raw.default_cache_dir()), 'PYTHONUNBUFFERED': '1',
          'JAX_COMPILATION_CACHE_DIR': str(tmp_path_factory.mktemp('jax_cache'))}
  return cwd, env


def run(command: str, cwd: Path, env: dict[str, str]) -> str:
  if 'glue_tsv' in command:  # the GLUE fixture's rows are not the real GLUE: built apart from the real data
    env = env | {'TFDS_DATA_DIR': str(cwd / 'glue_tfds')}
  result = subprocess.run(['bash', '-c', command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)
  output = result.stdout + result.stderr
  assert result.returncode == 0, f'README command failed ({result.returncode}): {command}\n{output[-5000:]}'
  return output


def test_readme_has_the_commands_this_test_expects() -> None:
  commands = readme_commands()
  quickstart = README.read_text().split('```bash\n')[1].split('```')[0]
  assert 'python train.py --config configs/gpt_tiny.py --workdir runs/gpt_tiny' in quickstart
  assert any('eval.py' in c for c in commands) and any('describe.py' in c for c in commands)
  for command in commands:
    assert command.startswith('python ') or command in NOT_RUN, f'neither runnable nor in NOT_RUN: {command}'
  assert set(NOT_RUN) <= set(commands), 'NOT_RUN names a command the README no longer has'


def test_readme_commands_run_as_written(workspace: tuple[Path, dict[str, str]]) -> None:
  cwd, env = workspace
  done: set[str] = set()
  resumed = False
  for command in readme_commands():
    if command in NOT_RUN or command in done:
      continue
    done.add(command)
    output = run(short(command), cwd, env)
    argv = shlex.split(command)
    if '--dry_run' in argv:  # the step compiled for a mesh of simulated devices: a plan, no workdir
      assert 'nothing ran' in output and re.search(r'total +[\d,.]+ MiB', output) and 'per device' in output, output
    elif 'train.py' in argv:
      workdir = cwd / argv[argv.index('--workdir') + 1]
      assert 'final evaluation' in output, output[-3000:]
      assert (workdir / 'checkpoints' / str(FIRST_STEPS)).is_dir(), output[-3000:]
      if not resumed:  # run it again, as the README says, for more steps: it resumes
        output = run(short(command, RESUMED_STEPS), cwd, env)
        assert f'resumed from step {FIRST_STEPS}' in output, output[-3000:]
        rows = metrics.read_metrics(workdir / metrics.JSONL_NAME, metrics.Split.TRAIN)
        assert [row['step'] for row in rows if 'loss' in row] == list(range(1, RESUMED_STEPS + 1))
        resumed = True
    elif 'eval.py' in argv:
      workdir = cwd / argv[argv.index('--workdir') + 1]
      assert list(workdir.glob('eval/step_*/metrics.json')), output[-3000:]
    elif 'describe.py' in argv:
      assert re.search(r'total +[\d,]+', output), output[-3000:]
  assert resumed
