"""config.data -> task: every objective on built-in datasets (built from tiny fake packages), fixed shapes,
the objectives' contracts end to end, and errors for objectives that do not fit the source."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from data import prepare, sources, tasks, tokenization
from data.datasets.next_sentence import split_sentences
from data.synthetic import synthetic_batch
from data.pipeline import InputIterator, PipelineConfig, make_dataset
from tests.fixtures import raw_packages

LENGTH = 32


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
  raw = raw_packages.write_raw_cache(tmp_path_factory.mktemp('raw'))
  out = tmp_path_factory.mktemp('tfds')
  reports = prepare.prepare_all(['sotu', 'movie_sentiment/binary', 'movie_sentiment/regression'], out,
                                raw_cache_dir=raw)
  assert all(r.outcome is prepare.Outcome.BUILT for r in reports), [r.line() for r in reports]
  return out


@pytest.fixture(scope='module')
def tokenizer(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tokenization.Tokenizer:
  """A small SentencePiece vocabulary (with [CLS]/[SEP]/[MASK] and sentinels) trained on the fake corpus."""
  config = tasks.DataConfig(source='builtin:sotu', objective='causal_lm', seq_len=LENGTH, data_dir=str(data_dir),
                            tokenizer='sentencepiece:auto,vocab_size=420,algorithm=bpe')
  return tasks.build_task(config, 'train', seed=0, tokenizer_dir=tmp_path_factory.mktemp('spm')).tokenizer


def task(data_dir: Path, tokenizer, source: str, objective: str, **kw) -> tasks.Task:
  config = tasks.DataConfig(source=source, objective=objective, seq_len=LENGTH, data_dir=str(data_dir), **kw)
  return tasks.build_task(config, 'train', seed=5, tokenizer=tokenizer)


def first_batches(t: tasks.Task, n: int = 2, batch: int = 4) -> list[dict[str, np.ndarray]]:
  it = InputIterator(make_dataset(t.source, t.transform, PipelineConfig(global_batch_size=batch, seed=1)))
  return [next(it) for _ in range(n)]


def test_causal_lm_rows_are_the_shifted_token_stream(data_dir, tokenizer):
  t = task(data_dir, tokenizer, 'builtin:sotu', 'causal_lm')
  rows = np.asarray(t.source)
  assert rows.shape[1] == LENGTH + 1 and (rows == tokenizer.eos_id).any()  # documents joined by EOS
  example = t.transform(0, rows[3])
  np.testing.assert_array_equal(example['input_ids'], rows[3, :-1])
  np.testing.assert_array_equal(example['targets'], rows[3, 1:])
  assert example['loss_weights'].sum() == LENGTH
  for b in first_batches(t):
    assert b['input_ids'].shape == (4, LENGTH) and b['targets'].shape == (4, LENGTH)


def test_causal_lm_packing_keeps_documents_apart(data_dir, tokenizer):
  t = task(data_dir, tokenizer, 'builtin:sotu', 'causal_lm', packing=True)
  for row in t.source[:20]:
    example = t.transform(0, row)
    seg = example['segment_ids']
    # No target is predicted across a document boundary, and each piece restarts its positions.
    crossing = (seg[1:] != seg[:-1]) & (seg[1:] > 0)
    assert not example['loss_weights'][:-1][crossing].any()
    starts = np.flatnonzero(np.diff(np.concatenate([[0], seg])) != 0)
    assert all(example['position_ids'][s] == 0 for s in starts if seg[s] > 0)


def test_mlm_masks_are_redrawn_each_epoch_and_repeat_within_one(data_dir, tokenizer):
  t = task(data_dir, tokenizer, 'builtin:sotu', 'mlm')
  rows, n = t.source, len(t.source)
  row = rows[2]
  first, again, next_epoch = t.transform(2, row), t.transform(2, row), t.transform(2 + n, row)
  np.testing.assert_array_equal(first['input_ids'], again['input_ids'])
  assert not np.array_equal(first['loss_weights'], next_epoch['loss_weights'])
  ids = first['input_ids']
  assert ids[0] == tokenizer.cls_id and ids[-1] == tokenizer.sep_id and ids.shape == (LENGTH,)
  selected = first['loss_weights'] > 0
  assert 1 <= selected.sum() <= round(0.15 * LENGTH) + 1
  assert (first['input_ids'][selected] == tokenizer.mask_id).any() or selected.sum() < 4
  unselected = ~selected
  np.testing.assert_array_equal(first['input_ids'][unselected], first['targets'][unselected])


@pytest.mark.parametrize('packing', [False, True])
def test_mlm_rows_never_hold_more_targets_than_the_step_gathers(data_dir, tokenizer, packing):
  """The train step computes the MLM head at tasks.max_targets positions per row (round(0.15 * 30) = 4 of 32):
  no row of either layout may weigh more, or its extra targets would go unscored."""
  t = task(data_dir, tokenizer, 'builtin:sotu', 'mlm', packing=packing)
  bound = tasks.max_targets(t.config)
  counts = [int((t.transform(i, t.source[i % len(t.source)])['loss_weights'] > 0).sum()) for i in range(200)]
  assert bound == 4 and max(counts) == bound, counts


def test_span_corruption_inputs_and_targets_rebuild_the_row(data_dir, tokenizer):
  t = task(data_dir, tokenizer, 'builtin:sotu', 'span_corruption')
  row = np.asarray(t.source[1])
  ex = t.transform(1, row)
  assert ex['input_ids'].shape == (LENGTH,) and ex['targets'].shape == (t.config.targets_len,)
  sentinels = set(tokenizer.sentinel_ids)
  inputs = ex['input_ids'][ex['attention_mask'] > 0][:-1]  # drop EOS
  targets = ex['targets'][ex['loss_weights'] > 0][:-1]
  spans, current = {}, None
  for tok in targets:
    if tok in sentinels:
      current = tok
      spans[current] = []
    else:
      spans[current].append(tok)
  rebuilt = [x for tok in inputs for x in (spans[tok] if tok in sentinels else [tok])]
  np.testing.assert_array_equal(rebuilt, row)
  np.testing.assert_array_equal(ex['decoder_input_ids'][1:], ex['targets'][:-1])
  assert ex['decoder_input_ids'][0] == tokenizer.pad_id


@pytest.mark.parametrize('objective,source,dtype', [('classification', 'builtin:movie_sentiment/binary', np.int32),
                                                    ('regression', 'builtin:movie_sentiment/regression', np.float32)])
def test_sentence_tasks(data_dir, tokenizer, objective, source, dtype):
  t = task(data_dir, tokenizer, source, objective)
  ex = t.transform(0, t.source[0])
  assert ex['label'].dtype == dtype and ex['input_ids'][0] == tokenizer.cls_id
  real = ex['attention_mask'].sum()
  assert ex['input_ids'][real - 1] == tokenizer.sep_id and (ex['input_ids'][real:] == tokenizer.pad_id).all()
  assert first_batches(t, 1)[0]['label'].shape == (4,)


@pytest.mark.parametrize('objective,source', [('causal_lm', 'builtin:sotu'), ('mlm', 'builtin:sotu'),
                                              ('mlm_sop', 'builtin:sotu'),
                                              ('span_corruption', 'builtin:sotu'),
                                              ('classification', 'builtin:movie_sentiment/binary'),
                                              ('regression', 'builtin:movie_sentiment/regression')])
def test_synthetic_batches_hold_the_features_of_real_examples(data_dir, tokenizer, objective, source):
  """data.synthetic's batches (bench/, train.py --dry_run) have exactly the features and dtypes of the real
  examples (seq2seq: test_seq2seq_synthetic_batch)."""
  t = task(data_dir, tokenizer, source, objective)
  example = t.transform(0, t.source[0])
  batch = synthetic_batch(objective, 2, LENGTH, 8, tokenizer.vocab_size)
  assert {k: v.dtype for k, v in batch.items()} == {k: v.dtype for k, v in example.items()}


def test_objective_must_fit_the_source(data_dir, tokenizer):
  with pytest.raises(ValueError, match=r"data.objective=classification does not fit data.source='builtin:sotu'"):
    task(data_dir, tokenizer, 'builtin:sotu', 'classification')
  with pytest.raises(ValueError, match=r'data.objective=regression does not fit'):
    task(data_dir, tokenizer, 'builtin:movie_sentiment/binary', 'regression')
  with pytest.raises(ValueError, match=r"data.objective='lm': unknown objective; valid values are"):
    tasks.DataConfig(source='builtin:sotu', objective='lm', seq_len=LENGTH)
  with pytest.raises(ValueError, match=r'data.packing=True: only causal_lm and mlm pack documents'):
    tasks.DataConfig(source='builtin:sotu', objective='span_corruption', seq_len=LENGTH, packing=True)


def test_objectives_name_the_special_tokens_they_miss(data_dir):
  wordpiece = tokenization.load_tokenizer('wordpiece')  # BERT's: no EOS, no sentinels
  with pytest.raises(ValueError, match=r'data.tokenizer has no eos token, which data.objective=span_corruption '
                                       r'needs; use one that has it'):
    task(data_dir, wordpiece, 'builtin:sotu', 'span_corruption')
  gpt2 = tokenization.load_tokenizer('gpt2_bpe')  # no [CLS]/[SEP]/[MASK]/pad
  with pytest.raises(ValueError, match=r'data.tokenizer has no cls, sep, mask, pad token, which data.objective=mlm'):
    task(data_dir, gpt2, 'builtin:sotu', 'mlm')


# --- ALBERT's sentence order (mlm_sop) and static / dynamic masking --------------------------------------------

def _document_tokens(t: tasks.Task) -> list[np.ndarray]:
  """Each training document's tokens as mlm_sop reads it: its sentences, tokenized one by one, in order."""
  source = sources.open_source('builtin:sotu', 'train', data_dir=t.config.data_dir)
  return [np.concatenate([np.asarray(s, np.int32) for s in t.tokenizer.encode_batch(split_sentences(d['text']))])
          for d in source]


def _segments(example: dict[str, np.ndarray], sep: int) -> tuple[np.ndarray, np.ndarray]:
  """(A, B) of [CLS] A [SEP] B [SEP] from the original (unmasked) ids, cut at the first two [SEP]s."""
  ids = example['targets'][:example['attention_mask'].sum()]
  first, last = np.flatnonzero(ids == sep)[[0, -1]]
  return ids[1:first], ids[first + 1:last]


def test_mlm_sop_pairs_are_balanced_reproducible_and_correctly_labelled(data_dir, tokenizer):
  t = task(data_dir, tokenizer, 'builtin:sotu', 'mlm_sop')
  rows, n, sep = t.source, len(t.source), tokenizer.sep_id
  assert n >= 8 and t.token_types == 2
  documents = [d.tobytes() for d in _document_tokens(t)]
  draws = [t.transform(i, rows[i % n]) for i in range(600)]
  labels = np.array([int(e['sentence_order_label']) for e in draws])
  assert 0.42 < labels.mean() < 0.58, labels.mean()  # 600 fair coins: 4 standard deviations either side
  again = task(data_dir, tokenizer, 'builtin:sotu', 'mlm_sop')  # the same seed: the same examples, exactly
  for i in (0, 7, n + 3):
    for key, value in again.transform(i, again.source[i % n]).items():
      np.testing.assert_array_equal(value, draws[i][key])
  for i, example in enumerate(draws):
    row = rows[i % n]
    a, b = _segments(example, sep)
    label = int(example['sentence_order_label'])
    original = np.concatenate([b, a] if label else [a, b])
    np.testing.assert_array_equal(original, row['tokens'])  # swapping a swapped pair back gives the chunk
    cut = len(b) if label else len(a)
    assert cut in row['bounds'] or not len(row['bounds'])  # A ends at a sentence end (or inside a lone piece)
    assert len(a) and len(b)
    # [CLS] A [SEP] are type 0, B [SEP] type 1, padding 0; the [SEP]s where the segments end.
    real = len(a) + len(b) + 3
    types = np.concatenate([np.zeros(len(a) + 2), np.ones(len(b) + 1), np.zeros(LENGTH - real)])
    np.testing.assert_array_equal(example['token_type_ids'], types)
    np.testing.assert_array_equal(example['attention_mask'], np.arange(LENGTH) < real)
    assert example['targets'][0] == tokenizer.cls_id
    assert example['targets'][[len(a) + 1, real - 1]].tolist() == [sep] * 2
    assert (example['input_ids'][real:] == tokenizer.pad_id).all()
    # BERT's masks on the pair: never at [CLS], [SEP] or padding; at most the step's gathered positions.
    chosen = example['loss_weights'] > 0
    assert 1 <= chosen.sum() <= tasks.max_targets(t.config) and not tokenizer_specials(tokenizer, example, chosen)
  # Each chunk is consecutive tokens of one document.
  for row in rows[:n]:
    assert any(row['tokens'].tobytes() in d for d in documents)
  assert {int(e['sentence_order_label']) for e in draws[:n]} == {0, 1}


def tokenizer_specials(tokenizer, example: dict[str, np.ndarray], chosen: np.ndarray) -> bool:
  return bool(np.isin(example['targets'][chosen], [tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id]).any())


@pytest.mark.parametrize('objective', ['mlm', 'mlm_sop'])
def test_static_masking_repeats_each_rows_draws_in_every_epoch(data_dir, tokenizer, objective):
  """data.masking=static: a row's example in epoch 3 is the one of epoch 0 (BERT's dupe_factor=1); dynamic
  (RoBERTa): redrawn (the masks of most rows, and mlm_sop's order of some)."""
  static = task(data_dir, tokenizer, 'builtin:sotu', objective, masking='static')
  dynamic = task(data_dir, tokenizer, 'builtin:sotu', objective)
  n = len(static.source)
  assert len(dynamic.source) == n
  changed = 0
  for i in range(min(n, 12)):
    row = static.source[i]
    first, later = static.transform(i, row), static.transform(i + 3 * n, row)
    for key in first:
      np.testing.assert_array_equal(first[key], later[key])
    dynamic_first, dynamic_later = dynamic.transform(i, row), dynamic.transform(i + 3 * n, row)
    changed += not np.array_equal(dynamic_first['loss_weights'], dynamic_later['loss_weights'])
    np.testing.assert_array_equal(dynamic_first['input_ids'], first['input_ids'])  # epoch 0: the same draws
  assert changed >= min(n, 12) - 1


def test_masking_is_a_strict_field_of_the_objectives_that_mask():
  with pytest.raises(ValueError, match=r"data.masking='sometimes': unknown masking; valid values are "
                                       r"\['dynamic', 'static'\]"):
    tasks.DataConfig(source='builtin:sotu', objective='mlm', seq_len=LENGTH, masking='sometimes')
  with pytest.raises(ValueError) as error:
    tasks.DataConfig(source='builtin:sotu', objective='causal_lm', seq_len=LENGTH, masking='static')
  assert str(error.value) == ('data.masking=static: data.objective=causal_lm draws no masks to keep fixed (only mlm, '
                              'mlm_sop do); set data.masking=dynamic')
  assert tasks.DataConfig(source='builtin:sotu', objective='mlm_sop', seq_len=LENGTH,
                          masking='STATIC').masking is tasks.Masking.STATIC


def test_mlm_sop_errors_name_the_source_and_the_fix(data_dir, tokenizer):
  with pytest.raises(ValueError, match=r"data.objective=mlm_sop does not fit data.source='builtin:movie_sentiment/"
                                       r"binary', a classification dataset"):
    task(data_dir, tokenizer, 'builtin:movie_sentiment/binary', 'mlm_sop')
  gpt2 = tokenization.load_tokenizer('gpt2_bpe')  # no [CLS]/[SEP]/[MASK]/pad
  with pytest.raises(ValueError, match=r'data.tokenizer has no cls, sep, mask, pad token, which '
                                       r'data.objective=mlm_sop needs'):
    task(data_dir, gpt2, 'builtin:sotu', 'mlm_sop')
  empty = sources.Source([{'text': ''}, {'text': ' '}], sources.TaskInfo('tsv:blank.tsv', ('text',), None, 0), 'train')
  config = tasks.DataConfig(source='tsv:blank.tsv', objective='mlm_sop', seq_len=LENGTH)
  with pytest.raises(ValueError) as error:
    tasks.EXAMPLES[config.objective].build(config, empty, tokenizer, tasks.special_ids(tokenizer), 0)
  assert str(error.value) == ("data.source='tsv:blank.tsv': no document of its 'train' split has the 2 tokens that "
                              'data.objective=mlm_sop cuts into two segments; use a corpus with text')


# --- seq2seq -------------------------------------------------------------------------------------------------

class WordTokenizer:
  """Whitespace words -> ids in the order given (from 3), T5's pad 0 / eos 1 / unk 2: ids a reader can check."""

  def __init__(self, words: str) -> None:
    self.ids = {w: i + 3 for i, w in enumerate(words.split())}
    self.vocab_size = len(self.ids) + 3
    self.pad_id, self.eos_id, self.unk_id = 0, 1, 2
    self.bos_id = self.cls_id = self.sep_id = self.mask_id = None
    self.sentinel_ids: tuple[int, ...] = ()
    self.pair_layout = tokenization.PairLayout.BERT

  def encode(self, text: str) -> list[int]:
    return [self.ids.get(w, self.unk_id) for w in text.split()]

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    return [self.encode(t) for t in texts]

  def decode(self, ids: list[int]) -> str:
    words = {i: w for w, i in self.ids.items()}
    return ' '.join(words[i] for i in ids if i in words)


# the=3 cat=4 sat=5 a=6 very=7 long=8 sentence=9 with=10 many=11 words=12 die=13 Katze=14 sass=15 ein=16 langer=17
# Satz=18 hi=19
WORDS = WordTokenizer('the cat sat a very long sentence with many words die Katze sass ein langer Satz hi')
SEQ2SEQ_TSV = ('source\ttarget\n'
               'the cat sat\tdie Katze sass\n'
               'a very long sentence with many words\tein langer Satz\n'
               'hi\t\n')


@pytest.fixture
def seq2seq_tsv(tmp_path: Path) -> str:
  for split in ('train', 'dev'):
    (tmp_path / f'{split}.tsv').write_text(SEQ2SEQ_TSV, encoding='utf-8')
  return f'tsv:{tmp_path}'


def seq2seq_task(source: str, split: str = 'train', tokenizer=WORDS, **kw) -> tasks.Task:
  config = tasks.DataConfig(source=source, objective='seq2seq', **({'seq_len': 6, 'decoder_seq_len': 4} | kw))
  return tasks.build_task(config, split, seed=0, tokenizer=tokenizer)


def test_seq2seq_features_exactly(seq2seq_tsv):
  """Source + EOS in seq_len 6, target + EOS in decoder_seq_len 4, cut before EOS (row 1), padded with 0, the
  decoder reading pad then the targets shifted right; the raw target text stays in the source."""
  t = seq2seq_task(seq2seq_tsv)
  assert t.info.kind is sources.TaskKind.SEQ2SEQ and t.info.target_feature == 'target'
  want = [
      dict(input_ids=[3, 4, 5, 1, 0, 0], attention_mask=[1, 1, 1, 1, 0, 0], targets=[13, 14, 15, 1],
           loss_weights=[1, 1, 1, 1], decoder_input_ids=[0, 13, 14, 15], decoder_attention_mask=[1, 1, 1, 1]),
      dict(input_ids=[6, 7, 8, 9, 10, 1], attention_mask=[1, 1, 1, 1, 1, 1], targets=[16, 17, 18, 1],
           loss_weights=[1, 1, 1, 1], decoder_input_ids=[0, 16, 17, 18], decoder_attention_mask=[1, 1, 1, 1]),
      dict(input_ids=[19, 1, 0, 0, 0, 0], attention_mask=[1, 1, 0, 0, 0, 0], targets=[1, 0, 0, 0],
           loss_weights=[1, 0, 0, 0], decoder_input_ids=[0, 1, 0, 0], decoder_attention_mask=[1, 0, 0, 0]),
  ]
  for i, expected in enumerate(want):
    example = t.transform(i, t.source[i])
    assert {k: v.tolist() for k, v in example.items()} == expected, i
    assert example['loss_weights'].dtype == np.float32 and example['input_ids'].dtype == np.int32
    assert t.transform(i + 3, t.source[i]).keys() == example.keys()  # same in every epoch: nothing is drawn
  # The reference for BLEU / ROUGE of generated text: the untokenized target, read from the source.
  assert [t.source[i][t.info.target_feature] for i in range(3)] == ['die Katze sass', 'ein langer Satz', '']
  validation = seq2seq_task(seq2seq_tsv, 'validation')
  assert validation.transform(0, validation.source[0])['targets'].tolist() == [13, 14, 15, 1]
  for batch in first_batches(t, n=2, batch=2):
    assert batch['input_ids'].shape == (2, 6) and batch['decoder_input_ids'].shape == (2, 4)
    assert set(batch) == set(want[0])  # model inputs and targets only: the batch goes to the model as it is


def test_seq2seq_synthetic_batch(seq2seq_tsv):
  example = seq2seq_task(seq2seq_tsv).transform(0, seq2seq_task(seq2seq_tsv).source[0])
  batch = synthetic_batch('seq2seq', 2, 6, 4, 50)
  assert {k: (v.dtype, v.shape[1:]) for k, v in batch.items()} == {k: (v.dtype, v.shape) for k, v in example.items()}


def test_seq2seq_decoder_len_defaults_to_seq_len(seq2seq_tsv):
  config = tasks.DataConfig(source=seq2seq_tsv, objective='seq2seq', seq_len=5)
  assert config.targets_len == 5
  t = seq2seq_task(seq2seq_tsv, seq_len=5, decoder_seq_len=None)
  example = t.transform(0, t.source[0])
  assert example['input_ids'].shape == example['targets'].shape == (5,)
  assert example['targets'].tolist() == [13, 14, 15, 1, 0]


def test_seq2seq_direction_from_config(seq2seq_tsv):
  t = seq2seq_task(seq2seq_tsv, source_feature='target', target_feature='source')
  example = t.transform(0, t.source[0])
  assert example['input_ids'].tolist() == [13, 14, 15, 1, 0, 0] and example['targets'].tolist() == [3, 4, 5, 1]
  assert t.source[0][t.info.target_feature] == 'the cat sat'


def test_seq2seq_auto_vocabulary_reads_both_sides(seq2seq_tsv, monkeypatch):
  seen: list[str] = []

  def load(spec, *, corpus, auto_dir):
    del spec, auto_dir
    seen.extend(corpus)
    return WORDS
  monkeypatch.setattr(tasks.token_cache, 'load_tokenizer', load)
  for split in ('train', 'validation'):  # the validation task trains on the train split too
    seen.clear()
    config = tasks.DataConfig(source=seq2seq_tsv, objective='seq2seq', seq_len=6)
    tasks.build_task(config, split, seed=0, tokenizer_dir='unused')
    assert seen == ['the cat sat', 'die Katze sass', 'a very long sentence with many words', 'ein langer Satz',
                    'hi', '']


def test_seq2seq_on_tfds_summarisation_with_mock_data(tmp_path, tokenizer):
  """cnn_dailymail as a user reads it (prepared as array_record; here TFDS's mock data): article -> highlights."""
  tfds = pytest.importorskip('tensorflow_datasets')
  with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
    t = seq2seq_task('tfds:cnn_dailymail', 'validation', tokenizer=tokenizer, seq_len=LENGTH, decoder_seq_len=8,
                     data_dir=str(tmp_path))
    record = t.source[1]
    example = t.transform(1, record)
  assert (t.info.text_features, t.info.target_feature) == (('article',), 'highlights')
  ids = tokenizer.encode(record['highlights'])[:7] + [tokenizer.eos_id]
  assert example['targets'][:len(ids)].tolist() == ids and example['targets'].shape == (8,)
  assert example['input_ids'].tolist()[:3] == tokenizer.encode(record['article'])[:3]


def test_seq2seq_objective_must_fit_the_source(data_dir, tokenizer, seq2seq_tsv):
  with pytest.raises(ValueError, match=r"data.objective=seq2seq does not fit data.source='builtin:sotu', a corpus "
                                       r"dataset; pick a matching objective or source \(seq2seq needs a source text "
                                       r"and a target text"):
    task(data_dir, tokenizer, 'builtin:sotu', 'seq2seq')
  with pytest.raises(ValueError, match=r'data.objective=classification does not fit .*, a seq2seq dataset'):
    tasks.build_task(tasks.DataConfig(source=seq2seq_tsv, objective='classification', seq_len=LENGTH), 'train',
                     seed=0, tokenizer=tokenizer)
  with pytest.raises(ValueError, match=r'data.tokenizer has no eos token, which data.objective=seq2seq needs'):
    seq2seq_task(seq2seq_tsv, tokenizer=tokenization.load_tokenizer('wordpiece'))


@pytest.mark.parametrize('fields, message', [
    (dict(objective='causal_lm', source_feature='a', target_feature='b'),
     r"data.source_feature='a': only data.objective=seq2seq reads a source and a target feature, not causal_lm"),
    (dict(objective='seq2seq', source_feature='a'), r'data.target_feature=None: set both .* or neither'),
    (dict(objective='seq2seq', decoder_seq_len=1), r'data.decoder_seq_len=1: must be at least 2'),
])
def test_seq2seq_config_errors(fields, message):
  with pytest.raises(ValueError, match=message):
    tasks.DataConfig(source='tsv:x.tsv', seq_len=LENGTH, **fields)


def test_length_buckets_are_checked_before_anything_runs():
  base = dict(source='builtin:movie_sentiment/binary', objective='classification', seq_len=64)
  assert tasks.DataConfig(**base, length_buckets=[16, 32, 64]).length_buckets == (16, 32, 64)
  with pytest.raises(ValueError, match=r'the last bucket must be data.seq_len=64.*\(16, 32, 64\)'):
    tasks.DataConfig(**base, length_buckets=(16, 32))
  with pytest.raises(ValueError, match='corpus objectives fill every row'):
    tasks.DataConfig(source="builtin:sotu", objective="causal_lm", seq_len=64, length_buckets=(32, 64))


@pytest.mark.parametrize('fields, message', [
    (dict(bad_rows='drop'), r"data.bad_rows='drop': unknown policy; valid values are \['error', 'skip'\]"),
    (dict(label_names=('a', 'a')), r"data.label_names=\['a', 'a'\]: the class names must be distinct"),
    (dict(objective='regression', label_names=('a', 'b')), r'only data.objective=classification has classes, not '
                                                            'regression'),
])
def test_row_check_config_errors(fields, message):
  with pytest.raises(ValueError, match=message):
    tasks.DataConfig(**(dict(source='tsv:x.tsv', objective='classification', seq_len=LENGTH) | fields))


def test_build_task_reads_a_tsv_with_the_configs_row_rules(tmp_path, capsys, tokenizer):
  """data.bad_rows, data.label_names and the objective's label kind reach the tsv: reader."""
  (tmp_path / 'train.tsv').write_text('text\tlabel\nthe cat\t1\nsat\t3\nhi\t\n', encoding='utf-8')
  config = tasks.DataConfig(source=f'tsv:{tmp_path}', objective='regression', seq_len=6, bad_rows='skip')
  t = tasks.build_task(config, 'train', seed=0, tokenizer=tokenizer)
  assert [float(t.source[i]['label']) for i in range(len(t.source))] == [1.0, 3.0]  # integer scores: targets
  assert 'dropped 1 of 3 rows' in capsys.readouterr().out
  config = dataclasses.replace(config, objective='classification', label_names=('no', 'yes', 'maybe', 'surely'))
  t = tasks.build_task(config, 'train', seed=0, tokenizer=tokenizer)
  assert t.info.label_names == config.label_names and int(t.transform(1, t.source[1])['label']) == 3
  with pytest.raises(sources.DataError, match=r"train.tsv line 4, column 'label': no label \(''\)"):
    tasks.build_task(dataclasses.replace(config, bad_rows='error'), 'train', seed=0, tokenizer=tokenizer)


# --- token types of text pairs -------------------------------------------------------------------------------

def test_pair_token_types_follow_the_tokenizer(data_dir, tokenizer, tmp_path):
  """BERT's layout puts the second text at token type 1, RoBERTa's at 0 behind </s></s>; a model with a 1-row
  token-type table refuses type 1 (a lookup would clamp it silently) and takes RoBERTa's pairs."""
  from configs import glue  # pylint: disable=import-outside-toplevel
  import model  # pylint: disable=import-outside-toplevel
  from trainer import runner  # pylint: disable=import-outside-toplevel
  config = tasks.DataConfig(source='builtin:sotu', objective='mlm', seq_len=LENGTH, data_dir=str(data_dir),
                            tokenizer='byte_bpe:auto,vocab_size=400')
  roberta = tasks.build_task(config, 'train', seed=0, tokenizer_dir=tmp_path).tokenizer
  pairs = tmp_path / 'pairs.tsv'
  pairs.write_text('text\ttext_b\tlabel\n' + ''.join(f'first {i}\tsecond {i}\t{i % 2}\n' for i in range(8)))
  bert_pairs, roberta_pairs = (task(data_dir, tok, f'tsv:{pairs}', 'classification') for tok in (tokenizer, roberta))
  assert (bert_pairs.token_types, roberta_pairs.token_types) == (2, 1)
  assert task(data_dir, roberta, 'builtin:movie_sentiment/binary', 'classification').token_types == 1
  out = roberta_pairs.transform(0, roberta_pairs.source[0])
  first = len(roberta.encode('first 0'))
  assert out['input_ids'][first + 1:first + 3].tolist() == [roberta.sep_id] * 2 and not out['token_type_ids'].any()
  assert bert_pairs.transform(0, bert_pairs.source[0])['token_type_ids'].max() == 1
  one_type = model.ModelConfig.from_dict(glue.get_config('sst2,roberta_tiny').model)
  assert one_type.num_token_types == 1
  with pytest.raises(ValueError) as error:
    runner.check_model_fits_data(one_type, bert_pairs.config, bert_pairs.info, 420, bert_pairs.token_types)
  assert str(error.value) == (
      "model.num_token_types=1, but data.tokenizer ('sentencepiece:auto,vocab_size=8000') marks the second text of "
      f"the pairs of data.source='tsv:{pairs}' as token type 1: set --config.model.num_token_types=2 (BERT) or 0 "
      "(none, as DistilBERT), or use a tokenizer with one token type for pairs (RoBERTa's byte_bpe: <s> A </s></s> "
      "B </s>)")
  runner.check_model_fits_data(one_type, roberta_pairs.config, roberta_pairs.info, 400, roberta_pairs.token_types)
  for types in (0, 2):
    runner.check_model_fits_data(one_type.replace(num_token_types=types), bert_pairs.config, bert_pairs.info, 420,
                                 bert_pairs.token_types)
