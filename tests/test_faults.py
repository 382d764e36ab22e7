"""Reliability: what a user's mistakes and a machine's failures lead to. Every bad input ends in one line
naming the field, file or row and the fix, before anything trains; every damaged checkpoint is set aside and
the run resumes from the last good one.

The unit tests of each check live beside their module (test_sources, test_checkpoint, test_config); here
are the programs as users run them.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# --- the command line ------------------------------------------------------------------------------------------

# (arguments after `python train.py`, what the one line says). Each fails before any data is read or compiled.
BAD_COMMANDS = {
    'unknown field': (['--config', 'configs/gpt_tiny.py', '--config.train.num_stepz=3'],
                      '--config.train.num_stepz: the config has no field \'num_stepz\'; Did you mean "num_steps"'),
    'unknown section': (['--config', 'configs/gpt_tiny.py', '--config.trian.num_steps=3'],
                        '--config.trian.num_steps: the config has no field \'trian\'; Did you mean "train"'),
    'value of the wrong type': (['--config', 'configs/gpt_tiny.py', '--config.train.num_steps=many'],
                                "--config.train.num_steps=many: invalid literal for int()"),
    'missing config file': (['--config', 'configs/gpt_tiyn.py'],
                            "--config: [Errno 2] No such file or directory: 'configs/gpt_tiyn.py'"),
    'bad config argument': (['--config', 'configs/glue.py:sst3'], 'configs/glue.py:sst3: give a task'),
    'no workdir': (['--config', 'configs/gpt_tiny.py', '--workdir='], 'give --config configs/<name>.py and --workdir'),
    'invalid value': (['--config', 'configs/gpt_tiny.py', '--config.model.num_heads=3'],
                      'model.num_heads=3: must divide d_model=128'),
    'steps and epochs': (['--config', 'configs/glue.py:movie_binary', '--config.train.num_steps=5'],
                         'train.num_steps=5 and train.num_epochs=2.0 both set the length of the run: add '
                         '--config.train.num_epochs=0 to train 5 steps'),
    'missing data file': (['--config', 'configs/gpt_tiny.py', '--config.data.source=tsv:no/such/{split}.tsv'],
                          "data.source='tsv:no/such/{split}.tsv': no such file or folder"),
}


@pytest.fixture(scope='module')
def bad_command_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
  """Every BAD_COMMANDS case run as `python train.py ...` from a scratch folder, two at a time."""
  scratch = tmp_path_factory.mktemp('bad_commands')

  def launch(name: str) -> tuple[subprocess.CompletedProcess, Path]:
    args, _ = BAD_COMMANDS[name]
    workdir = scratch / name.replace(' ', '_')
    if not any(a.startswith('--workdir') for a in args):
      args = [*args, '--workdir', str(workdir)]
    result = subprocess.run([sys.executable, str(ROOT / 'train.py'), *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    return result, workdir

  with ThreadPoolExecutor(2) as pool:
    return dict(zip(BAD_COMMANDS, pool.map(launch, BAD_COMMANDS)))


@pytest.mark.parametrize('name', sorted(BAD_COMMANDS))
def test_a_bad_command_is_one_line_and_exit_2(bad_command_results, name: str) -> None:
  result, workdir = bad_command_results[name]
  expected = BAD_COMMANDS[name][1]
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2, result.stderr[-3000:]
  assert len(lines) == 1 and lines[0].startswith('train.py: error: ') and expected in lines[0], result.stderr[-3000:]
  assert not workdir.exists()  # nothing was written, let alone trained


def test_traceback_on_request() -> None:
  """--verbosity=1 adds the traceback a bug report needs to the same message."""
  result = subprocess.run([sys.executable, 'train.py', '--config', 'configs/gpt_tiny.py', '--workdir', 'unused',
                           '--config.model.num_heads=3', '--verbosity=1'], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 2 and 'Traceback (most recent call last)' in result.stderr, result.stderr[-3000:]
  assert result.stderr.strip().splitlines()[-1].startswith('train.py: error: model.num_heads=3'), result.stderr[-3000:]
