"""Checkpoints: exact round trips, restore onto other meshes, retention, async saves, crashes, configs."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as PS

from trainer import checkpoint as C

ROOT = pathlib.Path(__file__).resolve().parents[1]
AXES = ('data', 'fsdp', 'tensor')

# Logical layout of the tiny state: the specs stay, the mesh changes.
SPECS = {'step': PS(), 'params': {'kernel': PS('fsdp', 'tensor'), 'bias': PS('tensor'), 'embed': PS('tensor', 'fsdp')},
         'opt_state': {'mu': PS('fsdp', 'tensor'), 'count': PS()}}


def make_mesh(shape: tuple[int, int, int], devices: int = 8) -> jax.sharding.Mesh:
  return jax.make_mesh(shape, AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3, devices=jax.devices()[:devices])


def host_state(seed: int = 0, step: int = 7) -> dict:
  """Numpy values: float32, bfloat16 and int32 leaves, every value distinct."""
  rng = np.random.default_rng(seed)
  return {'step': np.array(step, np.int32),
          'params': {'kernel': rng.standard_normal((8, 16), np.float32), 'bias': rng.standard_normal(16, np.float32),
                     'embed': rng.standard_normal((16, 8), np.float32).astype(jnp.bfloat16)},
          'opt_state': {'mu': rng.standard_normal((8, 16), np.float32), 'count': np.array(step, np.int32)}}


def shardings(mesh: jax.sharding.Mesh, specs=SPECS):
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs, is_leaf=lambda x: isinstance(x, PS))


def device_state(host, mesh):
  return jax.tree.map(jax.device_put, host, shardings(mesh, {k: SPECS[k] for k in host}))


def target(host, mesh):
  return C.abstract(host, shardings(mesh, {k: SPECS[k] for k in host}))


def assert_tree_equal(got, want) -> None:
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert g.dtype == w.dtype and g.shape == w.shape
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def make_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict({
      'model': {'family': 'decoder', 'd_model': 128, 'num_heads': 4, 'dropout_rate': 0.1},
      'data': {'source': 'builtin:sotu', 'seq_len': 128, 'worker_count': 0},
      'optim': {'name': 'adamw', 'learning_rate': 3e-4},
      'mesh': {'data': -1, 'fsdp': 1, 'tensor': 1},
      'train': {'num_steps': 1000, 'batch_size': 32, 'checkpoint_every': 100, 'seed': 0}})
  for path, value in overrides.items():
    section, field = path.split('.')
    config[section][field] = value
  return config


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
  """A workdir with one checkpoint (step 7) written from a (2, 2, 2) mesh; and the values in it."""
  workdir = tmp_path_factory.mktemp('saved')
  host = host_state()
  with C.Checkpointer(workdir, config=make_config()) as ckpt:
    assert ckpt.save(7, device_state(host, make_mesh((2, 2, 2))), data_iterator={'next_index': 3}, force=True)
  return workdir, host


def test_round_trip_is_exact(tmp_path):
  from data.pipeline import InputIterator, PipelineConfig, make_dataset
  dataset = make_dataset([np.full(2, i, np.int32) for i in range(10)], lambda i, x: {'x': x},
                         PipelineConfig(global_batch_size=2, seed=1))
  it = InputIterator(dataset)
  for _ in range(3):
    next(it)
  mesh, host, config = make_mesh((2, 2, 2)), host_state(), make_config()
  config.mesh.rules = {'embed': ('fsdp', 'tensor')}  # a tuple: JSON gives a list back
  with C.Checkpointer(tmp_path, config=config, save_every=10) as ckpt:
    assert ckpt.save(10, device_state(host, mesh), data_iterator=it.get_state())
    expected_batch = next(it)
    ckpt.wait_until_finished()
    restored = ckpt.restore(target(host, mesh))
  assert restored.step == 10 and restored.data_iterator == {'next_index': 3}
  assert_tree_equal(restored.state, host)
  for leaf, sharding in zip(jax.tree.leaves(restored.state), jax.tree.leaves(shardings(mesh))):
    assert leaf.sharding == sharding
  assert restored.config.to_dict() == C.config_to_json(config)
  assert restored.config.mesh.rules.embed == ['fsdp', 'tensor'] and restored.config.model.d_model == 128
  fresh = InputIterator(dataset)
  fresh.set_state(restored.data_iterator)
  np.testing.assert_array_equal(next(fresh)['x'], expected_batch['x'])
  # The human-readable copy and the per-process iterator file are plain files in the committed step.
  step_dir = tmp_path / 'checkpoints' / '10'
  assert 'd_model: 128' in (step_dir / 'config' / 'config.txt').read_text()
  assert json.loads((step_dir / 'data_iterator' / 'process_0-of-1.json').read_text()) == {'next_index': 3}


@pytest.mark.parametrize('spelling', ['runs/x', './runs/../runs/x', '~/runs/x'])
def test_relative_and_home_paths_save_and_restore(tmp_path, monkeypatch, spelling):
  """orbax refuses relative paths (from its asynchronous save); a workdir as a user types it works."""
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv('HOME', str(tmp_path))
  mesh, host = make_mesh((1, 1, 1), devices=1), host_state()
  with C.Checkpointer(spelling, config=make_config()) as ckpt:
    assert ckpt.save(3, device_state(host, mesh), force=True)
  assert (tmp_path / 'runs' / 'x' / C.CHECKPOINT_SUBDIR / '3' / 'state').is_dir()
  with C.Checkpointer(spelling, read_only=True) as ckpt:
    assert ckpt.directory == tmp_path / 'runs' / 'x' / C.CHECKPOINT_SUBDIR
    assert_tree_equal(ckpt.restore(target(host, mesh)).state, host)


@pytest.mark.parametrize('shape,devices', [((1, 8, 1), 8), ((4, 1, 2), 8), ((2, 1, 2), 4), ((1, 1, 1), 1)])
def test_restore_onto_another_mesh(saved, shape, devices):
  workdir, host = saved
  mesh = make_mesh(shape, devices)
  with C.Checkpointer(workdir, read_only=True) as ckpt:
    restored = ckpt.restore(target(host, mesh))
  assert_tree_equal(restored.state, host)
  for leaf, sharding in zip(jax.tree.leaves(restored.state), jax.tree.leaves(shardings(mesh))):
    assert leaf.sharding == sharding and len(leaf.sharding.device_set) == devices
  kernel = restored.state['params']['kernel']  # (8, 16) over (fsdp, tensor): shards of the new mesh
  assert kernel.addressable_shards[0].data.shape == (8 // shape[1], 16 // shape[2])
  assert restored.data_iterator == {'next_index': 3} and restored.config.train.num_steps == 1000


def test_restore_params_only(saved):
  workdir, host = saved
  mesh = make_mesh((1, 4, 1), 4)
  params = C.restore_params(workdir, target({'params': host['params']}, mesh)['params'])
  assert_tree_equal(params, host['params'])
  assert params['kernel'].sharding == NamedSharding(mesh, PS('fsdp', 'tensor'))


def test_any_pytree_class_as_state(tmp_path):
  """A flax struct with optax's state (named tuples) in it restores as the same classes."""

  @flax.struct.dataclass
  class TrainState:
    step: jax.Array
    params: dict
    opt_state: optax.OptState

  mesh = make_mesh((2, 2, 2))
  params = device_state({'params': host_state()['params']}, mesh)['params']
  tx = optax.adamw(1e-3)
  opt_state = tx.init(params)
  opt_state = tx.update(params, opt_state, params)[1]  # non-zero moments, count 1
  state = TrainState(step=jnp.array(1, jnp.int32), params=params, opt_state=opt_state)
  with C.Checkpointer(tmp_path, async_save=False) as ckpt:
    ckpt.save(1, state, force=True)
    restored = ckpt.restore(C.abstract(state)).state
    only_params = ckpt.restore_params(C.abstract(params))
  assert type(restored) is TrainState and type(restored.opt_state[0]) is type(opt_state[0])
  assert_tree_equal(restored, state)
  assert_tree_equal(only_params, params)


def test_target_without_shardings_is_an_error(saved):
  workdir, host = saved
  with C.Checkpointer(workdir, read_only=True) as ckpt, \
      pytest.raises(ValueError, match=r"need a sharding.*\['opt_state'\]\['count'\]"):
    ckpt.restore(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), host))


def test_save_every_n_steps_and_at_the_end(tmp_path):
  state = device_state({'step': np.array(0, np.int32)}, make_mesh((2, 2, 2)))
  with C.Checkpointer(tmp_path, save_every=3) as ckpt:
    assert [s for s in range(8) if ckpt.should_save(s)] == [3, 6]
    assert [ckpt.save(s, state) for s in range(8)] == [s in (3, 6) for s in range(8)]
    assert ckpt.save(7, state, force=True)  # the last step
    assert not ckpt.save(7, state, force=True)  # already saved: a no-op, not an error
    ckpt.wait_until_finished()
    assert ckpt.all_steps() == [3, 6, 7]
    assert ckpt.restore(C.abstract(state), 6).step == 6
    with pytest.raises(FileNotFoundError, match=r'step 5 .* steps: \[3, 6, 7\]'):
      ckpt.restore(C.abstract(state), 5)


def test_keep_last_k(tmp_path):
  state = device_state({'step': np.array(0, np.int32)}, make_mesh((2, 2, 2)))
  with C.Checkpointer(tmp_path, save_every=1, keep=2) as ckpt:
    for step in range(1, 6):
      ckpt.save(step, state)
    ckpt.wait_until_finished()
    assert ckpt.all_steps() == [4, 5] and ckpt.best_step() is None
  assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit()) == ['4', '5']


# Eval results per step: no metric at 3, another metric only at 5, a NaN (a diverged eval) at 6.
METRICS = {1: {'eval_loss': 3.0}, 2: {'eval_loss': 1.0}, 3: None, 4: {'eval_loss': 2.0}, 5: {'accuracy': 0.9},
           6: {'eval_loss': float('nan')}}


@pytest.mark.parametrize('mode,best', [('min', 2), ('max', 1)])
def test_keep_last_k_and_the_best(tmp_path, mode, best):
  state = device_state({'step': np.array(0, np.int32)}, make_mesh((2, 2, 2)))
  kwargs = dict(save_every=1, keep=2, best_metric='eval_loss', best_mode=mode)
  with C.Checkpointer(tmp_path, **kwargs) as ckpt:
    for step, metrics in METRICS.items():
      ckpt.save(step, state, metrics=metrics)
    assert ckpt.best_step() == best
    assert ckpt.all_steps() == sorted({best, 5, 6})
  with C.Checkpointer(tmp_path, **kwargs) as ckpt:  # a resumed run reads the metrics back from disk
    assert ckpt.best_step() == best and ckpt.all_steps() == sorted({best, 5, 6})
    assert ckpt.restore(C.abstract(state), 'best').step == best


def test_without_the_metric_never_best(tmp_path):
  state = device_state({'step': np.array(0, np.int32)}, make_mesh((2, 2, 2)))
  with C.Checkpointer(tmp_path, save_every=1, keep=1, best_metric='eval_loss') as ckpt:
    for step in (1, 2):
      ckpt.save(step, state, metrics={'train_loss': 0.5})
    assert ckpt.best_step() is None and ckpt.all_steps() == [2]
    with pytest.raises(FileNotFoundError, match='eval_loss'):
      ckpt.restore(C.abstract(state), 'best')


def test_async_save_returns_before_the_write_and_owns_its_copy(tmp_path, monkeypatch):
  """The background write is held until the test has donated the saved arrays to a jitted update."""
  release, writing = threading.Event(), threading.Event()
  write = C._write_text

  def held_write(path, text):
    writing.set()
    assert release.wait(timeout=60), 'save blocked the caller: the test never released the write'
    write(path, text)

  monkeypatch.setattr(C, '_write_text', held_write)
  mesh, host = make_mesh((2, 2, 2)), host_state()
  state = device_state(host, mesh)
  with C.Checkpointer(tmp_path) as ckpt:
    assert ckpt.save(5, state, data_iterator={'next_index': 9}, force=True)  # returns with the write held
    assert writing.wait(timeout=60)
    assert ckpt.latest_step() is None and ckpt.all_steps() == []  # in flight: not committed
    names = {p.name for p in (tmp_path / 'checkpoints').iterdir()}
    assert '5.orbax-checkpoint-tmp' in names and '5' not in names
    update = jax.jit(lambda s: jax.tree.map(lambda x: x * 0 + 1, s), donate_argnums=0)
    saved_arrays, state = state, update(state)  # the saved buffers are given away and overwritten
    assert all(x.is_deleted() for x in jax.tree.leaves(saved_arrays))
    release.set()
    ckpt.wait_until_finished()
    assert ckpt.latest_step() == 5
    restored = ckpt.restore(target(host, mesh))
  assert_tree_equal(restored.state, host)
  assert restored.data_iterator == {'next_index': 9}
  assert all(np.all(np.asarray(x) == 1) for x in jax.tree.leaves(state))


CRASH_SCRIPT = textwrap.dedent('''
    import os, sys, time
    os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=8'
    os.environ['JAX_PLATFORMS'] = 'cpu'
    import numpy as np
    from tests import test_checkpoint as T
    from trainer import checkpoint as C
    ckpt = C.Checkpointer(sys.argv[1], config=T.make_config())
    mesh = T.make_mesh((2, 2, 2))
    ckpt.save(1, T.device_state(T.host_state(seed=1), mesh), data_iterator={'next_index': 1}, force=True)
    ckpt.wait_until_finished()
    def stuck_write(path, text):  # the process dies here, in the middle of writing step 2
      print('WRITING', flush=True)
      time.sleep(300)
    C._write_text = stuck_write
    big = {'params': {'kernel': np.ones((2048, 4096), np.float32)}}  # 32 MiB more to write
    ckpt.save(2, T.device_state(T.host_state(seed=2), mesh) | big, data_iterator={'next_index': 2}, force=True)
    time.sleep(300)
''')


def test_a_save_killed_mid_write_is_ignored(tmp_path):
  log = tmp_path / 'stderr.txt'
  with open(log, 'w') as stderr:
    proc = subprocess.Popen([sys.executable, '-c', CRASH_SCRIPT, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=stderr, text=True)
    try:
      for line in proc.stdout:
        if line.strip() == 'WRITING':
          break
      proc.send_signal(signal.SIGKILL)
    finally:
      proc.kill()
      proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL, log.read_text()[-3000:]
  ckpt_dir = tmp_path / 'checkpoints'
  assert {'1', '2.orbax-checkpoint-tmp'} <= {p.name for p in ckpt_dir.iterdir()}
  mesh, host = make_mesh((1, 8, 1)), host_state(seed=1)
  with C.Checkpointer(tmp_path, read_only=True) as ckpt:  # evaluation: sees step 1, touches nothing
    assert ckpt.latest_step() == 1 and ckpt.all_steps() == [1]
    assert_tree_equal(ckpt.restore(target(host, mesh)).state, host)
  assert (ckpt_dir / '2.orbax-checkpoint-tmp').exists()
  with C.Checkpointer(tmp_path, config=make_config()) as ckpt:  # the resumed run
    assert ckpt.latest_step() == 1
    restored = ckpt.restore(target(host, mesh))
    assert_tree_equal(restored.state, host)
    assert restored.data_iterator == {'next_index': 1}
    assert ckpt.save(2, restored.state, force=True)  # the same step again, over the debris
    ckpt.wait_until_finished()
    assert ckpt.all_steps() == [1, 2]
  assert not (ckpt_dir / '2.orbax-checkpoint-tmp').exists()


def test_config_mismatch_names_the_fields(tmp_path):
  state = device_state({'step': np.array(0, np.int32)}, make_mesh((2, 2, 2)))
  with C.Checkpointer(tmp_path, config=make_config()) as ckpt:
    ckpt.check_config(make_config(**{'model.d_model': 256}))  # an empty workdir holds no config
    ckpt.save(100, state, force=True)
  # Runtime fields may change on resume: longer training, another mesh, other checkpoint frequency.
  resumed = make_config(**{'train.num_steps': 5000, 'mesh.fsdp': 8, 'train.checkpoint_every': 50})
  with C.Checkpointer(tmp_path, config=resumed) as ckpt:
    ckpt.check_config(resumed)
    changed = make_config(**{'model.d_model': 256, 'optim.learning_rate': 1e-3, 'train.num_steps': 5000})
    changed.model.position = 'rope'
    with pytest.raises(C.ConfigMismatchError) as error:
      ckpt.check_config(changed)
  message = str(error.value)
  assert 'holds a different config' in message and 'step 100' in message
  assert 'model.d_model: saved 128, now 256' in message
  assert 'optim.learning_rate: saved 0.0003, now 0.001' in message
  assert "model.position: saved '<absent>', now 'rope'" in message
  assert 'train.num_steps:' not in message


def test_a_field_added_since_a_checkpoint_was_saved_counts_as_its_default():
  """A workdir written before `data.length_buckets` existed was trained with its default: resuming it with the
  default is no mismatch, with another value it is."""
  saved = make_config().to_dict()
  defaults = {'data': {'length_buckets': (), 'bucket_window': 32}, 'distributed': {'process_id': -1}}
  now = make_config()
  now.data.length_buckets, now.data.bucket_window = (), 32
  now.distributed = {'process_id': -1}
  assert C.config_differences(saved, now, defaults=defaults) == []
  now.data.length_buckets = (16, 128)
  assert C.config_differences(saved, now, defaults=defaults) == [('data.length_buckets', [], [16, 128])]
  assert C.config_differences(saved, now)[0] == ('data.bucket_window', '<absent>', 32)


MULTIPROCESS_SCRIPT = textwrap.dedent('''
    import os, sys
    os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=4'
    os.environ['JAX_PLATFORMS'] = 'cpu'
    import jax, numpy as np
    index, port, workdir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    jax.distributed.initialize(f'localhost:{port}', num_processes=2, process_id=index)
    from tests import test_checkpoint as T
    from trainer import checkpoint as C
    host, mesh = T.host_state(), T.make_mesh((2, 2, 2))
    state = jax.tree.map(lambda x, s: jax.make_array_from_callback(x.shape, s, lambda i: x[i]), host,
                         T.shardings(mesh))
    with C.Checkpointer(workdir, config=T.make_config()) as ckpt:
      ckpt.save(4, state, data_iterator={'next_index': 40 + index}, force=True)
      ckpt.wait_until_finished()
      restored = ckpt.restore(T.target(host, T.make_mesh((1, 8, 1))))
      ckpt.save(5, state, data_iterator={'next_index': 50 + index}, force=True)
      if index == 1:  # step 5 reads on process 0 but not on process 1 (e.g. a flaky disk of its host)
        read = C.ProcessJsonHandler.restore
        def flaky(self, directory, args=None):
          if directory.parent.name == '5':
            raise C.DamagedCheckpointError(directory.parent, 'unreadable here')
          return read(self, directory, args)
        C.ProcessJsonHandler.restore = flaky
      resumed = ckpt.resume(T.target(host, T.make_mesh((1, 8, 1))))
    kernel = restored.state['params']['kernel']
    for shard in kernel.addressable_shards:
      np.testing.assert_array_equal(np.asarray(shard.data), host['params']['kernel'][shard.index])
    print('OK', index, restored.data_iterator['next_index'], flush=True)
    print('RESUMED', index, resumed.step, resumed.data_iterator['next_index'], flush=True)
''')


def test_two_processes_save_their_own_iterator_states(tmp_path):
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  procs = [subprocess.Popen([sys.executable, '-c', MULTIPROCESS_SCRIPT, str(i), str(port), str(tmp_path)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  try:
    outputs = [p.communicate(timeout=120) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for i, (p, (out, err)) in enumerate(zip(procs, outputs)):
    assert p.returncode == 0, err[-3000:]
    assert f'OK {i} {40 + i}' in out  # each process got its own iterator state back
    assert f'RESUMED {i} 4 {40 + i}' in out  # both fell back from step 5, which failed on process 1
  assert "process 1: checkpoint" in outputs[1][1] and 'unreadable on process(es) [1]' in outputs[0][0]
  assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir() if p.name[0].isdigit()) == ['4', '5.corrupt']
  files = sorted(p.name for p in (tmp_path / 'checkpoints' / '4' / 'data_iterator').iterdir() if p.suffix == '.json')
  assert files == ['process_0-of-2.json', 'process_1-of-2.json']
  # One process (8 devices) reads the state of two, but not their iterator positions.
  host, mesh = host_state(), make_mesh((4, 1, 2))
  with C.Checkpointer(tmp_path, read_only=True) as ckpt:
    with pytest.raises(ValueError, match=r'states of \[2\] processes, this run has 1.*restore_data_iterator=False'):
      ckpt.restore(target(host, mesh))
    restored = ckpt.restore(target(host, mesh), restore_data_iterator=False)
  assert_tree_equal(restored.state, host)
  assert restored.data_iterator is None


# --- damage: a step that does not read is set aside, the run resumes from the one before -------------------

def largest_data_file(step_dir: pathlib.Path) -> pathlib.Path:
  """The largest file of the state's OCDBT data (what a restore reads the arrays from)."""
  return max((p for p in (step_dir / 'state' / 'd').iterdir() if p.is_file()), key=lambda p: p.stat().st_size)


def truncate(step_dir: pathlib.Path) -> None:
  path = largest_data_file(step_dir)
  path.write_bytes(path.read_bytes()[:100])


# Each kind of damage, done to a committed step folder, and the words its one-line reason holds.
DAMAGE = {
    'truncated_tensor_data': (truncate, r'state/d/[0-9a-f]+: Requested byte range \[0, \d+\) is not valid for value '
                                        r'of size 100'),
    'deleted_tensor_data': (lambda d: largest_data_file(d).unlink(), r'state/d/[0-9a-f]+ is missing'),
    'deleted_metadata': (lambda d: (d / 'state' / '_METADATA').unlink(), r'state/_METADATA is missing'),
    'empty_config': (lambda d: (d / 'config' / 'config.json').write_text(''), r'config/config\.json is empty'),
    'deleted_iterator_file': (lambda d: (d / 'data_iterator' / 'process_0-of-1.json').unlink(),
                              r'data_iterator/ is empty \(no process_<p>-of-<P>\.json\)'),
}


@pytest.fixture(scope='module')
def two_steps(tmp_path_factory):
  """A workdir with steps 1 and 2 (states of seeds 1 and 2) written from one device; and that mesh."""
  workdir = tmp_path_factory.mktemp('two_steps')
  mesh = make_mesh((1, 1, 1), devices=1)
  with C.Checkpointer(workdir, config=make_config(), keep=None) as ckpt:
    for step in (1, 2):
      ckpt.save(step, device_state(host_state(seed=step), mesh), data_iterator={'next_index': step}, force=True)
  return workdir, mesh


def copy_of(two_steps, tmp_path) -> pathlib.Path:
  workdir = tmp_path / 'run'
  shutil.copytree(two_steps[0], workdir)
  return workdir


@pytest.mark.parametrize('kind', DAMAGE)
def test_a_damaged_step_is_set_aside_and_the_previous_restored(two_steps, tmp_path, kind):
  workdir, mesh = copy_of(two_steps, tmp_path), two_steps[1]
  damage, reason = DAMAGE[kind]
  folder = workdir / 'checkpoints'
  damage(folder / '2')
  host, lines = host_state(seed=1), []
  with C.Checkpointer(workdir, config=make_config()) as ckpt:
    ckpt.check_config(make_config())  # a damaged config is passed over: step 1's is compared
    with pytest.raises(C.DamagedCheckpointError, match=rf'^checkpoint {folder / "2"} is damaged: {reason}$'):
      ckpt.restore(target(host, mesh))  # a plain restore (evaluation) says what is wrong, in one line
    restored = ckpt.resume(target(host, mesh), report=lines.append)
    assert restored.step == 1 and restored.data_iterator == {'next_index': 1}
    assert_tree_equal(restored.state, host)
    assert ckpt.all_steps() == [1]
    # The step is trained again and saved again: not skipped as 'already saved'.
    assert ckpt.save(2, device_state(host_state(seed=2), mesh), data_iterator={'next_index': 2}, force=True)
    ckpt.wait_until_finished()
    assert ckpt.all_steps() == [1, 2]
  assert len(lines) == 1 and '\n' not in lines[0]
  assert re.fullmatch(rf'checkpoint step 2 in {folder / "2"} is damaged \({reason}\); set aside as 2\.corrupt, '
                      'trying the previous step', lines[0]), lines[0]
  assert sorted(p.name for p in folder.iterdir()) == ['1', '2', '2.corrupt']


def test_every_step_damaged_is_an_error_naming_them(two_steps, tmp_path):
  workdir, mesh = copy_of(two_steps, tmp_path), two_steps[1]
  folder = workdir / 'checkpoints'
  (folder / '1.corrupt').mkdir()  # set aside by an earlier run: the new name gets a suffix
  truncate(folder / '2')
  (folder / '1' / 'config' / 'config.json').write_text('{"model": ')
  lines = []
  with C.Checkpointer(workdir, config=make_config()) as ckpt:
    ckpt.check_config(make_config())  # no config reads: nothing to compare
    with pytest.raises(C.NoGoodCheckpointError) as error:
      ckpt.resume(target(host_state(), mesh), report=lines.append)
  message = str(error.value)
  assert '\n' not in message and len(lines) == 2
  assert message.startswith(f'no good checkpoint in {folder}: set aside as damaged: 2 -> 2.corrupt (state/d/')
  assert '1 -> 1.corrupt.1 (config/config.json is not valid JSON (Expecting value: line 1 column 11' in message
  assert f'use a new --workdir or move {folder} away' in message
  assert sorted(p.name for p in folder.iterdir()) == ['1.corrupt', '1.corrupt.1', '2.corrupt']
  # Rerunning the same command does not start afresh over them without being told to.
  with C.Checkpointer(workdir, config=make_config()) as ckpt, \
      pytest.raises(C.NoGoodCheckpointError, match=r'set aside as damaged: 1\.corrupt; 1\.corrupt\.1; 2\.corrupt'):
    ckpt.resume(target(host_state(), mesh))


def test_verify_lists_every_folder_and_exits_1_unless_the_latest_step_is_good(two_steps, tmp_path, capsys):
  from trainer import verify
  workdir = copy_of(two_steps, tmp_path)
  folder = workdir / 'checkpoints'
  assert verify.main(['verify', str(workdir)]) == 0
  out = capsys.readouterr().out.splitlines()
  assert out[0] == str(folder)
  assert re.fullmatch(r'  1 +ok: 6 arrays \(0\.0 MB\), data iterator of 1 process, config', out[1]), out
  assert out[-1] == 'the latest step, 2, is good'
  truncate(folder / '2')
  (folder / '3.orbax-checkpoint-tmp').mkdir()
  (folder / '0.corrupt').mkdir()
  assert verify.main([str(workdir)]) == 1
  out = capsys.readouterr().out.splitlines()
  assert [line.split()[:2] for line in out[1:-1]] == [['1', 'ok:'], ['2', 'damaged:'], ['0.corrupt', 'set'],
                                                        ['3.orbax-checkpoint-tmp', 'unfinished']]
  assert re.search(r'damaged: state/d/[0-9a-f]+: Requested byte range', out[2]), out
  assert out[-1] == 'the latest step, 2, is damaged: a run resumes from step 1 and sets the damaged steps aside'
  assert sorted(p.name for p in folder.iterdir()) == ['0.corrupt', '1', '2', '3.orbax-checkpoint-tmp']  # read only
  assert verify.main([str(tmp_path / 'empty')]) == 1
  assert capsys.readouterr().out.splitlines()[-1] == 'no committed step: a run starts from the beginning'


def fill_the_disk_at(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
  """The checkpoint writes of `step` fail with ENOSPC from now on (through the `_write_text` seam), as on a full
  disk; the other steps' writes go through."""
  write = C._write_text

  def full_disk(path, text):
    if f'{step}.orbax-checkpoint-tmp' in str(path):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    write(path, text)

  monkeypatch.setattr(C, '_write_text', full_disk)


def test_a_failed_background_save_stops_at_the_next_check(two_steps, tmp_path, monkeypatch):
  """A full disk while step 3 is written in the background: the next check names the step, the folder and the
  cause; steps 1 and 2 stay (retention deletes old steps only after a save commits)."""
  workdir, mesh = copy_of(two_steps, tmp_path), two_steps[1]
  fill_the_disk_at(monkeypatch, 3)
  ckpt = C.Checkpointer(workdir, config=make_config(), keep=1)
  assert ckpt.save(3, device_state(host_state(seed=3), mesh), data_iterator={'next_index': 3}, force=True)
  deadline = time.monotonic() + 60
  with pytest.raises(C.CheckpointSaveError) as error:
    while time.monotonic() < deadline:  # the loop's check after every step: returns at once while writing
      ckpt.check_for_errors()
      time.sleep(0.01)
  assert str(error.value) == (f'saving step 3 to {workdir / "checkpoints"} failed: [Errno 28] No space left on '
                              'device; the last good checkpoint is step 2: free space and rerun the same command to '
                              'resume')
  ckpt.check_for_errors()  # reported once
  ckpt.close()
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir()) == ['1', '2', '3.orbax-checkpoint-tmp']
  with C.Checkpointer(workdir, config=make_config()) as ckpt:
    restored = ckpt.resume(target(host_state(seed=2), mesh))
  assert restored.step == 2
  assert_tree_equal(restored.state, host_state(seed=2))
