"""Generation metrics on decoded strings: corpus BLEU and chrF (sacrebleu) and ROUGE-1/2/L (rouge-score).

All are the reference packages, not re-implementations: BLEU scores are only comparable across papers
when computed by sacrebleu with its default 13a tokenisation, chrF by sacrebleu's chrF2 (character n-grams
1-6, beta 2, no word n-grams, whitespace ignored), and ROUGE by Google's rouge-score with the
Porter stemmer (the T5 / PEGASUS setting). They are imported inside the functions, so `import evaluation`
stays cheap (sacrebleu and nltk take most of a second to import).

rouge-score's tokenizer stems with nltk's PorterStemmer, which is pure code: no nltk data download is
needed for rouge1/rouge2/rougeL (only rougeLsum with split_summaries would need the punkt data).
"""

from __future__ import annotations

from collections.abc import Sequence

from evaluation.metrics import Metric

__all__ = ['bleu', 'chrf', 'rouge']

_ROUGE_TYPES = (Metric.ROUGE1, Metric.ROUGE2, Metric.ROUGEL)


def _check_texts(predictions: Sequence[str], references: Sequence[object], name: str) -> None:
  if isinstance(predictions, str) or isinstance(references, str):
    raise ValueError(f'{name}: predictions and references must be sequences of strings, one per example, '
                     'not a single string')
  if len(predictions) == 0:
    raise ValueError(f'{name}: no examples to score (empty predictions)')
  if len(predictions) != len(references):
    raise ValueError(f'{name}: {len(predictions)} predictions but {len(references)} references; '
                     'give one reference (or one list of references) per prediction')
  if not all(isinstance(p, str) for p in predictions):
    raise ValueError(f'{name}: every prediction must be a str (decode the token ids first)')


def _streams(references: Sequence[str] | Sequence[Sequence[str]], name: str) -> list[list[str]]:
  """sacrebleu's reference streams: stream j holds the j-th reference of every example."""
  if all(isinstance(r, str) for r in references):
    return [list(references)]
  counts = {len(r) for r in references}
  if len(counts) != 1 or any(isinstance(r, str) for r in references):
    raise ValueError(f'{name}: references must all be strings, or all lists of the same length; got lists '
                     f'of lengths {sorted(counts)}')
  return [list(stream) for stream in zip(*references)]


def bleu(predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]) -> float:
  """Corpus BLEU, 0-100, by sacrebleu.corpus_bleu with its defaults (13a tokenisation, exp smoothing).

  Args:
    predictions: (N,) detokenized hypotheses.
    references: (N,) one reference each, or (N, R) R references each (the same R for every example).
  """
  _check_texts(predictions, references, 'bleu')
  import sacrebleu  # pylint: disable=import-outside-toplevel  # lazy: see the module docstring

  return float(sacrebleu.corpus_bleu(list(predictions), _streams(references, 'bleu')).score)


def chrf(predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]) -> float:
  """Corpus chrF2, 0-100, by sacrebleu.corpus_chrf with its defaults: character n-gram precision and recall
  for n = 1..6 (whitespace removed), each summed over the corpus, averaged over n, combined as F-beta, beta 2.

  Args: as `bleu`.
  """
  _check_texts(predictions, references, 'chrf')
  import sacrebleu  # pylint: disable=import-outside-toplevel  # lazy: see the module docstring

  return float(sacrebleu.corpus_chrf(list(predictions), _streams(references, 'chrf')).score)


def rouge(predictions: Sequence[str], references: Sequence[str],
          rouge_types: Sequence[Metric | str] = _ROUGE_TYPES) -> dict[str, float]:
  """Mean ROUGE F-measure over examples, 0-100, per type: {'rouge1': .., 'rouge2': .., 'rougeL': ..}.

  Args:
    predictions: (N,) generated texts.
    references: (N,) one target text each.
    rouge_types: a subset of Metric.ROUGE1, ROUGE2, ROUGEL.
  """
  _check_texts(predictions, references, 'rouge')
  if not all(isinstance(r, str) for r in references):
    raise ValueError('rouge: every reference must be a single str (rouge-score takes one target per example)')
  types = []
  for name in rouge_types:
    if name not in [t.value for t in _ROUGE_TYPES]:
      raise ValueError(f'rouge: unknown rouge type {name!r}; choose from {[t.value for t in _ROUGE_TYPES]}')
    types.append(Metric(name).value)
  from rouge_score import rouge_scorer  # pylint: disable=import-outside-toplevel  # lazy: module docstring

  scorer = rouge_scorer.RougeScorer(types, use_stemmer=True)
  totals = dict.fromkeys(types, 0.0)
  for prediction, reference in zip(predictions, references):
    scores = scorer.score(reference, prediction)  # (target, prediction): the target comes first
    for t in types:
      totals[t] += scores[t].fmeasure
  return {t: 100.0 * total / len(predictions) for t, total in totals.items()}
