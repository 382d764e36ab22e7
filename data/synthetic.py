"""Synthetic batches: random ids with exactly the features an objective's examples have (data/tasks.py), for
the step's benchmarks (bench/) and for planning a run's memory without its data (`train.py --dry_run`).

No padding: every position is a real token, so a benchmark's tokens/s count every token processed.
"""

from __future__ import annotations

import numpy as np

from data.examples import MlmConfig, decoder_inputs
from data.tasks import Objective, to_objective


def synthetic_batch(objective: Objective | str, batch: int, seq_len: int, decoder_len: int | None, vocab: int,
                    *, num_labels: int = 2, seed: int = 0,
                    image_shape: tuple[int, int, int] | None = None) -> dict[str, np.ndarray]:
  """(batch, seq_len) features and, for encoder-decoder objectives, (batch, decoder_len) ones; images:
  (batch, *image_shape) pixel_values, image_shape = (channels, height, width) (seq_len and vocab unused)."""
  objective = to_objective(objective)
  rng = np.random.default_rng(seed)
  ids = lambda *shape: rng.integers(0, vocab, shape).astype(np.int32)
  ones = lambda length, dtype=np.int32: np.ones((batch, length), dtype)
  if objective in (Objective.SPAN_CORRUPTION, Objective.SEQ2SEQ) and not decoder_len:
    raise ValueError(f'data.objective={objective.value}: give the decoder length (data.decoder_seq_len)')
  match objective:
    case Objective.CAUSAL_LM:
      tokens = ids(batch, seq_len + 1)  # one document per row: segment 1, positions from 0
      return {'input_ids': tokens[:, :-1], 'targets': tokens[:, 1:], 'loss_weights': ones(seq_len, np.float32),
              'segment_ids': ones(seq_len), 'position_ids': np.tile(np.arange(seq_len, dtype=np.int32), (batch, 1))}
    case Objective.MLM | Objective.MLM_SOP:  # BERT's 80/10/10 values at the targets would change no cost
      tokens = ids(batch, seq_len)
      # As many targets per row as examples.mask_tokens chooses in a full row, never [CLS] (0) or [SEP] (T-1).
      chosen = np.argsort(rng.random((batch, seq_len - 2)), axis=1)[:, :MlmConfig().max_targets(seq_len)] + 1
      weights = np.zeros((batch, seq_len), np.float32)
      np.put_along_axis(weights, chosen, 1.0, axis=1)
      out = {'input_ids': tokens, 'attention_mask': ones(seq_len), 'token_type_ids': 0 * ones(seq_len),
             'targets': tokens, 'loss_weights': weights}
      if objective is Objective.MLM_SOP:  # segment B: the second half; in order or swapped at random
        out['token_type_ids'][:, seq_len // 2:] = 1
        out['sentence_order_label'] = rng.integers(0, 2, batch).astype(np.int32)
      return out
    case Objective.SPAN_CORRUPTION | Objective.SEQ2SEQ:
      targets = ids(batch, decoder_len)
      return {'input_ids': ids(batch, seq_len), 'attention_mask': ones(seq_len),
              'decoder_input_ids': decoder_inputs(targets, start_id=0),  # T5: pad (0) starts
              'decoder_attention_mask': ones(decoder_len), 'targets': targets,
              'loss_weights': ones(decoder_len, np.float32)}
    case Objective.CLASSIFICATION | Objective.REGRESSION:
      label = (rng.integers(0, num_labels, batch).astype(np.int32) if objective is Objective.CLASSIFICATION
               else rng.normal(size=batch).astype(np.float32))
      return {'input_ids': ids(batch, seq_len), 'attention_mask': ones(seq_len), 'token_type_ids': 0 * ones(seq_len),
              'label': label}
    case Objective.IMAGE_CLASSIFICATION:
      if image_shape is None:
        raise ValueError('data.objective=image_classification: give the image shape (channels, height, width)')
      return {'pixel_values': rng.standard_normal((batch, *image_shape)).astype(np.float32),
              'label': rng.integers(0, num_labels, batch).astype(np.int32)}
  raise ValueError(f'no synthetic batch for data.objective={objective.value}')
