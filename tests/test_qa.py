"""Extractive QA, model-free: tokenizer offsets, SQuAD features across stride windows, post-processing of hand-made
logits, the official EM / F1, the QA sources (tfds squad under mock_data, JSON, TSV), the built-in cloze task, and
the errors that name the row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

import objectives
from data import prepare, qa, sources, tasks
from data.datasets import cloze, common, sotu
from data.tokenization import load_tokenizer, train_sentencepiece, SentencePieceTokenizer
from evaluation import evaluate
from evaluation import qa as eval_qa
from evaluation.config import EvalConfig
from evaluation.metrics import Metric
from tests.fixtures import raw_packages

tfds.disable_progress_bar()

WORDS = ('the river ran past the old mill and under a stone bridge where children fished in summer while their '
         'parents talked about the harvest and the weather and the price of grain at the market in town').split()


@pytest.fixture(scope='module')
def wordpiece():
  return load_tokenizer('wordpiece')  # MiniLM's uncased vocabulary (lowercases, strips accents)


@pytest.fixture(scope='module')
def specials(wordpiece):
  return tasks.special_ids(wordpiece)


def _record(qid: str, question: str, context: str, answers: list[tuple[str, int]]) -> dict:
  return {'id': qid, 'title': '', 'question': question, 'context': context,
          'answers': {'text': [t for t, _ in answers], 'answer_start': [s for _, s in answers]}}


def _long_record() -> dict:
  """A context of ~90 words, the answer 'Zanzibar' in the middle of it."""
  before = ' '.join(WORDS[k % len(WORDS)] for k in range(44))
  after = ' '.join(WORDS[(k * 7) % len(WORDS)] for k in range(44))
  context = f'{before} Zanzibar {after}.'
  return _record('long', 'where did the ship sail?', context, [('Zanzibar', len(before) + 1)])


# ----------------------------------------------------------------------------------------------------------
# 1. Offsets


def test_wordpiece_offsets_round_trip_with_lowercasing_and_accents(wordpiece):
  text = 'Café Müller\'s naïve résumé cost 1,234.50 — ÉCOLE Zanzibar!'
  ids, offsets = wordpiece.encode_with_offsets(text)
  assert ids == wordpiece.encode(text) and len(offsets) == len(ids)
  pieces = [wordpiece._tok.id_to_token(i) for i in ids]  # pylint: disable=protected-access
  for piece, (start, end) in zip(pieces, offsets):
    # the token is the lowercased, accent-stripped form of exactly the original characters it spans
    assert wordpiece.encode(text[start:end]) != [] and piece.removeprefix('##') == wordpiece._tok.normalizer \
        .normalize_str(text[start:end]), (piece, text[start:end])  # pylint: disable=protected-access
  first = [start for start, _ in offsets].index(text.index('Zanzibar'))  # a word of several pieces
  assert text[offsets[0][0]:offsets[0][1]] == 'Café' and text[offsets[first][0]:offsets[-1][1]] == 'Zanzibar!'


def test_sentencepiece_offsets_are_characters_of_the_original_text(tmp_path):
  lines = [' '.join(WORDS[k:] + WORDS[:k]) + ' café naïve' for k in range(len(WORDS))]
  path = train_sentencepiece(lines, tmp_path / 'spm.model', 300, extra_ids=0)
  tok = SentencePieceTokenizer.from_file(path)
  text = 'The café by the river, naïve  children fished.'
  ids, offsets = tok.encode_with_offsets(text)
  assert ids == tok.encode(text)
  for i, (start, end) in zip(ids, offsets):
    piece = tok._sp.id_to_piece(i).replace('\u2581', '')  # pylint: disable=protected-access
    if i != tok.unk_id and not piece.startswith('<0x'):  # not a byte-fallback piece
      assert text[start:end] == piece, (piece, text[start:end])
  assert text[offsets[-1][0]:offsets[-1][1]] == '.'


# ----------------------------------------------------------------------------------------------------------
# 2. Features


def test_features_cover_the_context_in_overlapping_windows_and_round_trip_the_answer(wordpiece, specials):
  record = _long_record()
  table = qa.build_features([record], wordpiece, specials, seq_len=40, doc_stride=12, max_query_len=8)
  question = wordpiece.encode(record['question'])
  head = 1 + len(question) + 1  # [CLS] question [SEP]
  assert len(table) >= 4 and set(table.example_index) == {0}
  context_ids = wordpiece.encode(record['context'])
  seen = []
  for i in range(len(table)):
    row = table[i]
    n = int(row['attention_mask'].sum())
    assert row['input_ids'][0] == specials.cls and row['input_ids'][head - 1] == specials.sep
    assert row['input_ids'][n - 1] == specials.sep and n <= 40
    assert list(row['input_ids'][1:head - 1]) == question
    assert list(row['token_type_ids'][:n]) == [0] * head + [1] * (n - head)
    window = list(row['input_ids'][head:n - 1])
    seen.append(window)
    inside = table.offsets[i][head:n - 1]
    assert (inside >= 0).all() and (table.offsets[i][:head] == -1).all() and (table.offsets[i][n - 1:] == -1).all()
  # the windows, laid one after the other with doc_stride tokens of overlap, are the context
  joined = seen[0] + [t for w in seen[1:] for t in w[12:]]
  assert joined == context_ids and all(w[:12] == p[-12:] for p, w in zip(seen, seen[1:]))
  holding = [i for i in range(len(table)) if table.start_positions[i]]
  assert len(holding) == 2  # the answer falls in the overlap of two windows
  for i in holding:
    s, e = table.start_positions[i], table.end_positions[i]
    assert record['context'][table.offsets[i][s][0]:table.offsets[i][e][1]] == 'Zanzibar'
  assert all(table.end_positions[i] == 0 for i in range(len(table)) if i not in holding)


def test_a_question_without_answer_points_at_cls_and_a_long_question_is_cut(wordpiece, specials):
  record = _record('none', ' '.join(['why'] * 30), 'The mill stood by the river.', [])
  table = qa.build_features([record], wordpiece, specials, seq_len=32, doc_stride=8, max_query_len=5)
  assert len(table) == 1 and table.start_positions[0] == table.end_positions[0] == 0
  assert table.context_start[0] == 1 + 5 + 1


# ----------------------------------------------------------------------------------------------------------
# 3. Post-processing


def _logits(table: qa.FeatureTable, spans: dict[int, list[tuple[int, int, float]]]) -> np.ndarray:
  """(F, T, 2) logits of -5 everywhere but, per feature, start / end logits of `score` / 2 at the given tokens."""
  out = np.full(table.input_ids.shape + (2,), -5.0, np.float32)
  for f, pairs in spans.items():
    for s, e, score in pairs:
      out[f, s, 0], out[f, e, 1] = score / 2, score / 2
  return out


def test_post_processing_picks_the_best_span_over_every_window(wordpiece, specials):
  record = _long_record()
  table = qa.build_features([record], wordpiece, specials, seq_len=40, doc_stride=12, max_query_len=8)
  first, second = [i for i in range(len(table)) if table.start_positions[i]]
  other = next(i for i in range(len(table)) if i not in (first, second))
  gold = (int(table.start_positions[second]), int(table.end_positions[second]))
  head = int(table.context_start[other])
  # a worse span in another window, a better-scored end-before-start pair and an over-long span that must not win
  logits = _logits(table, {second: [(*gold, 8.0)], other: [(head + 3, head + 5, 6.0)]})
  logits[first, 20, 0], logits[first, 15, 1] = 9.0, 9.0  # end < start
  logits[other, head + 6, 0], logits[other, head + 18, 1] = 9.5, 9.5  # 13 tokens > max_answer_length
  nbest = eval_qa.predict_answers(table, logits, n_best=5, max_answer_length=10, null_threshold=0.0,
                                  unanswerable=False)
  assert nbest['long'][0]['text'] == 'Zanzibar' and nbest['long'][0]['score'] == pytest.approx(8.0)
  second_text = record['context'][table.offsets[other][head + 3][0]:table.offsets[other][head + 5][1]]
  assert second_text in [a['text'] for a in nbest['long']][1:]
  assert eval_qa.best_answers(nbest) == {'long': 'Zanzibar'}


@pytest.mark.parametrize('threshold, expected', [(0.0, 'Zanzibar'), (1.5, 'Zanzibar'), (2.5, '')])
def test_the_null_answer_wins_unless_a_span_beats_it_by_the_threshold(wordpiece, specials, threshold, expected):
  record = _long_record()
  table = qa.build_features([record], wordpiece, specials, seq_len=40, doc_stride=12, max_query_len=8)
  f = next(i for i in range(len(table)) if table.start_positions[i])
  logits = _logits(table, {f: [(int(table.start_positions[f]), int(table.end_positions[f]), 8.0)]})
  logits[:, 0, :] = 3.0  # [CLS]: a null score of 6 in every window
  nbest = eval_qa.predict_answers(table, logits, n_best=20, max_answer_length=30, null_threshold=threshold,
                                  unanswerable=True)
  assert nbest['long'][0]['text'] == expected
  assert '' in [a['text'] for a in nbest['long']]  # the null answer is ranked either way
  v1 = eval_qa.predict_answers(table, logits, n_best=20, max_answer_length=30, null_threshold=threshold,
                               unanswerable=False)
  assert v1['long'][0]['text'] == 'Zanzibar'  # v1.1: always a span


# ----------------------------------------------------------------------------------------------------------
# EM / F1 and the baseline


@pytest.mark.parametrize('prediction, gold, em, f1', [
    ('the Cat', 'cat', 1.0, 1.0),  # case and articles
    ('Cat!', 'a cat.', 1.0, 1.0),  # punctuation
    ('the cat sat', 'a cat sat on the mat', 0.0, 2 * 1.0 * 0.5 / 1.5),  # precision 2/2, recall 2/4
    ('cat cat dog', 'cat', 0.0, 2 * (1 / 3) * 1.0 / (1 / 3 + 1.0)),  # counted once: precision 1/3, recall 1
    ('dog', 'cat', 0.0, 0.0),
    ('', '', 1.0, 1.0),  # SQuAD v2: no answer, none predicted
    ('', 'cat', 0.0, 0.0),
])
def test_official_exact_match_and_f1(prediction, gold, em, f1):
  assert eval_qa.exact_match(prediction, gold) == em
  assert eval_qa.f1(prediction, gold) == pytest.approx(f1)


def test_squad_scores_take_the_best_gold_answer_in_percent():
  golds = {'a': ('Denver Broncos', 'the Broncos'), 'b': ('',), 'c': ('Paris',), 'd': ('seven',)}
  predictions = {'a': 'Broncos', 'b': '', 'c': 'in Paris France'}  # 'd' not predicted: 0
  scores = eval_qa.squad_scores(predictions, golds)
  assert scores[Metric.EXACT_MATCH] == pytest.approx(100 * 2 / 4)  # a ('the Broncos'), b
  assert scores[Metric.SQUAD_F1] == pytest.approx(100 * (1 + 1 + 0.5) / 4)  # c: precision 1/3, recall 1 -> 0.5


def test_overlap_baseline_finds_the_word_among_the_question_words():
  context = 'The treaty was signed in Vienna by the envoys. Later the harvest failed in Spain and prices rose.'
  question = 'The treaty was signed in _____ by the envoys of the king.'
  assert eval_qa.overlap_span(question, context) == 'Vienna'
  assert eval_qa.overlap_span('anything', '') == ''


# ----------------------------------------------------------------------------------------------------------
# Sources and tasks


def _squad_json(path: Path, qas: list[dict], context: str) -> Path:
  path.write_text(json.dumps({'version': '2.0', 'data': [{'title': 'T', 'paragraphs': [
      {'context': context, 'qas': qas}]}]}), encoding='utf-8')
  return path


CONTEXT = 'The mill by the river was built in 1820 by Anna Weber, a miller from Basel.'


@pytest.fixture()
def squad_dir(tmp_path: Path) -> Path:
  qas = [{'id': 'q1', 'question': 'Who built the mill?', 'answers': [
      {'text': 'Anna Weber', 'answer_start': CONTEXT.index('Anna')},
      {'text': 'Weber', 'answer_start': CONTEXT.index('Weber')}]},
         {'id': 'q2', 'question': 'When was the bridge built?', 'answers': [], 'is_impossible': True,
          'plausible_answers': [{'text': '1820', 'answer_start': CONTEXT.index('1820')}]}]
  _squad_json(tmp_path / 'train.json', qas, CONTEXT)
  _squad_json(tmp_path / 'validation.json', qas, CONTEXT)
  return tmp_path


def test_json_source_reads_squads_format_with_several_answers_and_impossible_questions(squad_dir):
  source = sources.open_source(f'json:{squad_dir}', 'validation')
  assert source.info.kind is sources.TaskKind.QA and source.info.unanswerable
  assert source.info.text_features == ('question', 'context')
  first, second = source[0], source[1]
  assert first['answers'] == {'text': ['Anna Weber', 'Weber'], 'answer_start': [43, 48]}
  assert second['answers'] == {'text': [], 'answer_start': []} and second['id'] == 'q2'


def test_tsv_source_with_squads_fields(tmp_path: Path):
  rows = ['id\tcontext\tquestion\tanswer_text\tanswer_start', f'q1\t{CONTEXT}\tWho built it?\tAnna Weber\t43',
          f'q2\t{CONTEXT}\tWhen was the bridge built?\t\t']
  (tmp_path / 'train.tsv').write_text('\n'.join(rows) + '\n', encoding='utf-8')
  source = sources.open_source(f'tsv:{tmp_path}', 'train')
  assert source.info.kind is sources.TaskKind.QA and source.info.unanswerable
  assert source[0]['answers'] == {'text': ['Anna Weber'], 'answer_start': [43]} and source[0]['id'] == 'q1'
  rows[1] = f'q1\t{CONTEXT}\tWho built it?\tAnna Weber\tforty'
  (tmp_path / 'train.tsv').write_text('\n'.join(rows) + '\n', encoding='utf-8')
  with pytest.raises(sources.DataError, match=r"train.tsv line 2, column 'answer_start': answer_start 'forty' with "
                                              r"answer_text 'Anna Weber': give the answer and its character offset"):
    sources.open_source(f'tsv:{tmp_path}', 'train')


def test_build_task_indexes_features_and_scoring_reads_only_logits(squad_dir, wordpiece, tmp_path):
  config = tasks.DataConfig(source=f'json:{squad_dir}', objective='extractive_qa', seq_len=32, doc_stride=8,
                            tokenizer='wordpiece')
  task = tasks.build_task(config, 'validation', seed=0, tokenizer=wordpiece)
  assert isinstance(task.source, qa.FeatureTable) and len(task.source) == 2 and task.token_types == 2
  example = task.transform(0, task.source[0])
  assert set(example) == {'input_ids', 'token_type_ids', 'attention_mask', 'start_positions', 'end_positions'}
  assert objectives.spec('extractive_qa').scoring is objectives.Scoring.SPANS
  eval_cfg = EvalConfig(objective=tasks.Objective.EXTRACTIVE_QA)
  assert eval_cfg.metrics == (Metric.EXACT_MATCH, Metric.SQUAD_F1) and eval_cfg.n_best == 20
  table = task.source
  logits = _logits(table, {0: [(int(table.start_positions[0]), int(table.end_positions[0]), 8.0)]})
  logits[1, 0, :] = 9.0  # q2: the null answer
  out = evaluate.score_spans(task, logits, eval_cfg, tmp_path / 'validation.tsv')
  assert out['exact_match'] == out['squad_f1'] == 100.0 and out['questions'] == 2
  assert out['overlap_exact_match'] == 0.0  # the baseline always answers: wrong on q2 (and on q1 here)
  assert json.loads((tmp_path / 'validation_predictions.json').read_text()) == {'q1': 'Anna Weber', 'q2': ''}
  assert json.loads((tmp_path / 'validation_nbest.json').read_text())['q1'][0]['text'] == 'Anna Weber'


def test_an_answer_not_at_its_start_is_an_error_naming_the_row(tmp_path, wordpiece):
  qas = [{'id': 'ok', 'question': 'Who?', 'answers': [{'text': 'Anna', 'answer_start': 43}]},
         {'id': 'bad', 'question': 'From where?', 'answers': [{'text': 'Basel', 'answer_start': 60}]}]
  _squad_json(tmp_path / 'train.json', qas, CONTEXT)
  config = tasks.DataConfig(source=f'json:{tmp_path}', objective='extractive_qa', seq_len=32, tokenizer='wordpiece')
  with pytest.raises(ValueError, match=r"data.source='json:.*' train row 1 \(id 'bad'\): answer 'Basel' is not at its "
                                       r"answer_start 60 in the context, which holds 'ler f' there \(it occurs at 69\)"):
    tasks.build_task(config, 'train', seed=0, tokenizer=wordpiece)


def test_a_context_longer_than_a_window_without_stride_is_an_error_naming_the_row(wordpiece, specials):
  records = [_record('short', 'who?', 'Anna built it.', [('Anna', 0)]), _long_record()]
  with pytest.raises(ValueError, match=r"data.source row 1 \(id 'long'\): its context has \d+ tokens, only 31 fit in "
                                       r'one window of data.seq_len=40 with its question, and data.doc_stride=0 '
                                       r'disables striding: set data.doc_stride > 0'):
    qa.build_features(records, wordpiece, specials, seq_len=40, doc_stride=0, max_query_len=8)
  with pytest.raises(ValueError, match=r'data.doc_stride=31: windows overlap by that many tokens, but only 31'):
    qa.build_features(records, wordpiece, specials, seq_len=40, doc_stride=31, max_query_len=8)


@pytest.mark.parametrize('name, unanswerable', [('squad/v1.1', False), ('squad/v2.0', True)])
def test_tfds_squad_with_mock_data(tmp_path, wordpiece, name, unanswerable):
  with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
    source = sources.open_source(f'tfds:{name}', 'validation', data_dir=tmp_path)
    assert source.info == sources.TaskInfo(f'tfds:{name}', ('question', 'context'), None, 0, answer_feature='answers',
                                           unanswerable=unanswerable)
    record = source[0]
    assert isinstance(record['context'], str) and isinstance(record['question'], str)
    # mock data's answers are random strings (as many as their random starts, or not): the row is named
    config = tasks.DataConfig(source=f'tfds:{name}', objective='extractive_qa', seq_len=64, tokenizer='wordpiece',
                              data_dir=str(tmp_path))
    with pytest.raises(ValueError, match=rf"data.source='tfds:{name}' validation row \d+ \(id '\w+'\): (\d+ answer texts but|answer '.*' "
                                         r'is not at its answer_start)'):
      tasks.build_task(config, 'validation', seed=0, tokenizer=wordpiece)


def test_a_qa_objective_on_a_classification_source_names_the_qa_sources(tmp_path):
  (tmp_path / 'train.tsv').write_text('text\tlabel\nfine\t1\nbad\t0\n', encoding='utf-8')
  config = tasks.DataConfig(source=f'tsv:{tmp_path}', objective='extractive_qa', seq_len=32, tokenizer='wordpiece')
  with pytest.raises(ValueError, match=r"does not fit .* a classification dataset; .*'tfds:squad/v1.1'"):
    tasks.build_task(config, 'train', seed=0)


# ----------------------------------------------------------------------------------------------------------
# The built-in cloze task


def test_cloze_question_blanks_a_word_found_once_in_the_passage():
  passage = 'The envoys of Mexico met the Senate. The Senate agreed.'
  assert cloze.make_question(passage, 'Our treaty with Mexico is signed today.') == (
      'Our treaty with _____ is signed today.', 'Mexico', passage.index('Mexico'))
  assert cloze.make_question(passage, 'The Senate met the Senate again today.') is None  # Senate: twice


@pytest.fixture(scope='module')
def cloze_dir(tmp_path_factory):
  raw = raw_packages.write_raw_cache(tmp_path_factory.mktemp('raw'))
  data_dir = tmp_path_factory.mktemp('tfds')
  manual = raw / 'npm' / '@stdlib__datasets-sotu-0.2.3' / 'package'
  prepare.build('sotu_cloze', data_dir, manual_dir=manual)
  return data_dir, manual


def test_builtin_cloze_splits_are_disjoint_stable_and_every_answer_is_at_its_start(cloze_dir):
  data_dir, manual = cloze_dir
  ids = {}
  for split in ('train', 'test'):
    source = sources.open_source('builtin:sotu_cloze', split, data_dir=data_dir)
    assert source.info.kind is sources.TaskKind.QA and not source.info.unanswerable
    ids[split] = set()
    for i in range(len(source)):
      record = source[i]
      (text,), (start,) = qa.answers_of(record).texts, qa.answers_of(record).starts
      assert record['context'][start:start + len(text)] == text and cloze.BLANK in record['question']
      assert text not in record['question'].split() and len(record['context'].split()) <= cloze.MAX_PASSAGE_WORDS
      stem = record['id'].split('/')[0]
      assert cloze.speech_split(manual / 'data' / f'{stem}.json') == split  # by speech, by hash: stable
      ids[split].add(record['id'])
  assert ids['train'] and ids['test'] and not ids['train'] & ids['test']
  # the test speeches are exactly sotu's validation speeches (never in a sotu pretraining split)
  assert {i.split('/')[0] for i in ids['test']} == {
      s for s in raw_packages.SPEECH_STEMS if sotu.speech_split(Path(f'{s}.json')) == common.VALIDATION}
