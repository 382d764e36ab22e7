"""The batch schema: every feature an example may hold, declared once.

  name                    dtype    role     axis 1 is          what
  input_ids               int32    input    the encoder length  token ids (the decoder's, for a decoder-only model)
  attention_mask          int32    input    the encoder length  1 at real tokens
  token_type_ids          int32    input    the encoder length  segment A / B of a sentence pair (BERT)
  segment_ids             int32    input    the encoder length  packed rows: which document, 0 = padding
  position_ids            int32    input    the encoder length  packed rows: the position within the document
  decoder_input_ids       int32    input    the decoder length  teacher-forced decoder inputs (encoder-decoder)
  decoder_attention_mask  int32    input    the decoder length
  targets                 int32    target   the decoder length  ids to predict (where loss_weights > 0)
  loss_weights            float32  weight   the decoder length  1 where a position counts in the loss
  label                   int32 or float32  target  -           a sequence's class, or its value (regression)
  sentence_order_label    int32    target   -                   ALBERT's sentence order: 0 in order, 1 swapped
  pixel_values            float32  input    channels            an image (C, H, W), normalised (data/images.py)
  start_positions         int32    target   -                   extractive QA: the token where the answer starts
  end_positions           int32    target   -                   extractive QA: the token where it ends (inclusive)

The example builders (data/tasks.py) produce these and nothing else (`check_example`), length bucketing
trims the encoder-length ones (`ENCODER_LENGTH`), the losses read the targets and weights, and the model
is called with the inputs (`model_inputs`), whose names are `model.Transformer`'s arguments. A new feature
is one line here.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

import numpy as np


class Role(enum.Enum):
  INPUT = 'input'  # an argument of the model
  TARGET = 'target'  # what the loss compares the model's output with
  WEIGHT = 'weight'  # how much each target counts


@dataclasses.dataclass(frozen=True)
class Feature:
  dtypes: tuple[str, ...]  # the numpy dtypes it may have (label: int32 for classes, float32 for values)
  role: Role


FEATURES: Mapping[str, Feature] = {
    'input_ids': Feature(('int32',), Role.INPUT),
    'attention_mask': Feature(('int32',), Role.INPUT),
    'token_type_ids': Feature(('int32',), Role.INPUT),
    'segment_ids': Feature(('int32',), Role.INPUT),
    'position_ids': Feature(('int32',), Role.INPUT),
    'decoder_input_ids': Feature(('int32',), Role.INPUT),
    'decoder_attention_mask': Feature(('int32',), Role.INPUT),
    'targets': Feature(('int32',), Role.TARGET),
    'loss_weights': Feature(('float32',), Role.WEIGHT),
    'label': Feature(('int32', 'float32'), Role.TARGET),
    'sentence_order_label': Feature(('int32',), Role.TARGET),
    'pixel_values': Feature(('float32',), Role.INPUT),
    'start_positions': Feature(('int32',), Role.TARGET),
    'end_positions': Feature(('int32',), Role.TARGET),
}

# The label of an example that has none (a test split, a row without its label): it weighs 0 in every loss and
# metric (trainer/losses.py), a second line of defence behind the readers' checks.
UNLABELED = -1

# What length bucketing trims by default: the encoder-length features of classification and seq2seq examples
# (packed rows' segment and position ids never go through bucketing).
ENCODER_LENGTH: tuple[str, ...] = ('input_ids', 'attention_mask', 'token_type_ids')
INPUTS: tuple[str, ...] = tuple(name for name, f in FEATURES.items() if f.role is Role.INPUT)


def model_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
  """The features of `batch` that the model takes (as keyword arguments of model.Transformer)."""
  return {name: value for name, value in batch.items() if FEATURES[name].role is Role.INPUT}


def check_example(example: Mapping[str, Any], where: str) -> None:
  """An example holds only declared features, each in a declared dtype; else an error naming `where`."""
  for name, value in example.items():
    feature = FEATURES.get(name)
    if feature is None:
      raise ValueError(f'{where}: feature {name!r} is not in the batch schema (data/batch.py); known: '
                       f'{sorted(FEATURES)}')
    dtype = np.asarray(value).dtype.name
    if dtype not in feature.dtypes:
      raise ValueError(f'{where}: feature {name!r} is {dtype}, the batch schema says {" or ".join(feature.dtypes)}')
