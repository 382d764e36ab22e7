"""`config.eval`, typed: which splits eval.py scores, with which metrics, and what it writes.

  eval.splits          splits scored (metrics JSON, a predictions TSV each); ('validation',) by default,
                       ('validation_matched', 'validation_mismatched') for MNLI
  eval.metrics         metric names (evaluation.Metric); empty: the objective's usual ones
  eval.predict_splits  splits whose predictions go to GLUE submission files (labels unknown: no metrics)
  eval.submission      the GLUE task key of each predict split ('sst2', 'mnli_matched', ...): the file name
  eval.batch_size      global batch; 0: train.batch_size
  eval.max_examples    score only the first N examples of each split (0: all); for quick checks
  eval.num_samples     language models: generated continuations printed; seq2seq: samples printed
  eval.prompt_len      language models: tokens of each sample's prompt (the start of a validation row)
  eval.generate        every decoding.GenerateConfig field (eval.generate.strategy, num_beams, max_new_tokens, ...),
                       unset unless a config or the command line sets it: an unset field takes the task's default
                       (evaluation/generation.py: seq2seq beam search, language models top-k sampling, the
                       tokenizer's ids), else GenerateConfig's. Unset is None, and -1 for eos_id, whose None is a
                       value (no EOS: always max_new_tokens)
  eval.baselines       image classification: scikit-learn models fitted on the training images and scored on
                       each split beside the model (evaluation/images.py: logistic_regression, rbf_svm)
  eval.n_best, eval.max_answer_length, eval.null_threshold
                       extractive QA's post-processing (evaluation/qa.py): start and end candidates per window,
                       the longest answer in tokens, and how far a span must beat the null answer (SQuAD v2)
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from collections.abc import Mapping
from typing import Any

import ml_collections
from ml_collections.config_dict import FieldReference, placeholder

import objectives
from core.config import known_fields, parse_enum
from data.tasks import Objective, to_objective
from decoding.config import GenerateConfig
from evaluation.images import Baseline
from evaluation.metrics import Metric
from evaluation.submission import submission_spec


UNSET_EOS_ID = -1  # eval.generate.eos_id left to the tokenizer (None there means: no EOS)


def unset_generate() -> ml_collections.ConfigDict:
  """eval.generate's default: every GenerateConfig field unset, typed for the command line (the strategy as its
  string; eos_id any literal, so that --config.eval.generate.eos_id=None reaches it)."""
  hints = typing.get_type_hints(GenerateConfig)
  fields: dict[str, Any] = {}
  for field in dataclasses.fields(GenerateConfig):
    hint = hints[field.name]
    if field.name == 'eos_id':
      fields[field.name] = FieldReference(UNSET_EOS_ID, field_type=object)
    else:
      fields[field.name] = placeholder(str if issubclass(hint, enum.Enum) else hint)
  return ml_collections.ConfigDict(fields)


def _is_set(name: str, value: Any) -> bool:
  return value != UNSET_EOS_ID if name == 'eos_id' else value is not None


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalConfig:
  """`config.eval`, validated against the objective (so a wrong metric fails before anything compiles)."""

  objective: Objective
  splits: tuple[str, ...] = ('validation',)
  metrics: tuple[Metric, ...] = ()
  predict_splits: tuple[str, ...] = ()
  submission: tuple[str, ...] = ()
  batch_size: int = 0
  max_examples: int = 0
  num_samples: int = 3
  prompt_len: int = 16
  generate: Mapping[str, Any] = dataclasses.field(default_factory=unset_generate)  # the set fields, once built
  baselines: tuple[Baseline, ...] = ()
  n_best: int = 20  # HF run_qa's n_best_size
  max_answer_length: int = 30  # tokens, HF run_qa's
  null_threshold: float = 0.0

  def __post_init__(self) -> None:
    for name in ('splits', 'predict_splits', 'submission'):
      value = getattr(self, name)
      object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
    spec = objectives.spec(self.objective)
    metrics = tuple(self._metric(m) for m in self.metrics) or spec.metrics
    object.__setattr__(self, 'metrics', metrics)
    bad = [m.value for m in metrics if m not in spec.allowed]
    if bad:
      raise ValueError(f'eval.metrics: {bad} do not apply to data.objective={self.objective.value}; use some of '
                       f'{sorted(m.value for m in spec.allowed)}')
    if len(self.submission) != len(self.predict_splits):
      raise ValueError(f'eval.submission={list(self.submission)} must name one GLUE task per eval.predict_splits '
                       f'entry ({list(self.predict_splits)})')
    for key in self.submission:
      submission_spec(key)  # an unknown task key is an error naming the valid ones
    generate = known_fields(GenerateConfig, self.generate, section='eval.generate', error=ValueError)
    object.__setattr__(self, 'generate', {k: v for k, v in generate.items() if _is_set(k, v)})
    if self.prompt_len < 1:
      raise ValueError(f'eval.prompt_len={self.prompt_len}: must be >= 1')
    for name in ('batch_size', 'max_examples', 'num_samples'):
      if getattr(self, name) < 0:
        raise ValueError(f'eval.{name}={getattr(self, name)}: must be >= 0 (0 = {_ZERO[name]})')
    object.__setattr__(self, 'baselines', tuple(parse_enum(Baseline, b, field='eval.baselines', what='baseline',
                                                           error=ValueError) for b in self.baselines))
    if self.baselines and self.objective is not Objective.IMAGE_CLASSIFICATION:
      raise ValueError(f'eval.baselines={[b.value for b in self.baselines]}: scikit-learn models of the pixels, for '
                       f'data.objective=image_classification only, not {self.objective.value}; set eval.baselines=()')
    for name in ('n_best', 'max_answer_length'):
      if getattr(self, name) < 1:
        raise ValueError(f'eval.{name}={getattr(self, name)}: must be >= 1')
    if not self.splits and not self.predict_splits:
      raise ValueError('eval.splits and eval.predict_splits are both empty: name at least one split')

  @staticmethod
  def _metric(value: Metric | str) -> Metric:
    try:
      return Metric(value)
    except ValueError:
      raise ValueError(f'eval.metrics: unknown metric {value!r}; valid: {[m.value for m in Metric]}') from None

  @classmethod
  def from_config(cls, config: Any) -> EvalConfig:
    """From the config tree: `config.eval` (optional: every field has a default) and data.objective."""
    section = config.get('eval') or {}
    values = section.to_dict() if hasattr(section, 'to_dict') else section
    values = known_fields(cls, values, section='eval', error=ValueError, exclude=('objective',))
    return cls(objective=to_objective(config.data.objective), **values)


_ZERO = {'batch_size': 'train.batch_size', 'max_examples': 'every example', 'num_samples': 'none'}
