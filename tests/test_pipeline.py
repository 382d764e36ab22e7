"""The grain input pipeline: deterministic order, epochs, process sharding, exact resume, global arrays, and
length bucketing (data/bucketing.py)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from data.examples import Stream, example_rng
from data import bucketing
from data.pipeline import InputIterator, PipelineConfig, make_dataset
from model import partitioning as P
from trainer.mesh import MeshContext

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


def test_unbucketed_stream_is_unchanged():
  """Golden values of the stream as it was before length bucketing existed: the default path is untouched."""
  got = batches(8)
  assert np.concatenate([b['id'] for b in got]).tolist() == [
      4, 7, 11, 8, 17, 5, 10, 19, 21, 15, 3, 12, 16, 1, 0, 22, 14, 20, 2, 23, 18, 13, 9, 6,
      13, 16, 12, 3, 2, 23, 11, 8]
  digest = hashlib.sha256(b''.join(b[k].tobytes() + str(b[k].dtype).encode() + str(b[k].shape).encode()
                                   for b in got for k in sorted(b))).hexdigest()
  assert digest == '2d354da4e72e82069418d7a6430f9ad578a89c61254d2a0e02b7bdc69c64a53d'


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
    from tests.test_pipeline import next_batches, resumable_iterator
    state, workers, bucketed = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == '1'
    it = resumable_iterator(workers, bucketed)
    it.set_state(state)
    print(json.dumps(next_batches(it)))
    it.close()
''')


def resumable_iterator(workers: int, bucketed: bool) -> InputIterator:
  if bucketed:
    config = PipelineConfig(global_batch_size=4, seed=3, worker_count=workers, length_buckets=BUCKETS, bucket_window=3)
    return InputIterator(make_dataset(bucket_source(), bucket_transform, config, lengths=LENGTHS))
  config = PipelineConfig(global_batch_size=4, seed=3, worker_count=workers)
  return InputIterator(make_dataset(source(), transform, config))


def next_batches(it: InputIterator) -> list[dict[str, list]]:
  """The next 4 batches, every feature as a list (a bucketed batch's shape shows in the nesting)."""
  return [{k: v.tolist() for k, v in next(it).items()} for _ in range(4)]


@pytest.mark.parametrize('bucketed', [False, True])
@pytest.mark.parametrize('workers', [0, 2])
def test_resume_in_a_new_process_gives_the_next_batches(workers, bucketed):
  it = resumable_iterator(workers, bucketed)
  for _ in range(15 if bucketed else 7):  # past the end of the first epoch (12.5 and 6 batches)
    next(it)
  state = it.get_state()
  expected = next_batches(it)
  it.close()
  result = subprocess.run([sys.executable, '-c', RESUME_SCRIPT, json.dumps(state), str(workers), str(int(bucketed))],
                          check=True, capture_output=True, text=True, timeout=300,
                          cwd=str(__import__('pathlib').Path(__file__).resolve().parents[1]))
  assert json.loads(result.stdout.strip().splitlines()[-1]) == expected


def test_global_batch_on_a_simulated_8_device_mesh():
  assert jax.device_count() == 8, 'tests/conftest.py sets --xla_force_host_platform_device_count=8'
  mesh = jax.make_mesh((2, 2, 2), P.MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)
  batch = batches(1, global_batch_size=8)[0]
  arrays = MeshContext(mesh).to_global(batch)  # the default rules
  assert arrays['tokens'].shape == (8, 3) and arrays['id'].shape == (8,)
  np.testing.assert_array_equal(np.asarray(arrays['tokens']), batch['tokens'])
  # batch -> (data, fsdp): 4 shards of 2 rows, each held by the 2 devices of the tensor axis.
  shards = arrays['tokens'].addressable_shards
  assert len(shards) == 8 and all(s.data.shape == (2, 3) for s in shards)
  for shard in shards:
    np.testing.assert_array_equal(np.asarray(shard.data), batch['tokens'][shard.index])
  assert sorted({s.index[0].start for s in shards}) == [0, 2, 4, 6]


# --- length bucketing ---------------------------------------------------------------------------------------

L = 16  # padded length of the fake encoder features
BUCKETS = (4, 8, 16)
NB = 50  # examples: not a multiple of the batch sizes 4 and 8, so epochs begin inside a global batch
# Skewed like sentences: mostly short, a few at the full length.
LENGTHS = np.minimum(L, 1 + np.random.default_rng(0).geometric(0.25, NB))


def bucket_source(lengths: np.ndarray = LENGTHS) -> list[dict[str, np.ndarray]]:
  """Classification-like rows: token ids id+1 (0 = pad), a mask, and a 'targets' as long as the inputs that is
  not a length feature (as a seq2seq decoder with decoder_seq_len == seq_len)."""
  real = [np.arange(L) < n for n in lengths]
  return [{'id': np.array(i, np.int32), 'input_ids': np.where(r, i + 1, 0).astype(np.int32),
           'attention_mask': r.astype(np.int32), 'token_type_ids': np.zeros(L, np.int32),
           'targets': np.full(L, i, np.int32)} for i, r in enumerate(real)]


def bucket_transform(index: int, example: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  return example | {'position': np.array(index)}


def bucketed(n: int, *, process_index: int = 0, process_count: int = 1, lengths: np.ndarray = LENGTHS,
             **kw) -> list[dict[str, np.ndarray]]:
  config = PipelineConfig(**({'global_batch_size': 4, 'seed': 3, 'length_buckets': BUCKETS, 'bucket_window': 3}
                             | kw))
  it = InputIterator(make_dataset(bucket_source(lengths), bucket_transform, config, process_index=process_index,
                                  process_count=process_count, lengths=lengths))
  out = [next(it) for _ in range(n)]
  it.close()
  return out


def test_bucketed_order_is_pinned():
  """Golden values: an upgrade (grain's shuffle, numpy's Philox) that would change a resumed run's order fails."""
  assert [b['id'].tolist() for b in bucketed(3)] == [[35, 28, 27, 24], [4, 42, 7, 15], [37, 21, 3, 44]]


@pytest.mark.parametrize('batch', [4, 5])
def test_equal_lengths_and_one_batch_windows_give_the_unbucketed_stream(batch):
  """Sorting a one-batch window of equal lengths changes nothing: the base order is grain's epoch permutation."""
  equal = np.full(NB, L)
  plain = InputIterator(make_dataset(bucket_source(equal), bucket_transform,
                                     PipelineConfig(global_batch_size=batch, seed=3)))
  got = bucketed(30, lengths=equal, global_batch_size=batch, bucket_window=1)
  for b in got:
    expected = next(plain)
    assert b.keys() == expected.keys()
    for k in b:
      np.testing.assert_array_equal(b[k], expected[k])
  plain.close()


@pytest.mark.parametrize('batch', [4, 5])
def test_every_epoch_is_a_permutation_and_epochs_differ(batch):
  got = bucketed(3 * NB // batch + 1, global_batch_size=batch)
  np.testing.assert_array_equal(np.concatenate([b['position'] for b in got]), np.arange(len(got) * batch))
  ids = np.concatenate([b['id'] for b in got])
  epochs = [ids[e * NB:(e + 1) * NB] for e in range(3)]
  for epoch in epochs:
    assert sorted(epoch) == list(range(NB))
  assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
  assert not np.array_equal(ids, np.concatenate([b['id'] for b in bucketed(len(got), global_batch_size=batch,
                                                                             seed=4)]))


def test_each_batch_is_cut_to_its_bucket_and_keeps_every_token():
  for b in bucketed(40):
    longest = LENGTHS[b['id']].max()
    bucket = min(x for x in BUCKETS if x >= longest)
    assert b['input_ids'].shape == b['attention_mask'].shape == b['token_type_ids'].shape == (4, bucket)
    assert b['targets'].shape == (4, L)  # not a length feature: whole, though as long as the inputs
    np.testing.assert_array_equal(b['attention_mask'].sum(1), LENGTHS[b['id']])
    np.testing.assert_array_equal((b['input_ids'] > 0).sum(1), LENGTHS[b['id']])


@pytest.mark.parametrize('process_count', [2, 4])
def test_bucketed_global_batches_are_the_same_for_any_process_count(process_count):
  single = bucketed(14, global_batch_size=8)
  per_process = [bucketed(14, global_batch_size=8, process_index=p, process_count=process_count)
                 for p in range(process_count)]
  for step, global_batch in enumerate(single):
    for key in global_batch:
      np.testing.assert_array_equal(np.concatenate([per_process[p][step][key] for p in range(process_count)]),
                                    global_batch[key])


def test_one_sorted_pass_for_evaluation():
  """shuffle=False: the source order, each window sorted by length, every example once, a short last batch."""
  got = bucketed(13, shuffle=False, num_epochs=1, drop_remainder=False)
  assert [len(b['id']) for b in got] == [4] * 12 + [2]
  ids = np.concatenate([b['id'] for b in got])
  assert sorted(ids) == list(range(NB))
  for start in range(0, NB, 12):  # windows of 3 batches
    window = ids[start:start + 12]
    np.testing.assert_array_equal(window, np.arange(start, min(start + 12, NB))[
        np.argsort(LENGTHS[start:start + 12], kind='stable')])


def test_padding_is_much_lower_with_buckets():
  n, length, buckets = 512, 64, (8, 16, 24, 32, 40, 48, 56, 64)  # multiples of 8, as accelerators like
  lengths = np.minimum(length, 2 + np.random.default_rng(1).geometric(0.05, n))  # mean ~21 of 64
  rows = [{'attention_mask': (np.arange(length) < k).astype(np.int32)} for k in lengths]
  config = PipelineConfig(global_batch_size=16, seed=0, length_buckets=buckets, bucket_window=8)
  it = InputIterator(make_dataset(rows, lambda i, x: x, config, lengths=lengths))
  epoch = [next(it)['attention_mask'] for _ in range(n // 16)]
  it.close()
  bucketed_padding = 1 - sum(m.sum() for m in epoch) / sum(m.size for m in epoch)
  unbucketed_padding = 1 - lengths.mean() / length  # every batch padded to 64
  print(f'padding: {unbucketed_padding:.0%} unbucketed, {bucketed_padding:.0%} bucketed')
  assert bucketed_padding < 0.5 * unbucketed_padding


def test_bucket_shapes_and_example_lengths():
  shapes = {'input_ids': (8, 16), 'attention_mask': (8, 16), 'targets': (8, 16), 'label': (8,)}
  assert bucketing.bucket_shapes(shapes, (8, 16)) == [
      {'input_ids': (8, 8), 'attention_mask': (8, 8), 'targets': (8, 16), 'label': (8,)}, shapes]
  np.testing.assert_array_equal(bucketing.example_lengths(bucket_source(), bucket_transform), LENGTHS)
  with pytest.raises(ValueError, match=r'data.length_buckets=\(4, 8\): the last bucket must be the padded length'):
    bucketing.bucket_shapes(shapes, (4, 8))


@pytest.mark.parametrize('kw, message', [
    ({'length_buckets': (8, 4, 16)}, r'data.length_buckets=\(8, 4, 16\): buckets must be strictly increasing; use '
                                     r'\(4, 8, 16\)'),
    ({'length_buckets': (4, 4, 16)}, r'data.length_buckets=\(4, 4, 16\): buckets must be strictly increasing'),
    ({'length_buckets': (0, 16)}, r'data.length_buckets=\(0, 16\): every bucket must be a positive integer'),
    ({'bucket_window': 0}, r'data.bucket_window=0: must be >= 1'),
    ({'length_features': ()}, r'data.length_features=\(\): name the features to trim'),
])
def test_bad_bucket_config(kw, message):
  with pytest.raises(ValueError, match=message):
    PipelineConfig(**({'global_batch_size': 4, 'length_buckets': BUCKETS} | kw))


@pytest.mark.parametrize('kw, lengths, message', [
    ({'length_buckets': (4, 8)}, LENGTHS, r"data.length_buckets=\(4, 8\): the last bucket must be the padded length "
                                          r"of 'input_ids' \(shape \(16,\)\); end the buckets with 16"),
    ({'length_features': ('tokens',)}, LENGTHS, r"data.length_features=\('tokens',\): none is a feature"),
    ({}, None, r'data.length_buckets=\(4, 8, 16\) needs the length of every example: pass make_dataset\(\.\.\., '
               r'lengths=\)'),
    ({}, LENGTHS[:-1], r'lengths: int64 \(49,\); need non-negative integers of shape \(50,\)'),
    ({}, LENGTHS.astype(np.float32), r'lengths: float32 \(50,\)'),
])
def test_bad_bucketing_inputs(kw, lengths, message):
  config = PipelineConfig(**({'global_batch_size': 4, 'length_buckets': BUCKETS} | kw))
  with pytest.raises(ValueError, match=message):
    make_dataset(bucket_source(), bucket_transform, config, lengths=lengths)


def test_understated_lengths_fail_rather_than_cut_tokens():
  config = PipelineConfig(global_batch_size=4, length_buckets=BUCKETS)
  it = InputIterator(make_dataset(bucket_source(), bucket_transform, config, lengths=np.ones(NB, np.int64)))
  with pytest.raises(ValueError, match='would cut real tokens'):
    next(it)
  it.close()


def test_choose_buckets_keeps_those_worth_a_program():
  """Buckets holding fewer than max(2% of the split, one global batch) examples are merged into the next larger
  (with what was merged into them), empty ones dropped, the last always kept: a pure function of lengths + config."""
  lengths = np.array([3] * 40 + [5] * 10 + [6] * 5 + [12] * 45 + [16] * 2)  # N = 102: 2% -> 3, one batch: 8
  choice = bucketing.choose_buckets(lengths, (4, 6, 8, 12, 16), global_batch_size=8)
  assert choice.buckets == (4, 6, 12, 16) and choice.merged == {8: 12} and choice.threshold == 8
  assert choice.counts == {4: 40, 6: 15, 8: 0, 12: 45, 16: 2}
  few = bucketing.choose_buckets(np.array([3] * 5 + [5] * 2 + [12] * 50), (4, 6, 8, 12, 16), global_batch_size=8)
  assert few.buckets == (12, 16) and few.merged == {4: 12, 6: 12, 8: 12}  # 5, then 7 examples: fewer than 8
  assert few.line((4, 6, 8, 12, 16)) == (
      'data.length_buckets=(4, 6, 8, 12, 16): compiling (12, 16), training examples per bucket 12 (50), 16 (0); '
      'merged 4 (5) into 12, 6 (2) into 12 (fewer than 8: 2% of the split or one global batch); empty: 8')
