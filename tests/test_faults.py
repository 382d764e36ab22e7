"""Reliability: what a user's mistakes and a machine's failures lead to, end to end as users run the programs.
Every bad input ends in one line naming the field, file or row and the fix, before anything trains; every
damaged checkpoint is set aside and the run resumes from the last good one; a run killed at any moment
resumes bit-identically. The unit tests of each check live beside their module (test_sources,
test_checkpoint, test_config).

Runs are tiny GPTs of tests/test_train.py's size. One uninterrupted run (`reference`) is what the others are
compared with; the runs share one XLA compilation cache (a folder of this module's, never the pytest
process's: a process killed while writing an entry could leave a compile here waiting), so that only the
first of them compiles.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.test_checkpoint import fill_the_disk_at
from tests.test_train import fast_compile  # noqa: F401 (a fixture)
from tests.test_train import (ROOT, SUBPROCESS_TIMEOUT, TINY, committed_steps, copy_tokenizer, interrupt, make_config,
                              named_leaves, restore_params, subprocess_env, tail, train_command, train_losses)
from trainer import checkpoint, metrics, runner

STEPS = 48  # 8 kills take each a checkpoint or two (every 3 steps): about 30 steps
# Every step's loss logged (compared step by step); saves every 3 steps, each ~0.25 s in the background while
# the steps take ~10 ms: most of a run's time a save is in flight.
RUN = TINY | {'train.num_steps': STEPS, 'train.checkpoint_every': 3, 'train.log_every': 1, 'train.eval_every': 12,
              'optim.learning_rate': 3e-3, 'optim.warmup_steps': 10, 'optim.schedule': 'constant'}


@dataclasses.dataclass(frozen=True)
class Reference:
  workdir: Path
  params: dict[str, np.ndarray]  # the final parameters by path


@pytest.fixture(scope='module')
def env(tmp_path_factory) -> dict[str, str]:
  cache = tmp_path_factory.mktemp('xla_cache')
  return subprocess_env(JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
                        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')


def train(workdir: Path, env: dict[str, str], overrides=RUN) -> str:
  """`python train.py` to the end; its output."""
  done = subprocess.run(train_command(workdir, overrides), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True, timeout=SUBPROCESS_TIMEOUT)
  assert done.returncode == 0, done.stdout[-4000:]
  return done.stdout


@pytest.fixture(scope='module')
def reference(tmp_path_factory, env) -> Reference:
  workdir = tmp_path_factory.mktemp('reference')
  train(workdir, env)
  return Reference(workdir, named_leaves(restore_params(workdir, RUN)))


def assert_same_run(workdir: Path, reference: Reference) -> None:
  """Bit-identical to the uninterrupted run: final parameters, every step's train loss, the eval metrics."""
  got = named_leaves(restore_params(workdir, RUN))
  different = [name for name, value in got.items() if not np.array_equal(value, reference.params[name])]
  assert got.keys() == reference.params.keys() and not different, different
  losses = train_losses(workdir)
  assert [step for step, _ in losses] == list(range(1, STEPS + 1))  # each step once, and the reference's loss
  assert losses == train_losses(reference.workdir)
  assert train_losses(workdir, metrics.Split.EVAL) == train_losses(reference.workdir, metrics.Split.EVAL)


# --- checkpoints ---------------------------------------------------------------------------------------------

def test_a_damaged_latest_checkpoint_is_set_aside_and_the_run_resumes(reference, env, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(reference.workdir, workdir)
  folder = workdir / checkpoint.CHECKPOINT_SUBDIR
  latest, previous = committed_steps(workdir)[-2:][::-1]
  data = max((folder / str(latest) / 'state' / 'd').iterdir(), key=lambda p: p.stat().st_size)
  data.write_bytes(data.read_bytes()[:100])  # a truncated tensor file: only reading the arrays finds it
  check = subprocess.run([sys.executable, '-m', 'trainer.checkpoint', 'verify', str(workdir)], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=SUBPROCESS_TIMEOUT)
  assert check.returncode == 1, check.stdout
  assert re.search(rf'^  {latest} +damaged: state/d/[0-9a-f]+: Requested byte range', check.stdout, re.M), check.stdout
  assert f'the latest step, {latest}, is damaged: a run resumes from step {previous}' in check.stdout

  out = train(workdir, env)
  assert re.search(rf'^checkpoint step {latest} in {folder / str(latest)} is damaged \(state/d/[0-9a-f]+: Requested '
                   rf'byte range \[0, \d+\) is not valid for value of size 100\); set aside as {latest}\.corrupt, '
                   r'trying the previous step$', out, re.M), out[-4000:]
  assert f'resumed from step {previous} in {workdir}' in out and 'Traceback' not in out, out[-4000:]
  assert (folder / f'{latest}.corrupt').is_dir() and committed_steps(workdir)[-1] == STEPS
  assert_same_run(workdir, reference)  # the steps after `previous` again, exactly


KILLS = 8


def saving(workdir: Path) -> bool:
  """A save is in flight (or was, when the process died): its tmp folder is there."""
  folder = workdir / checkpoint.CHECKPOINT_SUBDIR
  return folder.is_dir() and any(p.name.endswith('.orbax-checkpoint-tmp') for p in folder.iterdir())


def test_sigkill_campaign_ends_bit_identical(reference, env, tmp_path):
  """One run SIGKILLed KILLS times, every time once it has committed a new checkpoint; every other time while
  its next save is being written, the others between saves (when the kill lands in time); then run to the end."""
  workdir = tmp_path / 'run'
  copy_tokenizer(reference.workdir, workdir)
  mid_save = []
  for kill in range(KILLS):
    start = max(committed_steps(workdir), default=0)
    want_saving = kill % 2 == 0

    def ready() -> bool:
      steps = committed_steps(workdir)  # a new checkpoint: the stale tmp folder of the last kill is gone too
      return bool(steps) and steps[-1] > start and saving(workdir) == want_saving

    log = tmp_path / f'kill_{kill}.log'
    assert interrupt(workdir, RUN, ready, signal.SIGKILL, log, env) == -signal.SIGKILL, tail(log)
    mid_save.append(saving(workdir))
    assert max(committed_steps(workdir)) < STEPS, 'the run ended before it was killed: raise STEPS'
  assert sum(mid_save) >= KILLS // 2, mid_save
  train(workdir, env)
  assert_same_run(workdir, reference)


def test_a_failed_background_save_stops_the_run_at_once(reference, tmp_path, monkeypatch, fast_compile):  # noqa: F811
  """The disk fills while step 100 is written: the run stops within the steps the write takes (~0.3 s, a few
  dozen tiny steps), long before its next save, naming the step and the last good one, which stays."""
  copy_tokenizer(reference.workdir, tmp_path)
  fill_the_disk_at(monkeypatch, 100)
  config = make_config('gpt_tiny', RUN | {'train.num_steps': 300, 'train.checkpoint_every': 50,
                                          'train.eval_every': 300})
  with pytest.raises(checkpoint.CheckpointSaveError) as error:
    runner.train_and_evaluate(config, tmp_path)
  assert str(error.value) == (f'saving step 100 to {tmp_path / "checkpoints"} failed: [Errno 28] No space left on '
                              'device; the last good checkpoint is step 50: free space and rerun the same command '
                              'to resume')
  last = train_losses(tmp_path)[-1][0]
  assert 100 <= last < 150, last  # noticed within steps of the failure, not at the next save
  assert committed_steps(tmp_path) == [50]


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
    # A user's TSV task ({data}: the files of DATA_FILES, written by the fixture).
    'row without a label': (['--config', 'configs/glue.py:movie_binary', '--config.data.source=tsv:{data}/unlabelled'],
                            "unlabelled/train.tsv line 4, column 'label': no label (''), but every train row needs "
                            'one (only a test split may be unlabelled) (1 such row in this file): fix the file, or set '
                            '--config.data.bad_rows=skip to drop bad rows'),
    'stray label': (['--config', 'configs/glue.py:movie_binary', '--config.data.source=tsv:{data}/stray'],
                    'model.num_labels=2, but the training split of'),
}
_ROWS = ''.join(f'{"a fine" if i % 2 else "a dull"} film number {i}\t{i % 2}\n' for i in range(40))
DATA_FILES = {'unlabelled/train.tsv': 'text\tlabel\nfirst\t1\nsecond\t0\nthird\t\n' + _ROWS,
              'unlabelled/dev.tsv': 'text\tlabel\n' + _ROWS,
              'stray/train.tsv': 'text\tlabel\n' + _ROWS + 'a stray one\t5\n',
              'stray/dev.tsv': 'text\tlabel\n' + _ROWS}


@pytest.fixture(scope='module')
def bad_command_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
  """Every BAD_COMMANDS case run as `python train.py ...` from a scratch folder, two at a time."""
  scratch = tmp_path_factory.mktemp('bad_commands')
  for name, text in DATA_FILES.items():
    (scratch / 'data' / name).parent.mkdir(parents=True, exist_ok=True)
    (scratch / 'data' / name).write_text(text)

  def launch(name: str) -> tuple[subprocess.CompletedProcess, Path]:
    args = [a.replace('{data}', str(scratch / 'data')) for a in BAD_COMMANDS[name][0]]
    workdir = scratch / name.replace(' ', '_')
    if not any(a.startswith('--workdir') for a in args):
      args = [*args, '--workdir', str(workdir)]
    result = subprocess.run([sys.executable, str(ROOT / 'train.py'), *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    return result, workdir

  with ThreadPoolExecutor(2) as pool:
    return dict(zip(BAD_COMMANDS, pool.map(launch, BAD_COMMANDS)))


@pytest.mark.parametrize('name', sorted(set(BAD_COMMANDS) - {'stray label'}))
def test_a_bad_command_is_one_line_and_exit_2(bad_command_results, name: str) -> None:
  result, workdir = bad_command_results[name]
  expected = BAD_COMMANDS[name][1]
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2, result.stderr[-3000:]
  assert len(lines) == 1 and lines[0].startswith('train.py: error: ') and expected in lines[0], result.stderr[-3000:]
  assert not workdir.exists()  # nothing was written, let alone trained


def test_a_stray_label_names_its_row_not_a_new_class_count(bad_command_results) -> None:
  """Two lines: the classes found, then the row that holds the stray label (not 'set num_labels=6')."""
  result, workdir = bad_command_results['stray label']
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2 and len(lines) == 2, result.stderr[-3000:]
  assert '(0: 20, 1: 20, 5: 1)' in lines[0], lines
  assert lines[1].startswith('train.tsv line 42: label 5 occurs once; model.num_labels=2 expects 0..1: fix the row'), lines
  assert not workdir.exists()  # nothing was written, let alone trained


def test_traceback_on_request() -> None:
  """--verbosity=1 adds the traceback a bug report needs to the same message."""
  result = subprocess.run([sys.executable, 'train.py', '--config', 'configs/gpt_tiny.py', '--workdir', 'unused',
                           '--config.model.num_heads=3', '--verbosity=1'], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 2 and 'Traceback (most recent call last)' in result.stderr, result.stderr[-3000:]
  assert result.stderr.strip().splitlines()[-1].startswith('train.py: error: model.num_heads=3'), result.stderr[-3000:]
