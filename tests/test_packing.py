"""Packing: exact segment ids and positions, no token lost, encoder/decoder segments that agree, and packed
rows through tiny models of each family giving every example the outputs it gets alone."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

import model
from data import examples as O
from data.packing import Overflow, Strategy, pack_pairs, pack_sequences, segment_positions
from tests.tiny import TINY, VOCAB, params_for


def _examples(lengths: list[int], seed: int = 0) -> list[dict[str, np.ndarray]]:
  """Examples with several features, as MLM gives them: ids, float weights."""
  rng = np.random.default_rng(seed)
  return [{'input_ids': rng.integers(1, VOCAB, n).astype(np.int32),
           'loss_weights': rng.integers(0, 2, n).astype(np.float32)} for n in lengths]


def test_first_fit_exact_layout():
  packed = pack_sequences(_examples([3, 5, 2, 7, 1, 4]), 8)
  assert packed.rows['segment_ids'].tolist() == [[1, 1, 1, 2, 2, 2, 2, 2],  # 3 + 5
                                                 [1, 1, 2, 3, 3, 3, 3, 0],  # 2 + 1 + 4 (first fit)
                                                 [1, 1, 1, 1, 1, 1, 1, 0]]  # 7
  assert packed.rows['position_ids'].tolist() == [[0, 1, 2, 0, 1, 2, 3, 4],
                                                  [0, 1, 0, 0, 1, 2, 3, 0],
                                                  [0, 1, 2, 3, 4, 5, 6, 0]]
  assert packed.placement.tolist() == [[0, 0, 1], [1, 0, 2], [2, 1, 1], [3, 2, 1], [4, 1, 2], [5, 1, 3]]
  assert packed.rows['input_ids'].dtype == np.int32 and packed.rows['loss_weights'].dtype == np.float32


def test_next_fit_and_none_layouts():
  next_fit = pack_sequences(_examples([3, 5, 2, 7, 1]), 8, strategy=Strategy.NEXT_FIT)
  assert next_fit.rows['segment_ids'].tolist() == [[1, 1, 1, 2, 2, 2, 2, 2], [1, 1, 0, 0, 0, 0, 0, 0],
                                                   [1, 1, 1, 1, 1, 1, 1, 2]]
  alone = pack_sequences(_examples([3, 5]), 6, strategy=Strategy.NONE)
  assert alone.rows['segment_ids'].tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]]
  assert alone.rows['position_ids'].tolist() == [[0, 1, 2, 0, 0, 0], [0, 1, 2, 3, 4, 0]]


def _recover(packed, index: int, names=('input_ids', 'loss_weights'), segment_name: str = 'segment_ids') -> dict:
  """An example's features read back from its rows, its pieces in placement order."""
  parts = {name: [] for name in names}
  for example, row, segment in packed.placement:
    if example == index:
      where = packed.rows[segment_name][row] == segment
      for name in names:
        parts[name].append(packed.rows[name][row][where])
  return {name: np.concatenate(p) for name, p in parts.items()}


@pytest.mark.parametrize('strategy', list(Strategy))
@pytest.mark.parametrize('overflow', list(Overflow))
def test_no_token_lost(strategy, overflow):
  lengths = np.random.default_rng(1).integers(0, 40, 60).tolist()
  examples = _examples(lengths, seed=2)
  packed = pack_sequences(examples, 16, strategy=strategy, overflow=overflow, pad_values={'input_ids': -1})
  rows = packed.rows
  assert rows['input_ids'].shape == rows['segment_ids'].shape == (packed.num_rows, 16)
  assert ((rows['input_ids'] == -1) == (rows['segment_ids'] == 0)).all()  # pad values where nothing is
  np.testing.assert_array_equal(rows['position_ids'], segment_positions(rows['segment_ids']))
  for i, example in enumerate(examples):
    if not len(example['input_ids']):
      assert i not in packed.placement[:, 0]
      continue
    keep = len(example['input_ids']) if overflow is Overflow.SPLIT else 16
    for name, value in _recover(packed, i).items():
      np.testing.assert_array_equal(value, example[name][:keep])
  kept = sum(lengths) if overflow is Overflow.SPLIT else sum(min(n, 16) for n in lengths)
  assert (rows['segment_ids'] > 0).sum() == kept


def test_strategies_waste():
  lengths = np.random.default_rng(3).integers(1, 33, 500).tolist()
  rows = {s: pack_sequences(_examples(lengths), 32, strategy=s).num_rows for s in Strategy}
  assert sum(lengths) / 32 <= rows[Strategy.FIRST_FIT] < rows[Strategy.NEXT_FIT] < rows[Strategy.NONE] == 500
  assert rows[Strategy.FIRST_FIT] < 1.08 * sum(lengths) / 32  # ~5% padding on 500 uniform lengths


def test_pairs_share_segments():
  rng = np.random.default_rng(4)
  examples = [({'input_ids': rng.integers(1, 99, a)}, {'targets': rng.integers(1, 99, b)})
              for a, b in zip(rng.integers(1, 20, 40), rng.integers(1, 9, 40))]
  packed = pack_pairs(examples, 24, 10)
  rows = packed.rows
  assert rows['input_ids'].shape == (packed.num_rows, 24) and rows['targets'].shape == (packed.num_rows, 10)
  assert packed.num_rows < len(examples)
  for i, (inputs, targets) in enumerate(examples):  # segment k of a row is the same example on both sides
    np.testing.assert_array_equal(_recover(packed, i, ('input_ids',))['input_ids'], inputs['input_ids'])
    np.testing.assert_array_equal(_recover(packed, i, ('targets',), 'decoder_segment_ids')['targets'],
                                  targets['targets'])
  np.testing.assert_array_equal(rows['decoder_position_ids'], segment_positions(rows['decoder_segment_ids']))


def test_pairs_truncate_and_errors():
  packed = pack_pairs([({'input_ids': np.arange(1, 9)}, {'targets': np.arange(1, 5)})], 6, 3)
  assert packed.rows['input_ids'].tolist() == [[1, 2, 3, 4, 5, 6]] and packed.rows['targets'].tolist() == [[1, 2, 3]]
  with pytest.raises(ValueError, match='Overflow.SPLIT'):
    pack_pairs([], 6, 3, overflow=Overflow.SPLIT)
  with pytest.raises(ValueError, match='on both sides'):
    pack_pairs([({'x': [1]}, {'x': [2]})], 6, 3)
  with pytest.raises(ValueError, match='example 1 has features'):
    pack_sequences([{'a': [1]}, {'b': [1]}], 4)
  with pytest.raises(ValueError, match='one length'):
    pack_sequences([{'a': [1, 2], 'b': [1]}], 4)
  with pytest.raises(TypeError, match='packing.Strategy'):
    pack_sequences([{'a': [1]}], 4, strategy='first_fit')
  assert pack_sequences([], 4).num_rows == 0


# --- packed rows through the models ----------------------------------------------------------------------

@functools.cache
def _forward(name: str):
  """One jitted apply per config; every call below has one argument structure, so it compiles once."""
  module = model.build(TINY[name])
  return jax.jit(lambda params, kw: module.apply({'params': params}, **kw)), params_for(TINY[name])


def _alone(values: list[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Each example on its own row, padded: ids, validity as segment ids (1 / 0), positions 0..width-1."""
  ids = np.zeros((len(values), width), np.int32)
  for row, value in zip(ids, values):
    row[:len(value)] = value
  valid = (np.arange(width) < np.asarray([len(v) for v in values])[:, None]).astype(np.int32)
  return ids, valid, np.broadcast_to(np.arange(width, dtype=np.int32), ids.shape)


def _check_each_example(packed_out, alone_out, placement, segment_ids, lengths) -> None:
  for example, row, segment in placement:
    np.testing.assert_allclose(packed_out[row][segment_ids[row] == segment], alone_out[example][:lengths[example]],
                               atol=2e-5, rtol=0, err_msg=f'example {example} (row {row}, segment {segment})')


@pytest.mark.parametrize('name', ['bert', 'gpt2', 'gpt_rope'])
def test_packed_rows_match_examples_alone(name):
  """Packed examples cannot see each other: each one's hidden states equal those of running it alone."""
  cfg = TINY[name]
  rng = np.random.default_rng(5)
  lengths = [5, 9, 3, 12, 7, 4, 2]
  examples = [{'input_ids': rng.integers(1, VOCAB, n).astype(np.int32),
               'token_type_ids': (np.arange(n) >= n // 2).astype(np.int32)} for n in lengths]
  packed = pack_sequences(examples, 16)
  assert packed.num_rows < len(examples)
  ids, valid, positions = _alone([e['input_ids'] for e in examples], 16)
  types, _, _ = _alone([e['token_type_ids'] for e in examples], 16)
  rows = packed.rows
  # Packed rows and the lone examples go through in one batch: one compile per config.
  kw = {'input_ids': np.concatenate([rows['input_ids'], ids]),
        'segment_ids': np.concatenate([rows['segment_ids'], valid]),
        'position_ids': np.concatenate([rows['position_ids'], positions])}
  if cfg.family is model.Family.ENCODER:
    kw['token_type_ids'] = np.concatenate([rows['token_type_ids'], types])
  apply, params = _forward(name)
  hidden = np.asarray(apply(params, kw)['hidden'])
  _check_each_example(hidden[:packed.num_rows], hidden[packed.num_rows:], packed.placement, rows['segment_ids'],
                      lengths)


def test_packed_t5_matches_examples_alone():
  """Span-corrupted examples packed into encoder and decoder rows: encoder and decoder states of every example
  equal those of running it alone (decoder inputs shifted within each segment)."""
  specials = O.SpecialIds(vocab_size=VOCAB, pad=0, eos=1, sentinels=tuple(range(VOCAB - 1, VOCAB - 11, -1)))
  rng = np.random.default_rng(6)
  corrupted = [O.span_corruption(rng.integers(2, VOCAB - 10, n), specials,
                                 O.example_rng(0, 0, i, O.Stream.SPAN_CORRUPTION))
               for i, n in enumerate([10, 17, 6, 22, 13, 8])]
  examples = [({'input_ids': c['inputs']}, {'targets': c['targets']}) for c in corrupted]
  packed = pack_pairs(examples, 24, 10)
  assert packed.num_rows < len(examples)
  rows = packed.rows
  ids, valid, positions = _alone([c['inputs'] for c in corrupted], 24)
  targets, decoder_valid, decoder_positions = _alone([c['targets'] for c in corrupted], 10)
  kw = {'input_ids': np.concatenate([rows['input_ids'], ids]),
        'segment_ids': np.concatenate([rows['segment_ids'], valid]),
        'position_ids': np.concatenate([rows['position_ids'], positions]),
        'decoder_input_ids': np.concatenate([O.decoder_inputs(rows['targets'], rows['decoder_segment_ids']),
                                             O.decoder_inputs(targets)]),
        'decoder_segment_ids': np.concatenate([rows['decoder_segment_ids'], decoder_valid]),
        'decoder_position_ids': np.concatenate([rows['decoder_position_ids'], decoder_positions])}
  apply, params = _forward('t5')
  out = apply(params, kw)
  encoder, decoder, r = np.asarray(out['encoder_hidden']), np.asarray(out['hidden']), packed.num_rows
  _check_each_example(encoder[:r], encoder[r:], packed.placement, rows['segment_ids'],
                      [len(c['inputs']) for c in corrupted])
  _check_each_example(decoder[:r], decoder[r:], packed.placement, rows['decoder_segment_ids'],
                      [len(c['targets']) for c in corrupted])
