"""Extractive QA evaluation: answers from the span head's logits, SQuAD's official scores, a word-overlap baseline.

  answers = predict_answers(table, logits, n_best=20, max_answer_length=30, null_threshold=0.0, unanswerable=False)
  scores = squad_scores({id: text}, {id: gold texts})   # {'exact_match': %, 'squad_f1': %}
  baseline = overlap_baseline(table.examples)            # {id: text}: the word-overlap span
  write_predictions(path, answers)                       # {id: text}, SQuAD's predictions JSON (+ the n-best)

Post-processing follows HF's run_qa (`postprocess_qa_predictions`): for each window of a question, the n_best
highest start and end logits are paired; a pair counts when both tokens are in the context (their offsets), end >=
start and it spans at most max_answer_length tokens; its score is start + end logit. The best pair over all the
windows of the question gives the answer, its text cut from the context by the tokens' character offsets.
SQuAD v2 (a source whose questions may have no answer, TaskInfo.unanswerable): the null score is [CLS]'s start +
end logit (the lowest over the windows, as HF); the answer is '' unless the best span's score beats it by more
than null_threshold (HF's null_score_diff_threshold with the sign turned: a positive threshold favours '').

The scores are those of the official SQuAD v2.0 script (which on answerable questions equals v1.1's): answers
normalised by lowercasing, removing punctuation, the articles a / an / the and extra whitespace; exact match and
token F1 against each gold answer, the best one counted; a question without gold answers is right only when the
prediction is '' too. Both in percent, as the leaderboards print them.

The baseline (printed beside the model by eval.py) is the sliding-window one of reading-comprehension papers
(Richardson et al. 2013, MCTest; Rajpurkar et al. 2016 report a similar one for SQuAD): each span of up to
BASELINE_MAX_WORDS words of the context that holds no question word is scored by how many distinct question words
stand within BASELINE_WINDOW words on either side of it; the best (then the shortest, then the first) is the answer.
It never answers '' (a v2 question without an answer is scored as missed).
"""

from __future__ import annotations

import collections
import json
import re
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data import qa
from evaluation.metrics import Metric

BASELINE_MAX_WORDS = 3
BASELINE_WINDOW = 10
_WORD = re.compile(r"\w+(?:['\u2019]\w+)*")
_ARTICLES = re.compile(r'\b(a|an|the)\b', re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
  """SQuAD's normalisation: lower case, no punctuation, no articles (a, an, the), single spaces."""
  text = ''.join(c for c in text.lower() if c not in _PUNCTUATION)
  return ' '.join(_ARTICLES.sub(' ', text).split())


def exact_match(prediction: str, gold: str) -> float:
  return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
  """SQuAD's token F1 of the normalised texts (1 when both are empty, 0 when one is)."""
  predicted, wanted = normalize_answer(prediction).split(), normalize_answer(gold).split()
  if not predicted or not wanted:
    return float(predicted == wanted)
  same = sum((collections.Counter(predicted) & collections.Counter(wanted)).values())
  if same == 0:
    return 0.0
  precision, recall = same / len(predicted), same / len(wanted)
  return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Mapping[str, str], golds: Mapping[str, Sequence[str]]) -> dict[str, float]:
  """{'exact_match', 'squad_f1'} in percent over the questions of `golds` ({id: gold answer texts}); each question
  counts its best gold answer, gold answers that normalise to '' are dropped (a question left with none has the
  one gold answer ''), and a question without a prediction scores 0."""
  if not golds:
    raise ValueError('squad_scores: no questions to score')
  em = f = 0.0
  for qid, texts in golds.items():
    texts = [t for t in texts if normalize_answer(t)] or ['']
    prediction = predictions.get(qid)
    if prediction is None:
      continue
    em += max(exact_match(prediction, t) for t in texts)
    f += max(f1(prediction, t) for t in texts)
  return {Metric.EXACT_MATCH.value: 100.0 * em / len(golds), Metric.SQUAD_F1.value: 100.0 * f / len(golds)}


def predict_answers(table: qa.FeatureTable, logits: np.ndarray, *, n_best: int, max_answer_length: int,
                    null_threshold: float, unanswerable: bool) -> dict[str, list[dict[str, Any]]]:
  """{question id: its n-best answers, best first} from the logits (F, T, 2) of the first F features of `table`.

  Each answer is {'text', 'score', 'start', 'end'} (characters in the context); with `unanswerable` a
  {'text': '', 'score': null score} entry is ranked with them and wins unless the best span beats it by more than
  null_threshold. Questions none of whose features is among the first F are left out; so is a question with a
  feature beyond F (partly scored: eval.max_examples)."""
  logits = np.asarray(logits, np.float32)
  seen = len(logits)
  out: dict[str, list[dict[str, Any]]] = {}
  for index, features in enumerate(qa.example_features(table.example_index, len(table.examples))):
    if not len(features) or features.max() >= seen:
      continue
    example = table.examples[index]
    context = example['context']
    candidates, null = [], np.inf
    for f in features:
      start, end, offsets = logits[f, :, 0], logits[f, :, 1], table.offsets[f]
      null = min(null, float(start[0] + end[0]))
      s, e = np.meshgrid(np.argsort(-start, kind='stable')[:n_best], np.argsort(-end, kind='stable')[:n_best],
                         indexing='ij')  # (n_best, n_best) pairs of the best starts and ends
      ok = (offsets[s, 0] >= 0) & (offsets[e, 0] >= 0) & (e >= s) & (e - s + 1 <= max_answer_length)
      for first, last in zip(s[ok], e[ok]):
        begin, stop = int(offsets[first, 0]), int(offsets[last, 1])
        candidates.append({'text': context[begin:stop], 'score': float(start[first] + end[last]), 'start': begin,
                           'end': stop})
    candidates.sort(key=lambda c: -c['score'])
    candidates = candidates[:n_best]
    if unanswerable:
      if not candidates or candidates[0]['score'] <= null + null_threshold:
        candidates.insert(0, {'text': '', 'score': null, 'start': -1, 'end': -1})
      else:
        candidates.append({'text': '', 'score': null, 'start': -1, 'end': -1})
    out[str(example['id'])] = candidates or [{'text': '', 'score': 0.0, 'start': -1, 'end': -1}]
  return out


def best_answers(nbest: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, str]:
  """{question id: the first answer's text}: SQuAD's predictions file."""
  return {qid: answers[0]['text'] for qid, answers in nbest.items()}


def golds_of(examples: Sequence[Mapping[str, Any]], ids: Sequence[str] | None = None) -> dict[str, tuple[str, ...]]:
  """{question id: its gold answer texts} of the examples (those of `ids`, if given)."""
  golds = {str(e['id']): qa.answers_of(e).texts for e in (examples[i] for i in range(len(examples)))}
  return golds if ids is None else {qid: golds[qid] for qid in ids}


def overlap_baseline(examples: Sequence[Mapping[str, Any]]) -> dict[str, str]:
  """{question id: the word-overlap span of its context} (see the module docstring)."""
  out = {}
  for i in range(len(examples)):
    example = examples[i]
    out[str(example['id'])] = overlap_span(example['question'], example['context'])
  return out


def overlap_span(question: str, context: str, max_words: int = BASELINE_MAX_WORDS,
                 window: int = BASELINE_WINDOW) -> str:
  """The span of up to max_words context words without a question word whose `window` words on either side hold
  the most distinct question words (ties: the shortest, then the first); '' for a context without words."""
  asked = {w.lower() for w in _WORD.findall(question)}
  words = list(_WORD.finditer(context))
  lowered = [w.group().lower() for w in words]
  best, best_key = '', None
  for first in range(len(words)):
    for last in range(first, min(first + max_words, len(words))):
      if lowered[last] in asked:
        break  # a span holding a question word repeats the question
      around = set(lowered[max(0, first - window):first]) | set(lowered[last + 1:last + 1 + window])
      key = (len(around & asked), -(last - first), -first)
      if best_key is None or key > best_key:
        best, best_key = context[words[first].start():words[last].end()], key
  return best


def write_predictions(path: Path, nbest: Mapping[str, Sequence[Mapping[str, Any]]]) -> tuple[Path, Path]:
  """SQuAD's predictions JSON {id: text} at `path`, and the n-best lists beside it (<stem>_nbest.json)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(best_answers(nbest), ensure_ascii=False, indent=1) + '\n', encoding='utf-8')
  nbest_path = path.with_name(path.name.replace('_predictions.json', '_nbest.json'))
  nbest_path.write_text(json.dumps(nbest, ensure_ascii=False, indent=1) + '\n', encoding='utf-8')
  return path, nbest_path
