"""Packing variable-length examples into fixed-length rows, with per-token segment ids and positions.

A packed row holds several examples one after another; `segment_ids` numbers them 1, 2, ... within the row
(0 = padding) and `position_ids` restart at 0 for each. The model (`model.masks`) lets a token attend only to
tokens of its own segment, and positions restart, so every example is computed as if it were alone.

Strategies (`Strategy`), with the share of padding slots measured on rows of 512 (lengths uniform on
1..512 / lognormal around 150 / uniform on 1..128; windows of 256 and 4096 examples):
  FIRST_FIT  each example, in order, goes into the first row with room for it, else opens a new row.
             Waste 8 / 2.6 / 2.1% with 256 examples a call, 3.2 / 1.1 / 0.4% with 4096.
  NEXT_FIT   only the last row is open: an example that does not fit closes it. Rows keep the example order
             (a streaming packer), but each closed row wastes its tail: 25 / 23 / 9%, whatever the window.
  NONE       one example per row: plain padding through the same code path (50 / 61 / 88%).
About 25 us per example on one CPU core for either packer.
Rows come out in the order they were opened. Each call packs the examples it is given completely (the last
rows may be less full), so a call is a pure function of its examples: the pipeline packs a window of
examples at a time (larger windows waste less) and resumes at window boundaries.

Examples longer than a row (`Overflow`): TRUNCATE keeps the first row_len tokens; SPLIT cuts the example into
pieces of row_len (the last one shorter), each packed as an example of its own (for language modelling a cut
loses the context across it).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

_IDS = np.int32

Example = Mapping[str, ArrayLike]


class Strategy(enum.Enum):
  FIRST_FIT = 'first_fit'  # the first row with room; little waste.
  NEXT_FIT = 'next_fit'  # only the last row is open; rows keep example order.
  NONE = 'none'  # one example per row (padding only).


class Overflow(enum.Enum):
  TRUNCATE = 'truncate'  # keep the first row_len tokens, drop the rest.
  SPLIT = 'split'  # cut into pieces of row_len, each packed as an example (single sequences only).


@dataclasses.dataclass(frozen=True)
class Packed:
  """rows: each feature (R, row_len), with 'segment_ids' and 'position_ids' (R, row_len) int32 (and for pairs
  'decoder_segment_ids', 'decoder_position_ids' (R, targets_len)). placement: (P, 3) int64, one line per packed
  piece: (index of its example in the input, row, segment id); an example split by SPLIT has several."""

  rows: dict[str, np.ndarray]
  placement: np.ndarray

  @property
  def num_rows(self) -> int:
    return len(next(iter(self.rows.values())))


def segment_positions(segment_ids: ArrayLike) -> np.ndarray:
  """Per-token positions that restart at 0 where the segment id changes, 0 at padding (segment 0).

  segment_ids: (..., L) with contiguous segments. Returns (..., L) int32."""
  segment_ids = np.asarray(segment_ids)
  index = np.broadcast_to(np.arange(segment_ids.shape[-1]), segment_ids.shape)
  starts = np.ones(segment_ids.shape, bool)
  starts[..., 1:] = segment_ids[..., 1:] != segment_ids[..., :-1]
  segment_start = np.maximum.accumulate(np.where(starts, index, 0), axis=-1)
  return np.where(segment_ids > 0, index - segment_start, 0).astype(_IDS)


def pack_sequences(examples: Sequence[Example], row_len: int, *, strategy: Strategy = Strategy.FIRST_FIT,
                   overflow: Overflow = Overflow.TRUNCATE,
                   pad_values: Mapping[str, int | float] | None = None) -> Packed:
  """Packs single-sequence examples (LM, MLM) into rows of row_len.

  examples: each a mapping of features of one common length n_i (e.g. {'input_ids'}, or MLM's {'input_ids',
  'targets', 'loss_weights'}); every example has the same features. pad_values: per feature (default 0).
  Returns `Packed` with each feature (R, row_len) in the dtype of the first example, plus segment_ids and
  position_ids.
  """
  _check_row_len('row_len', row_len)
  sides = [[_features(ex, i, 'examples') for i, ex in enumerate(examples)]]
  _same_features(sides[0], 'examples')
  return _pack(sides, [row_len], [('segment_ids', 'position_ids')], strategy, overflow, pad_values)


def pack_pairs(examples: Sequence[tuple[Example, Example]], inputs_len: int, targets_len: int, *,
               strategy: Strategy = Strategy.FIRST_FIT, overflow: Overflow = Overflow.TRUNCATE,
               pad_values: Mapping[str, int | float] | None = None) -> Packed:
  """Packs (encoder features, decoder features) examples (T5) into encoder rows of inputs_len and decoder rows
  of targets_len together: an example goes into a row only where both sides fit, and gets the same segment
  id on both, so encoder segment k and decoder segment k are the same example.

  examples: (e.g. ({'input_ids': inputs}, {'targets': targets}) from `objectives.span_corruption`); feature
  names must differ between the sides. Overflow.TRUNCATE cuts each side to its row; SPLIT is undefined for
  pairs. Returns `Packed` with encoder features + segment_ids / position_ids (R, inputs_len) and decoder
  features + decoder_segment_ids / decoder_position_ids (R, targets_len). For training T5 add
  decoder_input_ids = objectives.decoder_inputs(targets, decoder_segment_ids) and loss_weights =
  decoder_segment_ids > 0.
  """
  _check_row_len('inputs_len', inputs_len)
  _check_row_len('targets_len', targets_len)
  if overflow is Overflow.SPLIT:
    raise ValueError('pack_pairs: overflow=Overflow.SPLIT would separate targets from their inputs; use '
                     'Overflow.TRUNCATE (or size examples with objectives.random_spans_helper)')
  encoder = [_features(ex[0], i, 'examples[i][0]') for i, ex in enumerate(examples)]
  decoder = [_features(ex[1], i, 'examples[i][1]') for i, ex in enumerate(examples)]
  _same_features(encoder, 'examples[i][0]')
  _same_features(decoder, 'examples[i][1]')
  if encoder and decoder and set(encoder[0]) & set(decoder[0]):
    raise ValueError(f'pack_pairs: features {sorted(set(encoder[0]) & set(decoder[0]))} appear on both sides; '
                     'rename one side (e.g. input_ids / targets)')
  return _pack([encoder, decoder], [inputs_len, targets_len],
               [('segment_ids', 'position_ids'), ('decoder_segment_ids', 'decoder_position_ids')], strategy,
               overflow, pad_values)


def _check_row_len(name: str, value: int) -> None:
  if value < 1:
    raise ValueError(f'{name}={value}: rows need at least one token')


def _features(example: Example, index: int, where: str) -> dict[str, np.ndarray]:
  """The example's features as 1-D arrays of one length, or an error naming the example."""
  features = {k: np.asarray(v) for k, v in example.items()}
  if not features:
    raise ValueError(f'{where}: example {index} has no features')
  lengths = {k: v.shape for k, v in features.items()}
  if any(v.ndim != 1 for v in features.values()) or len({s[0] for s in lengths.values()}) != 1:
    raise ValueError(f'{where}: example {index} needs 1-D features of one length, got shapes {lengths}')
  return features


def _same_features(examples: list[dict[str, np.ndarray]], where: str) -> None:
  for i, ex in enumerate(examples):
    if set(ex) != set(examples[0]):
      raise ValueError(f'{where}: example {i} has features {sorted(ex)} but example 0 has {sorted(examples[0])}; '
                       'every example needs the same features')


def _pieces(sides: list[list[dict[str, np.ndarray]]], capacity: list[int],
            overflow: Overflow) -> tuple[list[int], list[list[dict[str, np.ndarray]]]]:
  """Applies the overflow policy: (example index of each piece, the pieces' features per side)."""
  owners: list[int] = []
  pieces: list[list[dict[str, np.ndarray]]] = [[] for _ in sides]
  for i, parts in enumerate(zip(*sides)):
    lengths = [len(next(iter(p.values()))) for p in parts]
    if not any(lengths):
      continue  # nothing to place
    if overflow is Overflow.SPLIT and len(sides) == 1 and lengths[0] > capacity[0]:
      starts = range(0, lengths[0], capacity[0])
      owners += [i] * len(starts)
      pieces[0] += [{k: v[s:s + capacity[0]] for k, v in parts[0].items()} for s in starts]
      continue
    owners.append(i)
    for side, (part, cap) in enumerate(zip(parts, capacity)):
      pieces[side].append({k: v[:cap] for k, v in part.items()})
  return owners, pieces


def _assign(lengths: np.ndarray, capacity: np.ndarray, strategy: Strategy) -> tuple[np.ndarray, np.ndarray,
                                                                                     np.ndarray, int]:
  """Rows for pieces of lengths (P, K) (K sides, each with its capacity (K,)): returns row (P,), offset (P, K),
  segment id (P,: 1, 2, ... in each row, in placement order) and the number of rows."""
  num = len(lengths)
  room = np.empty((num, len(capacity)), np.int64)  # free slots of each open row, per side
  count = np.zeros(num, np.int64)  # segments in each row
  rows = np.empty(num, np.int64)
  segments = np.empty(num, np.int64)
  offsets = np.empty((num, len(capacity)), np.int64)
  num_rows = 0
  for i, length in enumerate(lengths):
    match strategy:
      case Strategy.FIRST_FIT:
        fits = np.flatnonzero((room[:num_rows] >= length).all(axis=1))
        row = fits[0] if len(fits) else num_rows
      case Strategy.NEXT_FIT:
        row = num_rows - 1 if num_rows and (room[num_rows - 1] >= length).all() else num_rows
      case Strategy.NONE:
        row = num_rows
    if row == num_rows:
      room[row] = capacity
      num_rows += 1
    offsets[i] = capacity - room[row]
    room[row] -= length
    count[row] += 1
    rows[i], segments[i] = row, count[row]
  return rows, offsets, segments, num_rows


def _pack(sides: list[list[dict[str, np.ndarray]]], capacity: list[int], id_names: list[tuple[str, str]],
          strategy: Strategy, overflow: Overflow, pad_values: Mapping[str, int | float] | None) -> Packed:
  if not isinstance(strategy, Strategy) or not isinstance(overflow, Overflow):
    raise TypeError(f'strategy={strategy!r}, overflow={overflow!r}: pass packing.Strategy / packing.Overflow '
                    "members (e.g. Strategy('first_fit') from a config string)")
  pad_values = dict(pad_values or {})
  owners, pieces = _pieces(sides, capacity, overflow)
  lengths = np.asarray([[len(next(iter(p.values()))) for p in parts] for parts in zip(*pieces)],
                       np.int64).reshape(len(owners), len(sides))
  rows, offsets, segments, num_rows = _assign(lengths, np.asarray(capacity, np.int64), strategy)
  out: dict[str, np.ndarray] = {}
  for side, (side_pieces, cap, (seg_name, pos_name)) in enumerate(zip(pieces, capacity, id_names)):
    template = sides[side][0] if sides[side] else {}
    for name, value in template.items():
      out[name] = np.full((num_rows, cap), pad_values.get(name, 0), value.dtype)
    out[seg_name] = np.zeros((num_rows, cap), _IDS)
    out[pos_name] = np.zeros((num_rows, cap), _IDS)
    for piece, row, start, length, segment in zip(side_pieces, rows, offsets[:, side], lengths[:, side],
                                                  segments):
      span = slice(start, start + length)
      for name, value in piece.items():
        out[name][row, span] = value
      out[seg_name][row, span] = segment
      out[pos_name][row, span] = np.arange(length)
  placement = np.stack([np.asarray(owners, np.int64), rows, segments], axis=1).reshape(-1, 3)
  return Packed(rows=out, placement=placement)
