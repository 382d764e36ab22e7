"""The training loop end to end (train.py): every family learns, a killed or preempted run resumes exactly,
a run moves onto another mesh or onto two processes, bad inputs fail before compiling, NaNs are handled.

Runs are tiny (1 layer, width 32, BPE vocabulary of 600, 32 tokens, batch 8) on the 8 simulated CPU devices
of conftest.py. One uninterrupted GPT run (`reference`, 200 steps) is what the resume, mesh and
multi-process tests compare with. XLA's persistent compilation cache (conftest.py's temporary folder, also
the `python train.py` subprocesses') lets the runs of one program compile it once.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
import pytest

import model
from trainer import runner
from trainer import checkpoint, metrics
from trainer.mesh import MeshConfig
from trainer.step import abstract_train_state

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 600
TINY = {'model.d_model': 32, 'model.num_heads': 2, 'model.d_ff': 64, 'model.num_layers': 1, 'model.max_len': 64,
        'model.vocab_size': VOCAB, 'data.seq_len': 32, 'data.tokenizer': f'sentencepiece:auto,vocab_size={VOCAB},'
        'algorithm=bpe', 'train.batch_size': 8, 'train.eval_batches': 2}
STEPS = 200
# The reference run and the runs compared with it. Logging every step puts every step's loss in
# metrics.jsonl; the resumed runs change only runtime fields (checkpoint.RUNTIME_FIELDS) of it.
# A constant learning rate (after warmup) makes the first steps of a shorter run those of the reference.
GPT = TINY | {'train.num_steps': STEPS, 'train.checkpoint_every': 10, 'train.log_every': 1, 'train.eval_every': 100,
              'optim.learning_rate': 3e-3, 'optim.warmup_steps': 10, 'optim.schedule': 'constant'}
SUBPROCESS_TIMEOUT = 240  # seconds; a run takes about 20 (start-up, tokenising, compiling)


# --- helpers -------------------------------------------------------------------------------------------------

def make_config(name: str, overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """configs/<name>.py with `section.field` overrides, as `--config.section.field=value` would set them."""
  config = importlib.import_module(f'configs.{name}').get_config()
  for path, value in overrides.items():
    section, field = path.split('.')
    config[section][field] = value
  return config


def train_command(workdir: Path, overrides: Mapping[str, Any], name: str = 'gpt_tiny') -> list[str]:
  return [sys.executable, 'train.py', '--config', f'configs/{name}.py', '--workdir', str(workdir),
          *(f'--config.{path}={value}' for path, value in overrides.items())]


def committed_steps(workdir: Path) -> list[int]:
  """Steps whose checkpoint is committed (a folder named by an integer; a save in flight is a tmp folder)."""
  folder = workdir / checkpoint.CHECKPOINT_SUBDIR
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def latest_step(workdir: Path) -> int:
  return max(committed_steps(workdir), default=0)


def copy_tokenizer(source: Path, workdir: Path) -> None:
  """Each workdir trains its own 'sentencepiece:auto' vocabulary on first use; copying it saves that."""
  shutil.copytree(source / 'tokenizer', workdir / 'tokenizer')


def restore_params(workdir: Path, overrides: Mapping[str, Any], name: str = 'gpt_tiny',
                   step: int | str = 'latest') -> Any:
  """The parameters of a checkpoint, on the mesh of `overrides`, as numpy arrays."""
  config = make_config(name, overrides)
  mesh_cfg = MeshConfig.from_dict(config.mesh)
  module = model.build(model.ModelConfig.from_dict(config.model))
  target = abstract_train_state(module, optax.identity(), mesh_cfg.context()).params
  return jax.device_get(checkpoint.restore_params(workdir, target, step))


def named_leaves(tree: Any) -> dict[str, np.ndarray]:
  return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def train_losses(workdir: Path, split: metrics.Split = metrics.Split.TRAIN) -> list[tuple[int, float]]:
  """(step, loss) of every metrics.jsonl line with a loss (rate lines have none), in file order."""
  return [(row['step'], row['loss']) for row in metrics.read_metrics(workdir / metrics.JSONL_NAME, split)
          if 'loss' in row]


def printed_step(log: Path) -> int:
  """The last step of train.py's progress lines ('step 12/200  loss ...') in its output so far."""
  steps = re.findall(r'^step (\d+)/', log.read_text(), re.MULTILINE) if log.exists() else []
  return int(steps[-1]) if steps else 0


def tail(path: Path, chars: int = 4000) -> str:
  return path.read_text()[-chars:] if path.exists() else '<no output>'


def subprocess_env(**extra: str) -> dict[str, str]:
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.update(extra)
  return env


def interrupt(workdir: Path, overrides: Mapping[str, Any], ready: Callable[[], bool], signum: int,
              log: Path, env: Mapping[str, str]) -> int:
  """Runs `python train.py` in `workdir`, sends it `signum` as soon as `ready()` holds; its exit code."""
  with open(log, 'w') as out:
    proc = subprocess.Popen(train_command(workdir, overrides), cwd=ROOT, env=dict(env), stdout=out,
                            stderr=subprocess.STDOUT)
    try:
      deadline = time.monotonic() + SUBPROCESS_TIMEOUT
      while not ready():
        if proc.poll() is not None:
          pytest.fail(f'train.py exited with {proc.returncode} before it could be interrupted:\n{tail(log)}')
        if time.monotonic() > deadline:
          pytest.fail(f'train.py did not get ready in {SUBPROCESS_TIMEOUT} s:\n{tail(log)}')
        time.sleep(0.01)
      proc.send_signal(signum)
      proc.wait(timeout=SUBPROCESS_TIMEOUT)
    finally:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  return proc.returncode


# --- fixtures ------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Reference:
  workdir: Path
  final: dict[str, float]  # train_and_evaluate's return value: the eval metrics of the last step
  params: dict[str, np.ndarray]  # the final parameters by path


@pytest.fixture(scope='module')
def reference(tmp_path_factory) -> Reference:
  """The uninterrupted GPT run of STEPS steps on a data=8 mesh, in this process; it keeps every checkpoint."""
  workdir = tmp_path_factory.mktemp('reference')
  final = runner.train_and_evaluate(make_config('gpt_tiny', GPT | {'train.keep': STEPS}), workdir)
  return Reference(workdir, final, named_leaves(restore_params(workdir, GPT)))


@dataclasses.dataclass(frozen=True)
class Interrupted:
  workdir: Path
  killed_returncode: int
  resumed_from: int  # the latest committed step once the killed run was gone
  terminated_returncode: int
  terminated_output: str
  terminated_latest: int  # the latest committed step once the SIGTERMed run had exited
  final: dict[str, float]


@pytest.fixture(scope='module')
def interrupted(reference, tmp_path_factory) -> Interrupted:
  """The reference run's config, run as `python train.py` and SIGKILLed once a checkpoint of step >= 20
  is committed; resumed as `python train.py` and SIGTERMed a few steps later; then resumed in this process
  to the end."""
  logs = tmp_path_factory.mktemp('interrupted')
  workdir = logs / 'run'
  copy_tokenizer(reference.workdir, workdir)
  killed = interrupt(workdir, GPT, lambda: latest_step(workdir) >= 20, signal.SIGKILL, logs / 'killed.log',
                     subprocess_env())
  resumed_from = latest_step(workdir)
  # Without periodic checkpoints, the only one this run can leave is the one SIGTERM makes it write.
  log = logs / 'terminated.log'
  terminated = interrupt(workdir, GPT | {'train.checkpoint_every': 10 * STEPS},
                         lambda: printed_step(log) >= resumed_from + 5, signal.SIGTERM, log, subprocess_env())
  terminated_latest = latest_step(workdir)
  final = runner.train_and_evaluate(make_config('gpt_tiny', GPT), workdir)
  return Interrupted(workdir, killed, resumed_from, terminated, log.read_text(), terminated_latest, final)


@pytest.fixture
def fast_compile(monkeypatch) -> None:
  """train.py's programs without XLA's backend optimisations (half of each compile, nothing gained for these
  tiny models), for runs compared with no run of `python train.py`."""
  options = {'xla_backend_optimization_level': 0}
  for name in ('compile_train_step', 'compile_eval_step', 'init_train_state'):
    monkeypatch.setattr(runner, name, functools.partial(getattr(runner, name), compiler_options=options))


COMPILED = ('jit(train_step)', 'jit(eval_step)', 'jit(_init_state)')


@pytest.fixture
def compiled() -> Iterator[list[str]]:
  """The names of the functions XLA compiles while the test runs."""
  names: list[str] = []

  def listen(event: str, duration: float, **kwargs: Any) -> None:
    del duration
    if event == '/jax/core/compile/backend_compile_duration':
      names.append(kwargs.get('fun_name', '?'))

  jax.monitoring.register_event_duration_secs_listener(listen)
  yield names
  jax.monitoring.unregister_event_duration_listener(listen)


# --- 1. every family learns ----------------------------------------------------------------------------------

def assert_loss_falls(workdir: Path, final: Mapping[str, float], drop: float) -> None:
  (first_step, first), *_ = train_losses(workdir)
  assert first_step == 1
  assert first == pytest.approx(math.log(VOCAB), abs=0.1)  # an untrained model guesses uniformly
  assert final['loss'] < first - drop, (first, final)


def test_gpt_loss_falls(reference):
  assert_loss_falls(reference.workdir, reference.final, drop=1.2)
  assert reference.final['perplexity'] == pytest.approx(math.exp(reference.final['loss']))


def test_startup_breakdown_is_printed_and_logged(reference, interrupted):
  """Every launch prints one start-up line before its first progress line and logs it as one 'startup' row of
  metrics.jsonl at the step it starts from (not in TensorBoard); the phases and 'other' add up to the total."""
  (row,) = metrics.read_metrics(reference.workdir / metrics.JSONL_NAME, metrics.Split.STARTUP)
  assert row['step'] == 0 and row['compile_s'] > 0 and row['init_s'] > 0 and row['first_batch_s'] > 0
  phases = sum(v for k, v in row.items() if k.endswith('_s') and k != 'total_s')
  assert phases == pytest.approx(row['total_s'])
  assert not (reference.workdir / metrics.TB_DIR / metrics.Split.STARTUP.value).exists()
  rows = metrics.read_metrics(interrupted.workdir / metrics.JSONL_NAME, metrics.Split.STARTUP)
  assert [r['step'] for r in rows] == [0, interrupted.resumed_from, interrupted.terminated_latest]
  lines = interrupted.terminated_output.splitlines()
  first_progress = next(i for i, line in enumerate(lines) if re.match(r'step \d+/', line))
  (startup,) = [i for i, line in enumerate(lines) if line.startswith('start-up ')]
  assert startup < first_progress and re.search(r'compile \d+\.\d \(2 programs\), restore \d+\.\d', lines[startup])


@pytest.mark.parametrize('name,overrides', [
    ('bert_tiny', {'optim.learning_rate': 3e-3}),  # MLM
    ('t5_tiny', {'optim.learning_rate': 1e-2, 'model.head_dim': 16}),  # span corruption
], ids=['bert_mlm', 't5_span_corruption'])
def test_family_loss_falls(reference, tmp_path, fast_compile, name, overrides):
  copy_tokenizer(reference.workdir, tmp_path)
  steps = 60
  config = make_config(name, TINY | overrides | {
      'train.num_steps': steps, 'train.eval_every': steps, 'train.checkpoint_every': steps, 'train.log_every': 20,
      'optim.warmup_steps': 5})
  final = runner.train_and_evaluate(config, tmp_path)
  assert_loss_falls(tmp_path, final, drop=1.0)
  assert committed_steps(tmp_path) == [steps]


# --- 2, 3. a killed run, a preempted run: exact resume -------------------------------------------------------

def test_killed_run_resumes_exactly(reference, interrupted):
  assert interrupted.killed_returncode == -signal.SIGKILL
  assert 20 <= interrupted.resumed_from < STEPS
  assert latest_step(interrupted.workdir) == STEPS
  got = named_leaves(restore_params(interrupted.workdir, GPT))
  assert got.keys() == reference.params.keys()
  different = [name for name, value in got.items() if not np.array_equal(value, reference.params[name])]
  assert not different, f'parameters not bit-identical to the uninterrupted run: {different}'
  assert interrupted.final == reference.final
  # Every step's loss is in metrics.jsonl exactly once (the killed run's lines after its last checkpoint
  # were dropped on resume), and equals the uninterrupted run's.
  losses = train_losses(interrupted.workdir)
  assert [step for step, _ in losses] == list(range(1, STEPS + 1))
  assert losses == train_losses(reference.workdir)
  assert train_losses(interrupted.workdir, metrics.Split.EVAL) == train_losses(reference.workdir, metrics.Split.EVAL)


def test_sigterm_saves_and_exits_0(interrupted):
  assert interrupted.terminated_returncode == 0, interrupted.terminated_output[-4000:]
  match = re.search(r'signal \d+: saved step (\d+)', interrupted.terminated_output)
  assert match, interrupted.terminated_output[-4000:]
  stopped = int(match.group(1))
  assert f'resumed from step {interrupted.resumed_from}' in interrupted.terminated_output
  assert interrupted.resumed_from < stopped < STEPS
  assert interrupted.terminated_latest == stopped  # the checkpoint SIGTERM made it write, at that step
  assert 'final evaluation' not in interrupted.terminated_output
  assert latest_step(interrupted.workdir) == STEPS  # and the rerun went on to the end


# --- 4, 5. another mesh, another number of processes ---------------------------------------------------------

def test_resume_onto_another_mesh(reference, tmp_path, fast_compile):
  workdir = tmp_path / 'run'
  shutil.copytree(reference.workdir, workdir)
  for step in committed_steps(workdir):
    if step > STEPS - 10:
      shutil.rmtree(workdir / checkpoint.CHECKPOINT_SUBDIR / str(step))
  assert latest_step(workdir) == STEPS - 10
  fsdp = GPT | {'mesh.data': 2, 'mesh.fsdp': 4}
  final = runner.train_and_evaluate(make_config('gpt_tiny', fsdp), workdir)
  assert latest_step(workdir) == STEPS
  got = named_leaves(restore_params(workdir, fsdp))
  for name, value in got.items():  # other reductions, so close rather than identical
    # The key projection's bias gets no gradient (softmax ignores a shift shared by every key): Adam scales
    # its float-noise gradient up to steps whose size depends on the summation order.
    atol = 1e-4 if name.endswith("['key']['bias']") else 1e-6
    np.testing.assert_allclose(value, reference.params[name], rtol=1e-4, atol=atol, err_msg=name)
  assert final['loss'] == pytest.approx(reference.final['loss'], rel=1e-4)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_processes_match_one(reference, tmp_path):
  """Two local processes of 4 CPU devices each (jax.distributed), on the reference's (8, 1, 1) mesh: the
  pipeline gives them the same global batches, so their first steps are the reference run's."""
  steps = 40
  workdir = tmp_path / 'run'
  copy_tokenizer(reference.workdir, workdir)  # two processes must not both train it
  port = free_port()
  overrides = GPT | {'train.num_steps': steps, 'train.log_every': 10, 'train.checkpoint_every': steps}
  env = subprocess_env(XLA_FLAGS='--xla_force_host_platform_device_count=4')  # no shared compile cache
  logs = [tmp_path / f'process_{i}.log' for i in range(2)]
  procs = []
  try:
    for i, log in enumerate(logs):
      distributed = {'distributed.coordinator_address': f'localhost:{port}', 'distributed.num_processes': 2,
                     'distributed.process_id': i}
      with open(log, 'w') as out:
        procs.append(subprocess.Popen(train_command(workdir, overrides | distributed), cwd=ROOT, env=env,
                                      stdout=out, stderr=subprocess.STDOUT))
    for proc in procs:
      proc.wait(timeout=SUBPROCESS_TIMEOUT)
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  for proc, log in zip(procs, logs):
    assert proc.returncode == 0, tail(log)
  assert 'final evaluation' in logs[0].read_text() and 'final evaluation' not in logs[1].read_text()
  assert committed_steps(workdir) == [steps]
  iterator_files = (workdir / checkpoint.CHECKPOINT_SUBDIR / str(steps) / 'data_iterator').glob('*.json')
  assert sorted(p.name for p in iterator_files) == ['process_0-of-2.json', 'process_1-of-2.json']
  got = named_leaves(restore_params(workdir, GPT))  # onto this process's 8 devices
  want = named_leaves(restore_params(reference.workdir, GPT, step=steps))
  for name, value in got.items():
    np.testing.assert_allclose(value, want[name], rtol=1e-5, atol=1e-5, err_msg=name)
  logged = train_losses(workdir)
  assert [step for step, _ in logged] == [1, 10, 20, 30, 40]
  reference_losses = dict(train_losses(reference.workdir))
  for step, loss in logged:
    assert loss == pytest.approx(reference_losses[step], rel=1e-5), step


def test_resume_with_other_distributed_settings(reference, tmp_path):
  """config.distributed differs between the processes of a run (process_id) and between launches (the
  coordinator's port): it is not part of the config a workdir pins. Resuming at the last step evaluates."""
  workdir = tmp_path / 'run'
  shutil.copytree(reference.workdir, workdir)
  relaunched = GPT | {'distributed.coordinator_address': 'localhost:1234', 'distributed.num_processes': 2,
                      'distributed.process_id': 1}
  final = runner.train_and_evaluate(make_config('gpt_tiny', relaunched), workdir)
  assert final == pytest.approx(reference.final, rel=1e-6)


# --- 6. bad inputs: messages before any compile --------------------------------------------------------------

@pytest.mark.parametrize('overrides,message', [
    ({'mesh.data': 3}, r'mesh\.data=3, mesh\.fsdp=1, mesh\.tensor=1: 3 devices in all, but there are 8 devices'),
    ({'train.batch_size': 6}, r'6 rows do not split over the 8 devices .* use train\.batch_size a multiple of 8'),
    ({'data.seq_len': 128}, r'data\.seq_len=128 exceeds model\.max_len=64'),
    ({'data.objective': 'mlm'}, r'data\.objective=mlm trains family=encoder .* but model\.family=decoder'),
    ({'model.vocab_size': 500}, rf'data\.tokenizer has {VOCAB} ids but model\.vocab_size=500'),
], ids=['mesh', 'batch', 'positions', 'objective', 'vocab'])
def test_bad_input_fails_before_compiling(reference, tmp_path, compiled, overrides, message):
  copy_tokenizer(reference.workdir, tmp_path)
  with pytest.raises(ValueError, match=message):
    runner.train_and_evaluate(make_config('gpt_tiny', TINY | overrides), tmp_path)
  assert not set(compiled) & set(COMPILED), compiled


def test_unprepared_dataset_names_the_command(tmp_path, compiled):
  data_dir = tmp_path / 'tfds'
  overrides = TINY | {'data.source': 'tfds:glue/sst2', 'data.objective': 'classification',
                      'data.data_dir': str(data_dir), 'model.head': 'classifier', 'model.num_labels': 2,
                      'model.pooler': True, 'model.lm_head_bias': False}
  command = r'`tfds build glue/sst2 --data_dir .* --file_format array_record`'
  with pytest.raises(ValueError, match=rf'not prepared as array_record in .*{command}'):
    runner.build_run(make_config('bert_tiny', overrides), tmp_path / 'run')
  assert not set(compiled) & set(COMPILED), compiled


def test_workdir_of_another_config(reference, tmp_path, compiled, capsys):
  workdir = tmp_path / 'run'
  shutil.copytree(reference.workdir, workdir)
  with pytest.raises(checkpoint.ConfigMismatchError, match=r'model\.d_model: saved 32, now 64'):
    runner.train_and_evaluate(make_config('gpt_tiny', GPT | {'model.d_model': 64}), workdir)
  assert not set(compiled) & set(COMPILED), compiled
  assert 'data:' not in capsys.readouterr().out  # said before the data is read


# --- 7. the loss goes non-finite -----------------------------------------------------------------------------

NAN_STEPS = 8
# A learning rate that blows the model up within a few steps (the warmup's first update is 0, so the
# early checkpoints are good).
DIVERGING = TINY | {'optim.learning_rate': 1e6, 'optim.clip_norm': 0.0, 'optim.warmup_steps': 3,
                    'train.num_steps': NAN_STEPS, 'train.checkpoint_every': 1, 'train.log_every': 1,
                    'train.eval_every': NAN_STEPS}


def all_finite(params: Any) -> bool:
  return all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params))


def test_nan_halt_names_the_step_and_a_good_checkpoint(reference, tmp_path, fast_compile):
  copy_tokenizer(reference.workdir, tmp_path)
  config = make_config('gpt_tiny', DIVERGING | {'train.nan_policy': 'halt'})
  with pytest.raises(runner.TrainingHalted) as error:
    runner.train_and_evaluate(config, tmp_path)
  message = str(error.value)
  bad = int(re.search(r'at step (\d+)', message).group(1))
  good = int(re.search(r'the last good checkpoint is step (\d+)', message).group(1))
  assert 1 <= good < bad < NAN_STEPS and str(tmp_path / 'checkpoints') in message
  assert latest_step(tmp_path) == good  # nothing of the bad step was saved
  rows = {row['step']: row for row in metrics.read_metrics(tmp_path / metrics.JSONL_NAME, metrics.Split.TRAIN)
          if 'loss' in row}
  assert not (math.isfinite(rows[bad]['loss']) and math.isfinite(rows[bad]['param_norm']))
  # The checkpoint it names is one to go back to: its parameters are finite.
  assert all_finite(restore_params(tmp_path, DIVERGING))


def test_nan_skip_finishes_with_finite_params(reference, tmp_path, fast_compile):
  copy_tokenizer(reference.workdir, tmp_path)
  runner.train_and_evaluate(make_config('gpt_tiny', DIVERGING | {'train.nan_policy': 'skip'}), tmp_path)
  assert latest_step(tmp_path) == NAN_STEPS
  rows = [row for row in metrics.read_metrics(tmp_path / metrics.JSONL_NAME, metrics.Split.TRAIN) if 'loss' in row]
  assert any(not math.isfinite(row['grad_norm']) for row in rows)  # there were updates to skip
  assert all(math.isfinite(row['param_norm']) for row in rows)
  assert all_finite(restore_params(tmp_path, DIVERGING))


def test_restart_before_the_first_checkpoint_logs_each_step_once(reference, tmp_path, fast_compile):
  """A run killed before its first checkpoint left steps 1-3 in metrics.jsonl; the restart from step 0
  writes them again, and only its own lines remain."""
  copy_tokenizer(reference.workdir, tmp_path)
  (tmp_path / metrics.JSONL_NAME).write_text(''.join(
      f'{{"step": {s}, "split": "train", "wall_time": 0.0, "loss": 99.0}}\n' for s in (1, 2, 3)))
  runner.train_and_evaluate(make_config('gpt_tiny', GPT | {'train.num_steps': 4}), tmp_path)
  logged = train_losses(tmp_path)
  assert [step for step, _ in logged] == [1, 2, 3, 4] and 99.0 not in [loss for _, loss in logged]
