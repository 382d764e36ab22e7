"""config.data -> task: every objective on built-in datasets (built from tiny fake packages), fixed shapes,
the objectives' contracts end to end, and errors for objectives that do not fit the source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data import prepare, tasks, tokenizers
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
def tokenizer(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tokenizers.Tokenizer:
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
  wordpiece = tokenizers.load_tokenizer('wordpiece')  # BERT's: no EOS, no sentinels
  with pytest.raises(ValueError, match=r'data.tokenizer has no eos token, which data.objective=span_corruption '
                                       r'needs; use one that has it'):
    task(data_dir, wordpiece, 'builtin:sotu', 'span_corruption')
  gpt2 = tokenizers.load_tokenizer('gpt2_bpe')  # no [CLS]/[SEP]/[MASK]/pad
  with pytest.raises(ValueError, match=r'data.tokenizer has no cls, sep, mask, pad token, which data.objective=mlm'):
    task(data_dir, gpt2, 'builtin:sotu', 'mlm')
