"""Extractive QA features, as HF's run_qa.py builds them for SQuAD: every window of every example, built at once.

  table = build_features(source, tokenizer, specials, seq_len=256, doc_stride=128, max_query_len=64)
  table[i]                      feature i: input_ids, token_type_ids, attention_mask, start/end_positions
  table.example_index[i]        the example (row of `source`) it was cut from
  table.offsets[i]              (seq_len, 2) character spans in that example's context; (-1, -1) outside it

A feature is [CLS] question [SEP] context-window [SEP] (RoBERTa's layout: <s> q </s></s> w </s>), the question cut
to max_query_len tokens, the window to what is left of seq_len. A context longer than one window is cut into
several that overlap by doc_stride tokens (HF's `stride`; 0: no striding, and a context that does not fit is an
error naming its row), so every part of it is in some window. The answer's token positions come from the
context's character offsets (the tokenizer's `encode_with_offsets`): start_positions / end_positions are the first
and last (inclusive) tokens of the first answer, or both 0 ([CLS]) when the window does not hold the whole answer
or the question has none (SQuAD v2). Training uses every window, as HF does: the pipeline indexes features, not
examples (data/tasks.py), and an epoch is one pass over the features.

The table is small (int32 ids and offsets: ~100 MB for SQuAD v1.1's 88k training questions at seq_len 256) and
is built eagerly, so the transform only reads rows. Length bucketing applies: the answer positions are real
tokens, which trimming the padding keeps. evaluation/qa.py turns the per-feature logits back into answers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from data import examples
from data.tokenization import Tokenizer

_NONE = -1  # the offset of a token outside the context (question, specials, padding)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Answers:
  """The gold answers of one question: texts and their character starts in the context (empty: no answer)."""
  texts: tuple[str, ...]
  starts: tuple[int, ...]


def answers_of(example: Mapping[str, Any]) -> Answers:
  """The answers of a QA record (data/sources.py's normalised 'answers' feature; TFDS gives the texts nested in it
  as bytes)."""
  answers = example['answers']
  texts = tuple(t.decode('utf-8') if isinstance(t, bytes) else str(t) for t in answers['text'])
  return Answers(texts=texts, starts=tuple(int(s) for s in answers['answer_start']))


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeatureTable:
  """Every feature of a split (see the module docstring); `len()` and `[i]` make it the pipeline's rows."""
  input_ids: np.ndarray  # (N, T) int32, padded with pad
  lengths: np.ndarray  # (N,) real tokens
  context_start: np.ndarray  # (N,) the first context token (token type 1 from there in BERT's layout)
  start_positions: np.ndarray  # (N,) int32
  end_positions: np.ndarray  # (N,) int32
  example_index: np.ndarray  # (N,) the row of the source each feature comes from
  offsets: np.ndarray  # (N, T, 2) int32 character spans in the context; -1 outside it
  second_type: int  # the token type of the context: 1 (BERT), 0 (RoBERTa)
  examples: Sequence[Mapping[str, Any]]  # the QA records (the source), for evaluation's texts and answers

  def __len__(self) -> int:
    return len(self.input_ids)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    """Feature `index`'s batch features (data/batch.py)."""
    ids = self.input_ids[index]
    positions = np.arange(ids.shape[0])
    types = (positions >= self.context_start[index]) & (positions < self.lengths[index])
    return {'input_ids': ids, 'token_type_ids': (types * self.second_type).astype(np.int32),
            'attention_mask': (positions < self.lengths[index]).astype(np.int32),
            'start_positions': self.start_positions[index], 'end_positions': self.end_positions[index]}


def build_features(source: Sequence[Mapping[str, Any]], tokenizer: Tokenizer, specials: examples.SpecialIds, *,
                   seq_len: int, doc_stride: int, max_query_len: int, where: str = 'data.source') -> FeatureTable:
  """The features of every example of `source` (QA records); `where` names the source and split in errors."""
  cls_id, sep_id = specials.require('cls', 'QA inputs'), specials.require('sep', 'QA inputs')
  pad_id = specials.require('pad', 'padding')
  separators = specials.pair_layout.separators
  rows: list[tuple[list[int], int, int, int, int, list[tuple[int, int]]]] = []
  for index in range(len(source)):
    example = source[index]
    question = tokenizer.encode(example['question'])[:max_query_len]
    context = example['context']
    ids, offsets = tokenizer.encode_with_offsets(context)
    answers = answers_of(example)
    _check_answers(answers, context, index, example, where)
    head = [cls_id, *question, *[sep_id] * separators]
    room = seq_len - len(head) - 1  # the window's tokens: the rest but the closing [SEP]
    if room < 1:
      raise ValueError(f'{where} row {index} (id {example.get("id", index)!r}): [CLS] question [SEP] [SEP] fill '
                       f'data.seq_len={seq_len}; raise data.seq_len or lower the question length')
    if doc_stride >= room and len(ids) > room:
      raise ValueError(f'data.doc_stride={doc_stride}: windows overlap by that many tokens, but only {room} context '
                       f'tokens fit beside the question of {where} row {index} (data.seq_len={seq_len}); lower '
                       'data.doc_stride (e.g. a quarter of data.seq_len)')
    if doc_stride == 0 and len(ids) > room:
      raise ValueError(f'{where} row {index} (id {example.get("id", index)!r}): its context has {len(ids)} tokens, '
                       f'only {room} fit in one window of data.seq_len={seq_len} with its question, and '
                       'data.doc_stride=0 disables striding: set data.doc_stride > 0 (e.g. 128) or raise data.seq_len')
    span = _answer_span(answers, offsets)
    for begin in _window_starts(len(ids), room, doc_stride):
      end = min(begin + room, len(ids))
      start_pos = end_pos = 0
      if span is not None and begin <= span[0] and span[1] < end:
        start_pos, end_pos = len(head) + span[0] - begin, len(head) + span[1] - begin
      rows.append((head + ids[begin:end] + [sep_id], len(head), start_pos, end_pos, index,
                   [(_NONE, _NONE)] * len(head) + offsets[begin:end]))
  n = len(rows)
  table = FeatureTable(
      input_ids=np.full((n, seq_len), pad_id, np.int32), lengths=np.zeros(n, np.int32),
      context_start=np.zeros(n, np.int32), start_positions=np.zeros(n, np.int32), end_positions=np.zeros(n, np.int32),
      example_index=np.zeros(n, np.int32), offsets=np.full((n, seq_len, 2), _NONE, np.int32),
      second_type=1 if specials.pair_layout.token_types == 2 else 0, examples=source)
  for i, (ids, context_start, start_pos, end_pos, index, spans) in enumerate(rows):
    table.input_ids[i, :len(ids)] = ids
    table.offsets[i, :len(spans)] = spans
    table.lengths[i], table.context_start[i], table.example_index[i] = len(ids), context_start, index
    table.start_positions[i], table.end_positions[i] = start_pos, end_pos
  return table


def _check_answers(answers: Answers, context: str, index: int, example: Mapping[str, Any], where: str) -> None:
  """Every answer text stands at its answer_start in the context; else an error naming the row."""
  if len(answers.texts) != len(answers.starts):
    raise ValueError(f'{where} row {index} (id {example.get("id", index)!r}): {len(answers.texts)} answer texts but '
                     f'{len(answers.starts)} answer_start values: give one start per answer')
  for text, start in zip(answers.texts, answers.starts):
    if context[start:start + len(text)] != text:
      found = context[start:start + len(text)]
      hint = f' (it occurs at {context.find(text)})' if text in context else ' (nowhere in the context)'
      raise ValueError(f'{where} row {index} (id {example.get("id", index)!r}): answer {text!r} is not at its '
                       f'answer_start {start} in the context, which holds {found!r} there{hint}: fix the answer_start '
                       'or the text')


def _answer_span(answers: Answers, offsets: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
  """(first, last) context tokens of the first answer (HF's: the tokens whose spans meet its characters), or
  None without an answer."""
  if not answers.texts:
    return None
  start_char = answers.starts[0]
  end_char = start_char + len(answers.texts[0])
  inside = [k for k, (s, e) in enumerate(offsets) if s < end_char and e > start_char and e > s]
  if not inside:  # an answer of whitespace alone: the token that starts there
    inside = [k for k, (s, _) in enumerate(offsets) if s >= start_char][:1] or [max(len(offsets) - 1, 0)]
  return inside[0], inside[-1]


def _window_starts(count: int, room: int, stride: int) -> list[int]:
  """The first context token of each window: one every room - stride tokens until one reaches the end."""
  starts = [0]
  while starts[-1] + room < count:
    starts.append(starts[-1] + room - stride)
  return starts


def example_features(example_index: np.ndarray, num_examples: int) -> list[np.ndarray]:
  """Per example, the indices of its features in order, from each feature's example (evaluation gathers every
  window of an example); an example none of whose features is given gets an empty array."""
  order = np.argsort(example_index, kind='stable')
  bounds = np.searchsorted(example_index[order], np.arange(num_examples + 1))
  return [order[bounds[k]:bounds[k + 1]] for k in range(num_examples)]
