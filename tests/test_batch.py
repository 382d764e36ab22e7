"""data/batch.py: the batch schema is the model's signature, and examples outside it fail early."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import model
from data import batch


def test_model_inputs_are_the_models_arguments():
  arguments = inspect.signature(model.Transformer.__call__).parameters
  assert set(batch.INPUTS) <= set(arguments)
  assert set(batch.ENCODER_LENGTH) <= set(batch.INPUTS)
  example = {'input_ids': 1, 'attention_mask': 1, 'targets': 2, 'loss_weights': 3, 'label': 4}
  assert batch.model_inputs(example) == {'input_ids': 1, 'attention_mask': 1}


@pytest.mark.parametrize('example, message', [
    ({'input_ids': np.zeros(3, np.int32), 'bounding_boxes': np.zeros(3, np.float32)},
     r"where: feature 'bounding_boxes' is not in the batch schema \(data/batch.py\)"),
    ({'input_ids': np.zeros(3, np.int64)}, r"where: feature 'input_ids' is int64, the batch schema says int32"),
    ({'label': np.float64(1.0)}, r"feature 'label' is float64, the batch schema says int32 or float32"),
])
def test_an_example_outside_the_schema_is_an_error(example, message):
  with pytest.raises(ValueError, match=message):
    batch.check_example(example, 'where')
  batch.check_example({'input_ids': np.zeros(3, np.int32), 'label': np.float32(1.0)}, 'fine')
