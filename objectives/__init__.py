"""One spec per objective: the model it trains, its loss, and how it is evaluated.

  spec = objectives.spec(config.data.objective)   # an Objective or its string
  spec.family, spec.head      the model the objective trains (the run checks model.family / model.head)
  spec.loss                   the loss of trainer/losses.py: weighted token cross-entropy, class or regression
  spec.scoring                how a split is scored (the loop's validation and eval.py)
  spec.generation             what eval.py generates: LM samples, or translations scored by BLEU / ROUGE
  spec.metrics, spec.allowed  eval.py's default metrics, and those that make sense at all
  spec.per_class              eval.py also scores each class and draws the confusion matrix (images)

What the data side needs of an objective (the kind of source it reads, how an example is built) lives with
the examples in data/tasks.py, which may import neither model/ nor this package. Adding an objective: its
member of `data.tasks.Objective`, its example builder and source kind there, its entry here, its tests.
"""

from __future__ import annotations

import dataclasses
import enum

from data.tasks import Objective, to_objective
from evaluation.metrics import Metric
from model.config import Family, Head


class LossKind(enum.Enum):
  TOKENS = 'tokens'  # cross-entropy of logits (B, T, V) against targets, weighted by loss_weights
  CLASSIFICATION = 'classification'  # cross-entropy of logits (B, C) against label; each example weighs 1
  REGRESSION = 'regression'  # squared error of logits[:, 0] against label; each example weighs 1
  # TOKENS on the MLM logits, plus the cross-entropy of 'sop_logits' (B, 2) against sentence_order_label (each
  # example weighs 1): the two means added (ALBERT's pretraining loss, HF AlbertForPreTraining's).
  PRETRAINING = 'pretraining'
  # Extractive QA (Head.SPAN): the cross-entropy over the positions of logits[..., 0] against start_positions
  # and of logits[..., 1] against end_positions, averaged (HF's *ForQuestionAnswering); each example weighs 1.
  SPAN = 'span'

  @property
  def tokens(self) -> bool:
    """Whether the loss holds a token cross-entropy over loss_weights (what exp(loss) and the LM head's options
    apply to)."""
    return self in (LossKind.TOKENS, LossKind.PRETRAINING)


class Scoring(enum.Enum):
  TOKENS = 'tokens'  # loss, perplexity and accuracy over the weighted target tokens (+ mlm_sop's sentence order)
  CLASSES = 'classes'  # the predicted class of each example against its label (a predictions TSV)
  VALUES = 'values'  # the predicted number of each example against its label (a predictions TSV)
  # extractive QA: every window's start / end logits gathered per question, the best span's text against the gold
  # answers (SQuAD's exact match and F1, evaluation/qa.py; <split>_predictions.json)
  SPANS = 'spans'


class Generation(enum.Enum):
  NONE = 'none'
  SAMPLES = 'samples'  # continuations of validation prompts (eval.num_samples), printed and saved
  TRANSLATION = 'translation'  # every source decoded (beam search), scored against the reference text


@dataclasses.dataclass(frozen=True, kw_only=True)
class ObjectiveSpec:
  family: Family
  head: Head
  loss: LossKind
  scoring: Scoring
  metrics: tuple[Metric, ...]  # eval.py's, when config.eval.metrics is empty
  allowed: frozenset[Metric]  # a CoLA config asking for BLEU is a mistake worth an error
  generation: Generation = Generation.NONE
  # eval.py adds each class's accuracy to the metrics and draws the confusion matrix (<split>_confusion.png).
  per_class: bool = False

  @property
  def perplexity(self) -> bool:
    """Whether the loss is (or holds) a per-token cross-entropy of a language model, so exp(that loss) means
    something (mlm_sop: of its MLM part)."""
    return self.loss.tokens


_TOKEN_METRICS = frozenset({Metric.PERPLEXITY, Metric.ACCURACY})
TEXT_METRICS = (Metric.BLEU, Metric.CHRF, Metric.ROUGE1, Metric.ROUGE2, Metric.ROUGEL)  # on generated text

SPECS: dict[Objective, ObjectiveSpec] = {
    Objective.CAUSAL_LM: ObjectiveSpec(
        family=Family.DECODER, head=Head.LM, loss=LossKind.TOKENS, scoring=Scoring.TOKENS,
        metrics=(Metric.PERPLEXITY, Metric.BITS_PER_BYTE), allowed=_TOKEN_METRICS | {Metric.BITS_PER_BYTE},
        generation=Generation.SAMPLES),
    Objective.MLM: ObjectiveSpec(
        family=Family.ENCODER, head=Head.LM, loss=LossKind.TOKENS, scoring=Scoring.TOKENS,
        metrics=(Metric.PERPLEXITY,), allowed=_TOKEN_METRICS),
    Objective.SPAN_CORRUPTION: ObjectiveSpec(
        family=Family.ENCODER_DECODER, head=Head.LM, loss=LossKind.TOKENS, scoring=Scoring.TOKENS,
        metrics=(Metric.PERPLEXITY,), allowed=_TOKEN_METRICS),
    Objective.CLASSIFICATION: ObjectiveSpec(
        family=Family.ENCODER, head=Head.CLASSIFIER, loss=LossKind.CLASSIFICATION, scoring=Scoring.CLASSES,
        metrics=(Metric.ACCURACY,), allowed=frozenset({Metric.ACCURACY, Metric.F1, Metric.MATTHEWS})),
    Objective.REGRESSION: ObjectiveSpec(
        family=Family.ENCODER, head=Head.CLASSIFIER, loss=LossKind.REGRESSION, scoring=Scoring.VALUES,
        metrics=(Metric.PEARSON, Metric.SPEARMAN), allowed=frozenset({Metric.PEARSON, Metric.SPEARMAN})),
    # The decoder's logits (B, T, V) against the target tokens + EOS; eval.py also decodes every source.
    Objective.SEQ2SEQ: ObjectiveSpec(
        family=Family.ENCODER_DECODER, head=Head.LM, loss=LossKind.TOKENS, scoring=Scoring.TOKENS,
        metrics=(Metric.PERPLEXITY, *TEXT_METRICS), allowed=_TOKEN_METRICS | set(TEXT_METRICS),
        generation=Generation.TRANSLATION),
    # ALBERT's pretraining: mlm's token scores of the pair, and how often the order of its segments is right.
    Objective.MLM_SOP: ObjectiveSpec(
        family=Family.ENCODER, head=Head.PRETRAINING, loss=LossKind.PRETRAINING, scoring=Scoring.TOKENS,
        metrics=(Metric.PERPLEXITY, Metric.ACCURACY, Metric.SOP_ACCURACY),
        allowed=_TOKEN_METRICS | {Metric.SOP_ACCURACY}),
    # ViT: the classifier on [CLS] (or the mean patch) against each image's class; F1 is binary, so not here.
    Objective.IMAGE_CLASSIFICATION: ObjectiveSpec(
        family=Family.ENCODER, head=Head.CLASSIFIER, loss=LossKind.CLASSIFICATION, scoring=Scoring.CLASSES,
        metrics=(Metric.ACCURACY,), allowed=frozenset({Metric.ACCURACY, Metric.MATTHEWS}), per_class=True),
    # SQuAD: the span head's start and end logits over every window of a question; the official EM and F1.
    Objective.EXTRACTIVE_QA: ObjectiveSpec(
        family=Family.ENCODER, head=Head.SPAN, loss=LossKind.SPAN, scoring=Scoring.SPANS,
        metrics=(Metric.EXACT_MATCH, Metric.SQUAD_F1), allowed=frozenset({Metric.EXACT_MATCH, Metric.SQUAD_F1})),
}


def spec(objective: Objective | str) -> ObjectiveSpec:
  """The spec of a `data.objective` (an Objective or its string; an unknown one names the valid ones)."""
  return SPECS[to_objective(objective)]


__all__ = ['Generation', 'LossKind', 'Objective', 'ObjectiveSpec', 'SPECS', 'Scoring', 'TEXT_METRICS', 'spec']
