"""The grain input pipeline: deterministic order, epochs, process sharding, exact resume, global arrays."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from data.objectives import Stream, example_rng
from data.pipeline import InputIterator, PipelineConfig, make_dataset, to_global
from model import partitioning as P

N = 24  # examples in the fake source


def source() -> list[dict[str, np.ndarray]]:
  return [{'id': np.array(i, np.int32), 'tokens': np.full((3,), i, np.int32)} for i in range(N)]


def transform(index: int, example: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Like an objective: a per-position random draw on top of the example."""
  noise = (example_rng(7, 0, index, Stream.MLM).random(3) * 1000).astype(np.int32)
  return {'id': example['id'], 'tokens': example['tokens'] + 1000 * noise, 'position': np.array(index)}


def batches(n: int, *, process_index: int = 0, process_count: int = 1, **kw) -> list[dict[str, np.ndarray]]:
  config = PipelineConfig(**({'global_batch_size': 4, 'seed': 3} | kw))
  it = InputIterator(make_dataset(source(), transform, config, process_index=process_index,
                                  process_count=process_count))
  out = [next(it) for _ in range(n)]
  it.close()
  return out


def test_deterministic_and_seeded():
  a, b = batches(5), batches(5)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['tokens'], y['tokens'])
  assert not all(np.array_equal(x['id'], y['id']) for x, y in zip(a, batches(5, seed=4)))


def test_each_epoch_is_a_new_permutation_of_every_example():
  ids = np.concatenate([b['id'] for b in batches(2 * N // 4)])
  first, second = ids[:N], ids[N:]
  assert sorted(first) == list(range(N)) and sorted(second) == list(range(N))
  assert not np.array_equal(first, second)
  assert not np.array_equal(first, np.arange(N))  # shuffled at all
  positions = np.concatenate([b['position'] for b in batches(2 * N // 4)])
  np.testing.assert_array_equal(positions, np.arange(2 * N))  # the stream position feeds the transform


def test_one_pass_without_shuffle():
  config = PipelineConfig(global_batch_size=5, shuffle=False, num_epochs=1, drop_remainder=False)
  got = list(make_dataset(source(), transform, config))
  assert [len(b['id']) for b in got] == [5, 5, 5, 5, 4]
  np.testing.assert_array_equal(np.concatenate([b['id'] for b in got]), np.arange(N))


@pytest.mark.parametrize('process_count', [2, 4])
def test_processes_feed_disjoint_rows_of_the_same_global_batch(process_count):
  single = batches(6)
  per_process = [batches(6, process_index=p, process_count=process_count) for p in range(process_count)]
  for step, global_batch in enumerate(single):
    for key in global_batch:
      rows = np.concatenate([per_process[p][step][key] for p in range(process_count)])
      np.testing.assert_array_equal(rows, global_batch[key])


def test_bad_batch_size_for_the_processes():
  with pytest.raises(ValueError, match=r'train.batch_size=6 is not divisible by the 4 processes'):
    batches(1, process_index=0, process_count=4, global_batch_size=6)


RESUME_SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    from data.pipeline import InputIterator, PipelineConfig, make_dataset
    from tests.test_pipeline import source, transform
    state, workers = json.loads(sys.argv[1]), int(sys.argv[2])
    config = PipelineConfig(global_batch_size=4, seed=3, worker_count=workers)
    it = InputIterator(make_dataset(source(), transform, config))
    it.set_state(state)
    print(json.dumps([next(it)['tokens'].tolist() for _ in range(4)]))
    it.close()
''')


@pytest.mark.parametrize('workers', [0, 2])
def test_resume_in_a_new_process_gives_the_next_batches(workers):
  config = PipelineConfig(global_batch_size=4, seed=3, worker_count=workers)
  it = InputIterator(make_dataset(source(), transform, config))
  for _ in range(7):  # past the end of the first epoch (6 batches)
    next(it)
  state = it.get_state()
  expected = [next(it)['tokens'].tolist() for _ in range(4)]
  it.close()
  result = subprocess.run([sys.executable, '-c', RESUME_SCRIPT, json.dumps(state), str(workers)], check=True,
                          capture_output=True, text=True, timeout=300, cwd=str(__import__('pathlib').Path(
                              __file__).resolve().parents[1]))
  assert json.loads(result.stdout.strip().splitlines()[-1]) == expected


def test_global_batch_on_a_simulated_8_device_mesh():
  assert jax.device_count() == 8, 'tests/conftest.py sets --xla_force_host_platform_device_count=8'
  mesh = jax.make_mesh((2, 2, 2), P.MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)
  batch = batches(1, global_batch_size=8)[0]
  arrays = to_global(batch, mesh)
  assert arrays['tokens'].shape == (8, 3) and arrays['id'].shape == (8,)
  np.testing.assert_array_equal(np.asarray(arrays['tokens']), batch['tokens'])
  # batch -> (data, fsdp): 4 shards of 2 rows, each held by the 2 devices of the tensor axis.
  shards = arrays['tokens'].addressable_shards
  assert len(shards) == 8 and all(s.data.shape == (2, 3) for s in shards)
  for shard in shards:
    np.testing.assert_array_equal(np.asarray(shard.data), batch['tokens'][shard.index])
  assert sorted({s.index[0].start for s in shards}) == [0, 2, 4, 6]
