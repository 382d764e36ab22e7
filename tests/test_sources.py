"""data/sources.py: each `data.source` form, the errors for bad ones, TaskInfo, and the TFDS catalog path under
`tfds.testing.mock_data` (no TensorFlow, no network)."""

from __future__ import annotations

import dataclasses
import pickle
import types
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data import sources
from data.sources import SourceError, TaskInfo, TaskKind
from tests.fixtures import raw_packages

GLUE_FIXTURES = Path(__file__).parent / 'fixtures' / 'glue'
tfds.disable_progress_bar()


@pytest.fixture(scope='module')
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
  """A fake raw cache (data/raw.py reads $TJ_RAW_DIR) and an empty TFDS data_dir, for the whole module."""
  raw_cache = raw_packages.write_raw_cache(tmp_path_factory.mktemp('raw'))
  patch = pytest.MonkeyPatch()
  patch.setenv('TJ_RAW_DIR', str(raw_cache))
  yield {'raw': raw_cache, 'data_dir': tmp_path_factory.mktemp('tfds')}
  patch.undo()


@pytest.mark.parametrize('spec, kind, target', [
    ('builtin:sotu', sources.SourceKind.BUILTIN, 'sotu'),
    ('builtin:movie_sentiment/regression', sources.SourceKind.BUILTIN, 'movie_sentiment/regression'),
    ('tfds:glue/sst2', sources.SourceKind.TFDS, 'glue/sst2'),
    ('tsv:/data/my task/{split}.csv', sources.SourceKind.TSV, '/data/my task/{split}.csv'),
])
def test_parse(spec: str, kind: sources.SourceKind, target: str) -> None:
  assert sources.SourceSpec.parse(spec) == sources.SourceSpec(kind, target)


@pytest.mark.parametrize('spec, message', [
    ('sotu', 'not a source'),
    ('hf:glue', 'not a source'),
    ('builtin:', 'not a source'),
    ('builtin:imdb', "'imdb' is not a built-in dataset"),
    ('builtin:movie_sentiment/ternary', 'movie_sentiment has no config'),
])
def test_bad_specs_name_the_field_and_the_valid_forms(spec: str, message: str) -> None:
  with pytest.raises(SourceError, match=message) as error:
    sources.open_source(spec, 'train')
  assert f'data.source={spec!r}' in str(error.value)
  if 'not a' in message:
    assert "'tsv:<path>'" in str(error.value) and 'movie_sentiment/{binary,regression}' in str(error.value)


BUILTIN_TASKS = [
    ('builtin:sotu', TaskInfo('builtin:sotu', ('text',), None, 0), TaskKind.CORPUS),
    ('builtin:moby_dick', TaskInfo('builtin:moby_dick', ('text',), None, 0), TaskKind.CORPUS),
    ('builtin:next_sentence', TaskInfo('builtin:next_sentence', ('sentence1', 'sentence2'), 'label', 2,
                                       ('not_next', 'next')), TaskKind.CLASSIFICATION),
    ('builtin:movie_sentiment/binary', TaskInfo('builtin:movie_sentiment/binary', ('sentence',), 'label', 2,
                                                ('negative', 'positive')), TaskKind.CLASSIFICATION),
    ('builtin:movie_sentiment/regression', TaskInfo('builtin:movie_sentiment/regression', ('sentence',), 'label',
                                                    0), TaskKind.REGRESSION),
    ('builtin:sentiment_snippets/corpus', TaskInfo('builtin:sentiment_snippets/corpus', ('text',), None, 0),
     TaskKind.CORPUS),
    ('builtin:sentence_reversal', TaskInfo('builtin:sentence_reversal', ('source',), None, 0,
                                           target_feature='target'), TaskKind.SEQ2SEQ),
]


@pytest.mark.parametrize('spec, info, kind', BUILTIN_TASKS)
def test_builtin_is_built_on_first_use(env: dict[str, Path], spec: str, info: TaskInfo, kind: TaskKind) -> None:
  source = sources.open_source(spec, 'train', data_dir=env['data_dir'])
  assert source.info == info and source.info.kind is kind
  record = source[0]
  assert all(isinstance(record[name], str) and record[name] for name in info.tokenized_features)
  if kind is TaskKind.CLASSIFICATION:
    assert 0 <= record['label'] < info.num_classes
  assert source[-1] == source[len(source) - 1]
  assert source.__getitems__([0, len(source) - 1]) == [source[0], source[-1]]
  with pytest.raises(IndexError, match='out of range'):
    source[len(source)]  # pylint: disable=pointless-statement


def test_builtin_not_prepared_without_build_names_the_command(tmp_path: Path) -> None:
  with pytest.raises(SourceError, match=r'run `python -m data.prepare moby_dick --data_dir'):
    sources.open_source('builtin:moby_dick', 'train', data_dir=tmp_path, build=False)
  assert sources.task_info('builtin:moby_dick', data_dir=tmp_path).kind is TaskKind.CORPUS  # no build.
  assert not (tmp_path / 'moby_dick').exists()


def test_builtin_glue_tsv(env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
  monkeypatch.setenv('GLUE_DIR', str(GLUE_FIXTURES))  # builtin:glue_tsv on first use reads $GLUE_DIR.
  source = sources.open_source('builtin:glue_tsv/mnli', 'validation_mismatched', data_dir=env['data_dir'])
  assert source.info == TaskInfo('builtin:glue_tsv/mnli', ('premise', 'hypothesis'), 'label', 3,
                                 ('entailment', 'neutral', 'contradiction'))
  assert {r['premise'] for r in source} == {'Thank you for your gift.', 'We met in May.'}
  stsb = sources.open_source('builtin:glue_tsv/stsb', 'test', data_dir=env['data_dir'], glue_dir=GLUE_FIXTURES)
  assert stsb.info.kind is TaskKind.REGRESSION and stsb[0]['label'] == np.float32(-1)


def test_unknown_split_names_the_source(env: dict[str, Path]) -> None:
  with pytest.raises(SourceError, match=r"data.source='builtin:sotu', split 'test'"):
    sources.open_source('builtin:sotu', 'test', data_dir=env['data_dir'])


def test_corpora_mix_with_plus(env: dict[str, Path], tmp_path: Path) -> None:
  """'a+b' is every example of a, then of b, each reduced to its text; only corpora mix; a '+' inside a tsv:
  path is part of the path."""
  spec = 'builtin:sotu + builtin:moby_dick'
  mixed = sources.open_source(spec, 'validation', data_dir=env['data_dir'])
  parts = [sources.open_source(p, 'validation', data_dir=env['data_dir']) for p in ('builtin:sotu', 'builtin:moby_dick')]
  assert len(mixed) == sum(len(p) for p in parts) > len(parts[0]) > 0
  assert [r for r in mixed] == [{'text': r['text']} for p in parts for r in p]  # sotu's year, president dropped
  assert mixed[-1] == {'text': parts[1][-1]['text']}
  assert mixed.info == TaskInfo(spec, ('text',), None, 0) == sources.task_info(spec, data_dir=env['data_dir'])
  assert pickle.loads(pickle.dumps(mixed))[len(parts[0])] == mixed[len(parts[0])]  # grain workers get it pickled
  for bad, message in [('builtin:sotu+builtin:movie_sentiment/binary',
                        "'builtin:movie_sentiment/binary' is a classification dataset; only text corpora mix"),
                       ('builtin:sotu+builtin:sotu', 'builtin:sotu comes twice'),
                       ('builtin:sotu+builtin:imdb', "'imdb' is not a built-in dataset")]:
    with pytest.raises(SourceError, match=message):
      sources.open_source(bad, 'train', data_dir=env['data_dir'])
  folder = tmp_path / 'pros+cons'
  folder.mkdir()
  (folder / 'train.tsv').write_text('text\tlabel\ngood\t1\nbad\t0\n')
  assert sources.mixture_parts(f'tsv:{folder}/') is None
  assert len(sources.open_source(f'tsv:{folder}/', 'train')) == 2


def test_source_pickles_and_wraps_in_grain(env: dict[str, Path]) -> None:
  source = sources.open_source('builtin:movie_sentiment/binary', 'train', data_dir=env['data_dir'])
  clone = pickle.loads(pickle.dumps(source))  # grain workers receive the source pickled.
  assert len(clone) == len(source) and clone[0] == source[0] and clone.info == source.info
  grain = pytest.importorskip('grain')
  dataset = grain.MapDataset.source(source)
  assert len(dataset) == len(source) and dataset[1] == source[1]


# --- tfds: the TFDS catalog -----------------------------------------------------------------------------------

@pytest.mark.parametrize('name, info', [
    ('glue/sst2', TaskInfo('tfds:glue/sst2', ('sentence',), 'label', 2, ('negative', 'positive'))),
    ('glue/mnli', TaskInfo('tfds:glue/mnli', ('premise', 'hypothesis'), 'label', 3,
                           ('entailment', 'neutral', 'contradiction'))),
    ('glue/stsb', TaskInfo('tfds:glue/stsb', ('sentence1', 'sentence2'), 'label', 0)),
])
def test_tfds_catalog_with_mock_data(tmp_path: Path, name: str, info: TaskInfo) -> None:
  with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
    source = sources.open_source(f'tfds:{name}', 'train', data_dir=tmp_path)
    assert source.info == info and len(source) == 5
    record = source[3]
    assert all(isinstance(record[f], str) for f in info.text_features) and 'idx' in record


@pytest.mark.parametrize('name, source, target', [
    ('wmt14_translate/de-en', 'de', 'en'),  # translation: the config name's direction
    ('wmt_t2t_translate/de-en', 'de', 'en'),
    ('cnn_dailymail', 'article', 'highlights'),  # summarisation (also has id and publisher texts)
    ('xsum', 'document', 'summary'),
    ('gigaword', 'document', 'summary'),
])
def test_tfds_seq2seq_with_mock_data(tmp_path: Path, name: str, source: str, target: str) -> None:
  with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
    data = sources.open_source(f'tfds:{name}', 'validation', data_dir=tmp_path)
    assert data.info == TaskInfo(f'tfds:{name}', (source,), None, 0, target_feature=target)
    assert data.info.kind is TaskKind.SEQ2SEQ and data.info.tokenized_features == (source, target)
    assert len(data) == 4 and all(isinstance(data[2][f], str) for f in (source, target))
    assert sources.task_info(f'tfds:{name}', data_dir=tmp_path) == data.info


def test_tfds_seq2seq_direction_and_features_by_config(tmp_path: Path) -> None:
  """data.source_feature / data.target_feature: English -> German as Vaswani et al. trained on WMT14, and any
  two text features of another dataset; names that are not its text features are errors naming the field."""
  with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
    spec = 'tfds:wmt14_translate/de-en'
    en_de = sources.open_source(spec, 'train', data_dir=tmp_path, seq2seq_features=('en', 'de'))
    assert en_de.info == TaskInfo(spec, ('en',), None, 0, target_feature='de')
    assert sources.task_info(spec, data_dir=tmp_path, seq2seq_features=('en', 'de')) == en_de.info
    mnli = sources.open_source('tfds:glue/mnli', 'train', data_dir=tmp_path,
                               seq2seq_features=('premise', 'hypothesis'))
    assert mnli.info == TaskInfo('tfds:glue/mnli', ('premise',), None, 0, target_feature='hypothesis')
    with pytest.raises(SourceError, match=r"data.source_feature='fr' is not a text feature of "
                                          r"data.source='tfds:wmt14_translate/de-en'; its text features are "
                                          r"\['de', 'en'\]"):
      sources.open_source(spec, 'train', data_dir=tmp_path, seq2seq_features=('fr', 'en'))
    with pytest.raises(SourceError, match=r"data.target_feature='label' is not a text feature"):
      sources.open_source('tfds:glue/sst2', 'train', data_dir=tmp_path, seq2seq_features=('sentence', 'label'))
    with pytest.raises(SourceError, match=r"data.source_feature and data.target_feature are both 'en'"):
      sources.open_source(spec, 'train', data_dir=tmp_path, seq2seq_features=('en', 'en'))


def test_tfds_not_prepared_says_how(tmp_path: Path) -> None:
  with pytest.raises(SourceError, match=r'requirements-tf.txt.*tfds build glue/rte .*array_record.*glue_tsv/rte'):
    sources.open_source('tfds:glue/rte', 'train', data_dir=tmp_path)
  with pytest.raises(SourceError, match='not in the TFDS catalog'):
    sources.open_source('tfds:no_such_dataset', 'train', data_dir=tmp_path)


# --- tsv: a user's own file --------------------------------------------------------------------------------------

def _write(path: Path, text: str) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text, encoding='utf-8')
  return path


def test_tsv_single_file_string_labels(tmp_path: Path) -> None:
  path = _write(tmp_path / 'reviews.tsv', 'text\tlabel\ngreat "fun"\tpos\nawful\tneg\nfine\tneutral\n')
  source = sources.open_source(f'tsv:{path}', 'train')
  assert source.info == TaskInfo(f'tsv:{path}', ('text',), 'label', 3, ('neg', 'neutral', 'pos'))
  assert [r['text'] for r in source] == ['great "fun"', 'awful', 'fine']  # TSV: quotes are text.
  assert [int(r['label']) for r in source] == [2, 0, 1] and int(source[2]['idx']) == 2
  with pytest.raises(SourceError, match=r"no 'validation' file .*'\{split\}'"):
    sources.open_source(f'tsv:{path}', 'validation')


def test_tsv_split_pattern_pairs_and_int_labels(tmp_path: Path) -> None:
  _write(tmp_path / 'train.csv', 'text,text_b,label\n"a, b",c,0\nd,e,2\n')
  _write(tmp_path / 'test.csv', 'text,text_b\nf,g\n')  # a test file without labels.
  spec = f'tsv:{tmp_path}/{{split}}.csv'
  train, test = (sources.open_source(spec, split) for split in ('train', 'test'))
  assert train.info == TaskInfo(spec, ('text', 'text_b'), 'label', 3) and train.info.kind is TaskKind.CLASSIFICATION
  assert train[0] == {'text': 'a, b', 'text_b': 'c', 'label': 0, 'idx': 0}  # CSV: standard quoting.
  assert test[0]['label'] == -1  # unlabeled.


def test_tsv_folder_with_dev_file_regression_and_corpus(tmp_path: Path) -> None:
  _write(tmp_path / 'scores' / 'train.tsv', 'text\tlabel\nx\t0.5\ny\t-1.25\n')
  _write(tmp_path / 'scores' / 'dev.tsv', 'text\tlabel\nz\t3\n')
  source = sources.open_source(f'tsv:{tmp_path / "scores"}', 'validation')  # GLUE's dev.tsv is validation.
  assert source.info.kind is TaskKind.REGRESSION and source[0]['label'] == np.float32(3)
  corpus = _write(tmp_path / 'corpus.tsv', 'text\nfirst document\nsecond document\n')
  assert sources.task_info(f'tsv:{corpus}').kind is TaskKind.CORPUS
  assert sources.open_source(f'tsv:{corpus}', 'train')[1] == {'text': 'second document', 'idx': 1}


def test_tsv_seq2seq(tmp_path: Path) -> None:
  _write(tmp_path / 'mt' / 'train.tsv', 'source\ttarget\nein Haus\ta house\nzwei "Katzen"\ttwo cats\n')
  _write(tmp_path / 'mt' / 'dev.tsv', 'source\ttarget\nrot\t\n')  # an empty target is an empty string.
  spec = f'tsv:{tmp_path / "mt"}'
  train = sources.open_source(spec, 'train')
  assert train.info == TaskInfo(spec, ('source',), None, 0, target_feature='target')
  assert train.info.kind is TaskKind.SEQ2SEQ
  assert list(train) == [{'source': 'ein Haus', 'target': 'a house', 'idx': 0},
                         {'source': 'zwei "Katzen"', 'target': 'two cats', 'idx': 1}]
  assert sources.open_source(spec, 'validation')[0] == {'source': 'rot', 'target': '', 'idx': 0}
  # The other direction, by config.
  back = sources.open_source(spec, 'train', seq2seq_features=('target', 'source'))
  assert back.info == TaskInfo(spec, ('target',), None, 0, target_feature='source') and back[0]['source'] == 'ein Haus'
  # T5's column names (seqio's 'inputs'/'targets'), in either order, in a CSV.
  csv_file = _write(tmp_path / 't5.csv', 'targets,inputs\n"a, b",summarize: x\n')
  t5 = sources.open_source(f'tsv:{csv_file}', 'train')
  assert t5.info == TaskInfo(f'tsv:{csv_file}', ('inputs',), None, 0, target_feature='targets')
  assert t5[0] == {'inputs': 'summarize: x', 'targets': 'a, b', 'idx': 0}
  # Two text columns of a classification file, read as seq2seq: the label is not read.
  pairs = _write(tmp_path / 'pairs.tsv', 'text\ttext_b\tlabel\nq\ta\tyes\n')
  qa = sources.open_source(f'tsv:{pairs}', 'train', seq2seq_features=('text', 'text_b'))
  assert qa.info.kind is TaskKind.SEQ2SEQ and qa[0] == {'text': 'q', 'text_b': 'a', 'idx': 0}


def test_tsv_seq2seq_splits_need_the_same_columns(tmp_path: Path) -> None:
  _write(tmp_path / 'train.tsv', 'source\ttarget\na\tb\n')
  _write(tmp_path / 'test.tsv', 'text\na\n')
  with pytest.raises(SourceError, match=r'the columns of .* differ; every split needs the same text columns'):
    sources.open_source(f'tsv:{tmp_path}/{{split}}.tsv', 'train')


@pytest.mark.parametrize('name, text, message', [
    ('bad.tsv', 'sentence\tlabel\nx\t1\n', r"columns \['sentence', 'label'\]; the header must name text"),
    ('bad.txt', 'text\nx\n', r'must end in .tsv \(tab\) or .csv'),
    ('mixed.tsv', 'source\ttarget\tlabel\nx\ty\t1\n', r'or for seq2seq source and target \(or inputs and targets\)'),
    ('half.tsv', 'inputs\ttarget\nx\ty\n', r"columns \['inputs', 'target'\]"),
])
def test_tsv_errors(tmp_path: Path, name: str, text: str, message: str) -> None:
  path = _write(tmp_path / name, text)
  with pytest.raises(SourceError, match=message):
    sources.open_source(f'tsv:{path}', 'train')


def test_task_info_needs_one_or_two_text_features() -> None:
  with pytest.raises(SourceError, match=r"expected 1 or 2 text features, found \['a', 'b', 'c'\]"):
    TaskInfo('tfds:x', ('a', 'b', 'c'), 'label', 2)


@pytest.mark.parametrize('text, label, target', [(('a', 'b'), None, 'c'), (('a',), 'label', 'c'), (('a',), None, 'a')])
def test_task_info_seq2seq_has_one_source_and_another_target(text, label, target) -> None:
  with pytest.raises(SourceError, match=r'a seq2seq source has one source text and a different target text'):
    TaskInfo('tfds:x', text, label, 0, target_feature=target)


# --- tsv: every row checked (data.bad_rows, data.label_names) ----------------------------------------------------

GOOD_ROWS = ''.join(f'a film number {i}\t{i % 2}\n' for i in range(6))  # lines 2..7 of a file with a header


def _bad_file(tmp_path: Path, name: str, body: str | bytes) -> Path:
  """`name` holding `body`, in a folder source whose train file is `name` or else a train.tsv of GOOD_ROWS."""
  folder = tmp_path / 'task'
  if not name.startswith('train.'):
    _write(folder / 'train.tsv', 'text\tlabel\n' + GOOD_ROWS)
  path = folder / name
  folder.mkdir(parents=True, exist_ok=True)
  path.write_bytes(body if isinstance(body, bytes) else body.encode('utf-8'))
  return path


# (file, its text, what the message says after '<path> '); the header is line 1.
BAD_ROWS = [
    ('train.tsv', 'text\tlabel\n' + GOOD_ROWS + 'x\t\ny\t1\nz\t\n',
     "line 8, column 'label': no label (''), but every train row needs one (only a test split may be unlabelled) "
     '(2 such rows in this file)'),
    ('train.tsv', 'text\tlabel\n' + GOOD_ROWS + 'x\t-1\n',
     "line 8, column 'label': no label ('-1'), but every train row needs one"),
    ('train.tsv', 'text\tlabel\n' + GOOD_ROWS + 'x\n',
     'line 8: 1 tab-separated field where the header has 2 (text, label); no label (1 such row in this file)'),
    ('train.tsv', 'text\tlabel\n' + GOOD_ROWS + 'a good\tfilm\t1\n',
     "line 8: 3 tab-separated fields where the header has 2 (text, label); the extra: '1'; a stray tab in the "
     'text? (1 such row in this file)'),
    ('train.tsv', 'text\tlabel\n' + GOOD_ROWS + 'a good\tfilm\n',
     "line 8, column 'label': 'film' is not a class id of the training split (0..1) (1 such row in this file)"),
    ('train.tsv', 'text\tlabel\n' + GOOD_ROWS + 'x\t-3\n',
     "line 8, column 'label': '-3' is negative: class ids are 0, 1, ... (-1 marks an unlabelled row)"),
    ('dev.tsv', 'text\tlabel\nx\t1\ny\t2\nz\t7\n',
     "line 3, column 'label': '2' is not a class id of the training split (0..1) (2 such rows in this file)"),
    ('train.tsv', 'text\tlabel\na\t0.5\nb\tnan\nc\t1.5\nd\tinf\ne\tabc\nf\t2\n',
     "line 3, column 'label': 'nan' is not a finite number (a regression target) (3 such rows in this file)"),
    ('train.tsv', b'text\tlabel\n' + GOOD_ROWS.encode() + b'caf\xe9\t1\nok\t1\n',
     "line 8, column 'text': byte b'\\xe9' at byte offset 122 of the file is not UTF-8: save the file as UTF-8 "
     '(1 such row in this file)'),
    ('train.csv', 'text,label\n' + ''.join(f'row {i},{i % 2}\n' for i in range(4)) + '"unbalanced,1\n'
     + ''.join(f'row {i},{i % 2}\n' for i in range(4, 40)),
     "line 6, column 'text': a quoted field opens here and runs to line 42 ('unbalanced,1\\nrow 4,0\\nrow 5,1\\nrow "
     "6,0\\n...'), and its lines look like rows of the file: an unbalanced '\"'? (1 such row in this file)"),
    ('train.csv', 'text,label\nno comma,1\nyes, a comma,0\n',
     "line 3: 3 comma-separated fields where the header has 2 (text, label); the extra: '0'; a stray comma in the "
     'text? (quote a text that holds commas) (1 such row in this file)'),
]


@pytest.mark.parametrize('name, body, message', BAD_ROWS, ids=[
    'empty_label', 'minus_one', 'missing_field', 'stray_tab', 'word_among_ids', 'negative', 'dev_label_not_in_train',
    'nan_inf_word_target', 'not_utf8', 'unbalanced_quote', 'stray_comma'])
def test_tsv_bad_row_is_an_error_naming_file_line_column_value_and_count(tmp_path: Path, name: str,
                                                                          body: str | bytes, message: str) -> None:
  path = _bad_file(tmp_path, name, body)
  spec = f'tsv:{path.parent}'
  with pytest.raises(sources.DataError) as error:
    sources.open_source(spec, 'train')  # every split file is checked on the first open, whichever split it is
  assert str(error.value).startswith(f'{path} {message}'), str(error.value)
  assert str(error.value).endswith('): fix the file, or set --config.data.bad_rows=skip to drop bad rows')


def test_csv_quoted_text_with_line_breaks_is_one_field(tmp_path: Path) -> None:
  """A text with line breaks, quoted as CSV writers quote it, is a text; only rows swallowed by a quote are bad."""
  path = _write(tmp_path / 'train.csv', 'text,label\n"first paragraph\n\nsecond, with a comma",1\nnext,0\n')
  source = sources.open_source(f'tsv:{path}', 'train')
  assert [r['text'] for r in source] == ['first paragraph\n\nsecond, with a comma', 'next']
  assert [int(r['label']) for r in source] == [1, 0]


@pytest.mark.parametrize('name, body, message', [
    ('train.tsv', '', 'is empty: a tsv: file needs a header row'),
    ('train.tsv', 'text\tlabel\n', 'has a header but no rows'),
    ('dev.tsv', 'text\n' + 'x\n', "has no label column, but .*train.tsv has one: only a test split may be unlabelled"),
    ('test.csv', b'text,lab\xffel\nx,1\n', r"line 1 \(the header\): byte b'\\xff' at byte offset 8"),
])
def test_tsv_bad_file_is_an_error_naming_it(tmp_path: Path, name: str, body: str | bytes, message: str) -> None:
  path = _bad_file(tmp_path, name, body)
  with pytest.raises(sources.DataError, match=f'^{path}.* {message}'):
    sources.task_info(f'tsv:{path.parent}')


def test_tsv_train_without_labels_while_another_split_has_them(tmp_path: Path) -> None:
  _write(tmp_path / 'train.tsv', 'text\nx\n')
  _write(tmp_path / 'test.tsv', 'text\tlabel\nx\t1\n')
  with pytest.raises(sources.DataError, match=r'train.tsv has no label column, but .*test.tsv has one'):
    sources.open_source(f'tsv:{tmp_path}', 'train')


def test_tsv_skip_drops_exactly_the_bad_rows_and_says_where(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
  train = _write(tmp_path / 'train.tsv', 'text\tlabel\n' + 'good 2\t1\n' + 'x\t\n' + 'good 4\t0\n' + 'y\t1\textra\n'
                 + 'good 6\t1\n' + 'z\n' + 'w\t-1\n' + 'good 9\t0\n')
  _write(tmp_path / 'dev.csv', 'text,label\nkept,1\n"open,1\nswallowed,0\n')
  _write(tmp_path / 'test.tsv', 'text\tlabel\nno label is fine here\t\nq\t1\n')
  rules = sources.ReadRules(bad_rows=sources.BadRows.SKIP)
  spec = f'tsv:{tmp_path}'
  train_source = sources.open_source(spec, 'train', rules=rules)
  assert [r['text'] for r in train_source] == ['good 2', 'good 4', 'good 6', 'good 9']
  assert [(int(r['label']), int(r['idx'])) for r in train_source] == [(1, 0), (0, 1), (1, 2), (0, 3)]
  assert [r['text'] for r in sources.open_source(spec, 'validation', rules=rules)] == ['kept']
  assert [int(r['label']) for r in sources.open_source(spec, 'test', rules=rules)] == [-1, 1]  # test: unlabelled ok
  assert capsys.readouterr().out.splitlines() == [  # once per file, however often a split is opened
      f'data.bad_rows=skip: dropped 4 of 8 rows of {train}: line 3 (no label), line 5 (wrong number of fields), '
      'line 7 (wrong number of fields), ...',
      f'data.bad_rows=skip: dropped 1 of 2 rows of {tmp_path / "dev.csv"}: lines 3-4 (a quoted field spanning lines)']
  only_bad = _write(tmp_path / 'bad' / 'train.tsv', 'text\tlabel\nx\t\n')
  with pytest.raises(sources.DataError, match=f'{only_bad}: every one of its 1 rows is bad'):
    sources.open_source(f'tsv:{only_bad}', 'train', rules=rules)


def test_tsv_classes_come_from_the_training_file(tmp_path: Path) -> None:
  _write(tmp_path / 'train.tsv', 'text\tlabel\na\tpos\nb\tneg\nc\tpos\n')
  _write(tmp_path / 'dev.tsv', 'text\tlabel\nd\tpos\ne\tneutral\n')
  with pytest.raises(sources.DataError, match=rf"^{tmp_path / 'dev.tsv'} line 3, column 'label': 'neutral' is not a "
                                              r'class of the training split \(neg, pos\); declare every class'):
    sources.open_source(f'tsv:{tmp_path}', 'train')
  info = sources.task_info(f'tsv:{tmp_path}', rules=sources.ReadRules(bad_rows=sources.BadRows.SKIP))
  assert info == TaskInfo(f'tsv:{tmp_path}', ('text',), 'label', 2, ('neg', 'pos'))
  assert info.labels_from == str(tmp_path / 'train.tsv') and info.class_counts() == 'neg: 1, pos: 2'
  assert info.label_stats == (sources.LabelStats('neg', 1, 3), sources.LabelStats('pos', 2, 2))


def test_tsv_label_names_declare_the_classes_in_order(tmp_path: Path) -> None:
  _write(tmp_path / 'train.tsv', 'text\tlabel\na\tpos\nb\tneg\nc\t1\n')  # names, or their ids
  _write(tmp_path / 'dev.tsv', 'text\tlabel\nd\tneutral\n')
  rules = sources.ReadRules(label_names=('pos', 'neutral', 'neg'))
  train = sources.open_source(f'tsv:{tmp_path}', 'train', rules=rules)
  assert train.info == TaskInfo(f'tsv:{tmp_path}', ('text',), 'label', 3, ('pos', 'neutral', 'neg'))
  assert [int(r['label']) for r in train] == [0, 2, 1]
  assert int(sources.open_source(f'tsv:{tmp_path}', 'validation', rules=rules)[0]['label']) == 1
  _write(tmp_path / 'dev.tsv', 'text\tlabel\nd\tmixed\ne\t3\n')
  with pytest.raises(sources.DataError, match=r"dev.tsv line 2, column 'label': 'mixed' is not one of "
                                              r'data.label_names \(pos, neutral, neg\) nor a class id 0..2 \(2 such'):
    sources.open_source(f'tsv:{tmp_path}', 'train', rules=rules)
  with pytest.raises(SourceError, match=r"data.label_names=\['a', 'b'\], but data.source='builtin:moby_dick' "
                                        r'declares its classes \[\]'):
    sources.task_info('builtin:moby_dick', data_dir=tmp_path, rules=sources.ReadRules(label_names=('a', 'b')))


def test_tsv_label_kind_follows_the_objective_where_the_labels_allow(tmp_path: Path) -> None:
  """Integer scores are regression targets for a regression objective; a typo '1.5' among class ids is a bad
  row of a classification objective; without one, the labels decide (all numbers, not all integers)."""
  path = _write(tmp_path / 'train.tsv', 'text\tlabel\na\t1\nb\t3\nc\t1.5\nd\t2\n')
  spec = f'tsv:{path}'
  assert sources.task_info(spec).kind is TaskKind.REGRESSION
  regression = sources.ReadRules(labels=TaskKind.REGRESSION)
  assert [float(r['label']) for r in sources.open_source(spec, 'train', rules=regression)] == [1, 3, 1.5, 2]
  with pytest.raises(sources.DataError, match=r"line 4, column 'label': '1.5' is not a class id of the training "
                                              r'split \(0..3\)'):
    sources.open_source(spec, 'train', rules=sources.ReadRules(labels=TaskKind.CLASSIFICATION))
  words = _write(tmp_path / 'words.tsv', 'text\tlabel\na\tpos\nb\tneg\n')  # the objective's kind cannot fit:
  assert sources.task_info(f'tsv:{words}', rules=regression).kind is TaskKind.CLASSIFICATION  # tasks.py says so


def test_runner_names_a_stray_label_and_its_line(tmp_path: Path) -> None:
  """check_model_fits_data: a rare label beyond model.num_labels is a row to fix, named with its line; classes
  the model lacks otherwise get the list of classes and both fixes; the std of constant targets names the file."""
  from configs import glue  # pylint: disable=import-outside-toplevel
  from data import tasks  # pylint: disable=import-outside-toplevel
  from model import ModelConfig  # pylint: disable=import-outside-toplevel
  from trainer import runner  # pylint: disable=import-outside-toplevel
  config = glue.get_config('sst2')
  binary = ModelConfig.from_dict(config.model)
  assert binary.num_labels == 2
  rows = [f'row {i}\t{i % 2}' for i in range(30)]
  rows.insert(15, 'row x\t5')
  path = _write(tmp_path / 'ints' / 'train.tsv', 'text\tlabel\n' + '\n'.join(rows) + '\n')
  data = tasks.DataConfig(source=f'tsv:{path}', objective='classification', seq_len=16)
  info = sources.task_info(data.source, rules=data.read_rules)
  with pytest.raises(ValueError) as error:
    runner.check_model_fits_data(binary, data, info, vocab_size=10)
  assert str(error.value).splitlines() == [
      f"model.num_labels=2, but the training split of data.source='tsv:{path}' has 6 classes (0: 15, 1: 15, 5: 1)",
      'train.tsv line 17: label 5 occurs once; model.num_labels=2 expects 0..1: fix the row, or set '
      '--config.model.num_labels=6 if 6 classes are meant']
  words = _write(tmp_path / 'words' / 'train.tsv', 'text\tlabel\n' + 'a\tneg\nb\tpos\n' * 20 + 'c\tfilm\n')
  info = sources.task_info(f'tsv:{words}', rules=data.read_rules)
  with pytest.raises(ValueError, match=r"has 3 classes \(film: 1, neg: 20, pos: 20\)\ntrain.tsv line 42: label "
                                       r"'film' occurs once; model.num_labels=2 expects 2 classes: fix the row"):
    runner.check_model_fits_data(binary, dataclasses.replace(data, source=f'tsv:{words}'), info, vocab_size=10)
  two = _write(tmp_path / 'two' / 'train.tsv', 'text\tlabel\n' + 'a\tneg\nb\tpos\n' * 20)
  with pytest.raises(ValueError, match=r'has 2 classes \(neg: 20, pos: 20\)\nset --config.model.num_labels=2, or '
                                       r'declare every class in class-id order with --config.data.label_names'):
    runner.check_model_fits_data(binary.replace(num_labels=3), dataclasses.replace(data, source=f'tsv:{two}'),
                                 sources.task_info(f'tsv:{two}', rules=data.read_rules), vocab_size=10)
  constant = _write(tmp_path / 'constant' / 'train.tsv', 'text\tlabel\na\t0.5\nb\t0.5\n')
  regression = tasks.DataConfig(source=f'tsv:{constant}', objective='regression', seq_len=16)
  source = sources.open_source(regression.source, 'train', rules=regression.read_rules)
  with pytest.raises(ValueError, match=f'every training label of {constant} is 0.5; set it to False'):
    runner._standardized(binary.replace(num_labels=1), regression, types.SimpleNamespace(source=source,
                                                                                          info=source.info))
