"""Examples of each objective as pure numpy functions over token arrays: causal LM, BERT MLM, ALBERT's sentence
order, T5 span corruption, sequence-to-sequence pairs and classification / regression inputs.

They run in the input pipeline's worker processes, one example (or one batch) at a time. Nothing reads global
random state: randomness comes from an explicit `np.random.Generator`, and the objectives that RoBERTa and T5
re-draw every epoch take it from `example_rng(seed, epoch, index, stream)`, so that an example's corruption is
a pure function of those keys: a resumed run sees exactly the masks it would have seen, and a new epoch gets
new ones. Special token ids come in a `SpecialIds`, filled in by the tokenizer; this module never imports one.

Output keys (the names the model and the train step read):
  input_ids, token_type_ids, attention_mask, segment_ids, position_ids   model inputs, as in `model.Transformer`
  decoder_input_ids, decoder_attention_mask    encoder-decoder inputs (span corruption, seq2seq)
  targets        (..., T) ids to predict; where loss_weights is 0 they are any valid id, never a sentinel -100
  loss_weights   (..., T) float32, 1 where the position counts in the loss, else 0
  label          classification (int32) or regression (float32) target of a sequence
  sentence_order_label   ALBERT's sentence order (int32): 0 = the two segments in order, 1 = swapped
Span corruption returns variable-length `inputs` / `targets`; `packing.pack_pairs` turns them into rows and
`decoder_inputs` gives the decoder's teacher-forced inputs.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Iterable, Sequence

import numpy as np
from numpy.typing import ArrayLike

from data.packing import segment_positions

_IDS = np.int32


class PairLayout(enum.Enum):
  """How a vocabulary joins a text pair (the template of HF's post-processor), and the token types it gives."""
  BERT = 'bert'  # [CLS] A [SEP] B [SEP]: B and its [SEP] are token type 1.
  ROBERTA = 'roberta'  # <s> A </s></s> B </s>: one token type (HF's RobertaTokenizer gives zeros).

  @property
  def separators(self) -> int:
    """How many [SEP]s stand between the two texts."""
    return 2 if self is PairLayout.ROBERTA else 1

  @property
  def token_types(self) -> int:
    """How many token types a pair's examples use (a model needs that many rows in its token-type table)."""
    return 1 if self is PairLayout.ROBERTA else 2


@dataclasses.dataclass(frozen=True)
class SpecialIds:
  """The special token ids of a vocabulary; None where the vocabulary has no such token.

  vocab_size: how many ids the tokenizer produces (not the model's padded embedding size); MLM's random
  replacements are drawn uniformly from [0, vocab_size) minus every id named here.
  sentinels: T5's <extra_id_0>, <extra_id_1>, ...; span k is replaced by sentinels[k] (in T5 the highest id
  first: vocab_size - 1 - k).
  pair_layout: where cls and sep go in a text pair (the tokenizer's: RoBERTa's differs from BERT's).
  """

  vocab_size: int
  pad: int | None = None
  eos: int | None = None
  bos: int | None = None
  unk: int | None = None
  cls: int | None = None
  sep: int | None = None
  mask: int | None = None
  sentinels: tuple[int, ...] = ()
  pair_layout: PairLayout = PairLayout.BERT

  def __post_init__(self) -> None:
    if self.vocab_size < 1:
      raise ValueError(f'SpecialIds.vocab_size={self.vocab_size}: must be the tokenizer\'s number of ids (>= 1)')
    object.__setattr__(self, 'sentinels', tuple(int(s) for s in self.sentinels))
    for field in dataclasses.fields(self):
      values = getattr(self, field.name)
      if field.name in ('vocab_size', 'pair_layout') or values is None:
        continue
      for value in values if isinstance(values, tuple) else (values,):
        if not 0 <= value < self.vocab_size:
          raise ValueError(f'SpecialIds.{field.name}={values}: ids must lie in [0, vocab_size={self.vocab_size})')

  @functools.cached_property
  def special(self) -> np.ndarray:
    """(S,) sorted unique special ids (pad, eos, bos, unk, cls, sep, mask and the sentinels)."""
    ids = [self.pad, self.eos, self.bos, self.unk, self.cls, self.sep, self.mask, *self.sentinels]
    return np.unique(np.asarray([i for i in ids if i is not None], _IDS))

  @functools.cached_property
  def regular(self) -> np.ndarray:
    """(V - S,) the ids that are not special, ascending: where random replacement tokens come from."""
    return np.setdiff1d(np.arange(self.vocab_size, dtype=_IDS), self.special)

  def is_special(self, ids: ArrayLike) -> np.ndarray:
    """Bool array of ids' shape: True at special ids."""
    return np.isin(ids, self.special)

  def require(self, name: str, purpose: str) -> int:
    """The id called `name`, or an error that says who needs it."""
    value = getattr(self, name)
    if value is None:
      raise ValueError(f'SpecialIds.{name} is None but {purpose} needs it: set it from the tokenizer')
    return value


# --- randomness ------------------------------------------------------------------------------------------

class Stream(enum.IntEnum):
  """Which objective draws from an example's generator; each has its own key, so they never share draws."""
  MLM = 1
  SPAN_CORRUPTION = 2
  SOP = 3  # ALBERT's sentence order: where segment A ends, and whether A and B are swapped
  AUGMENT = 4  # an image's training augmentation: where it is cropped, whether it is flipped (data/images.py)


def example_rng(seed: int, epoch: int, index: int, stream: Stream) -> np.random.Generator:
  """The generator of example `index` (its position in the dataset) in `epoch`, for one objective.

  Derivation: `Generator(Philox(SeedSequence(seed, spawn_key=(stream, epoch, index))))`. SeedSequence hashes
  the keys into a well-mixed Philox key, so neighbouring indices or epochs give independent streams; the same
  keys always give the same stream. The objectives below consume it only through `Generator.random` (uniform
  doubles), the simplest map from the bit stream, rather than through `choice`, `integers` or `permutation`,
  whose algorithms numpy does not promise to keep across versions (NEP 19); a golden-value test pins the
  draws, so that an upgrade that would change the masks of a resumed run fails it.
  """
  for name, value in (('seed', seed), ('epoch', epoch), ('index', index)):
    if value < 0:
      raise ValueError(f'example_rng: {name}={value} must be >= 0 (it is a SeedSequence key)')
  return np.random.Generator(np.random.Philox(np.random.SeedSequence(seed, spawn_key=(int(stream), epoch, index))))


def _random_order(rng: np.random.Generator, n: int) -> np.ndarray:
  """A uniformly random permutation of range(n), from uniform doubles only (see `example_rng`)."""
  return np.argsort(rng.random(n), kind='stable')


# --- causal language modelling ---------------------------------------------------------------------------

def causal_lm(tokens: ArrayLike, *, segment_ids: ArrayLike | None = None, position_ids: ArrayLike | None = None,
              pad_id: int | None = None) -> dict[str, np.ndarray]:
  """Next-token prediction on rows of T+1 tokens.

  tokens: (..., T+1) ints: a chunk of a concatenated stream (`chunk_documents`), a padded document or a packed
  row (`packing.pack_sequences` with row_len T+1). segment_ids: (..., T+1) the example of each token (0 =
  padding), as packing gives them; without them, tokens equal to pad_id are padding and the rest is one
  segment (with neither, everything counts). position_ids: (..., T+1), by default restarting at 0 in each
  segment. Caution: where pad_id equals EOS (GPT-2), pad_id would drop every EOS target; pass segment_ids.

  Returns (..., T) arrays: input_ids = tokens[..., :-1], targets = tokens[..., 1:], the inputs' segment_ids and
  position_ids, and loss_weights = 1 where the target is a real token of the same segment as its input: never
  at padding, and never across a packed boundary (the first token of an example is not predicted from the
  previous example's last token).
  """
  tokens = np.asarray(tokens)
  if tokens.ndim < 1 or tokens.shape[-1] < 2:
    raise ValueError(f'causal_lm: tokens has shape {tokens.shape}; rows need T+1 >= 2 tokens (T inputs + 1)')
  if segment_ids is None:
    segment_ids = np.ones_like(tokens, _IDS) if pad_id is None else (tokens != pad_id).astype(_IDS)
  segment_ids = np.asarray(segment_ids)
  if segment_ids.shape != tokens.shape:
    raise ValueError(f'causal_lm: segment_ids shape {segment_ids.shape} must equal tokens shape {tokens.shape}')
  position_ids = segment_positions(segment_ids) if position_ids is None else np.asarray(position_ids)
  same_segment = (segment_ids[..., 1:] == segment_ids[..., :-1]) & (segment_ids[..., 1:] > 0)
  return {'input_ids': tokens[..., :-1].astype(_IDS), 'targets': tokens[..., 1:].astype(_IDS),
          'loss_weights': same_segment.astype(np.float32), 'segment_ids': segment_ids[..., :-1].astype(_IDS),
          'position_ids': position_ids[..., :-1].astype(_IDS)}


def chunk_documents(documents: Iterable[ArrayLike], seq_len: int, *, eos_id: int | None,
                    carry: ArrayLike | None = None, drop_remainder: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """GPT-style corpus preparation: documents joined by EOS into one stream, cut into rows of seq_len + 1.

  documents: 1-D token sequences; each is followed by eos_id (None: joined as they are). carry: (R,) the
  remainder returned by the previous call, which starts this call's stream. Rows do not overlap, so the rows
  concatenated are exactly the stream, and each row is independent (`causal_lm` without segment ids): the
  price is that the first token of each row is never a target, 1/(seq_len+1) of the tokens. Attention spans
  document boundaries within a row, as in GPT-2; pack documents instead to keep them apart.

  Returns rows (N, seq_len + 1) int32 and the new carry (R,) with R < seq_len + 1: the tail that did not fill
  a row, to pass to the next call, or empty when drop_remainder (then each call stands alone and its tail is
  lost, like HF's group_texts). At the end of a corpus, drop the carry or pad it into one last row (pass its
  segment ids to `causal_lm`).
  """
  if seq_len < 1:
    raise ValueError(f'chunk_documents: seq_len={seq_len} must be >= 1 (rows hold seq_len + 1 tokens)')
  parts = [np.asarray([] if carry is None else carry, _IDS).reshape(-1)]
  eos = np.asarray([] if eos_id is None else [eos_id], _IDS)
  for doc in documents:
    parts += [np.asarray(doc, _IDS).reshape(-1), eos]
  stream = np.concatenate(parts)
  width = seq_len + 1
  num_rows = len(stream) // width
  rows = stream[:num_rows * width].reshape(num_rows, width)
  rest = stream[num_rows * width:]
  return rows, (rest[:0] if drop_remainder else rest.copy())


# --- BERT / RoBERTa masked language modelling ------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class MlmConfig:
  """select_rate of the non-special tokens are predicted; of those, mask_rate become [MASK], random_rate a
  random regular token and the rest stay unchanged (BERT: 0.15, 0.8, 0.1). max_predictions caps the count
  (BERT's max_predictions_per_seq; None = no cap)."""

  select_rate: float = 0.15
  mask_rate: float = 0.8
  random_rate: float = 0.1
  max_predictions: int | None = None

  def __post_init__(self) -> None:
    if not 0.0 < self.select_rate <= 1.0:
      raise ValueError(f'MlmConfig.select_rate={self.select_rate}: must be in (0, 1]')
    if self.mask_rate < 0 or self.random_rate < 0 or self.mask_rate + self.random_rate > 1.0:
      raise ValueError(f'MlmConfig.mask_rate={self.mask_rate}, random_rate={self.random_rate}: must be >= 0 '
                       'with a sum <= 1 (the rest of the selected tokens stay unchanged)')
    if self.max_predictions is not None and self.max_predictions < 1:
      raise ValueError(f'MlmConfig.max_predictions={self.max_predictions}: must be >= 1, or None for no cap')

  def max_targets(self, length: int) -> int:
    """The most positions `mask_tokens` chooses in a row of `length` tokens: a row holds [CLS] and [SEP] at
    least, so at most length - 2 candidates (round() is monotone: fewer candidates never choose more)."""
    count = max(1, round(self.select_rate * max(length - 2, 0)))
    return count if self.max_predictions is None else min(count, self.max_predictions)


def mask_tokens(ids: ArrayLike, specials: SpecialIds, rng: np.random.Generator,
                config: MlmConfig = MlmConfig()) -> dict[str, np.ndarray]:
  """BERT's masked-LM corruption of one example (BERT's create_pretraining_data semantics).

  ids: (T,) an encoded example with its [CLS] / [SEP] / padding. Candidates are the non-special positions
  (never [CLS], [SEP], padding, [UNK], [MASK] or sentinels). Exactly n = max(1, round(select_rate *
  candidates)) of them are chosen uniformly without replacement (BERT; not the Bernoulli per token of HF's
  collator), which keeps the number of targets per example fixed. Each chosen position independently becomes
  [MASK] with probability mask_rate, a token drawn uniformly from `specials.regular` with random_rate (which
  may by chance equal the original, as in BERT), else stays. Take rng from `example_rng(seed, epoch, index,
  Stream.MLM)` for RoBERTa's dynamic masking.

  Returns (T,) input_ids (corrupted), targets (the original ids everywhere) and loss_weights (1.0 at the
  chosen positions, 0.0 elsewhere).
  """
  ids = np.asarray(ids, _IDS)
  if ids.ndim != 1:
    raise ValueError(f'mask_tokens: ids has shape {ids.shape}; give one example (T,), or use mask_tokens_batch')
  mask_id = specials.require('mask', 'masked language modelling')
  candidates = np.flatnonzero(~specials.is_special(ids))
  count = min(max(1, round(config.select_rate * len(candidates))), len(candidates))
  if config.max_predictions is not None:
    count = min(count, config.max_predictions)
  # The draws have fixed sizes given the example, so the stream is consumed identically on every replay.
  chosen = candidates[_random_order(rng, len(candidates))[:count]]
  action = rng.random(count)
  regular = specials.regular
  replacement = regular[np.minimum((rng.random(count) * len(regular)).astype(np.int64), len(regular) - 1)]
  inputs = ids.copy()
  to_mask = action < config.mask_rate
  to_random = ~to_mask & (action < config.mask_rate + config.random_rate)
  inputs[chosen[to_mask]] = mask_id
  inputs[chosen[to_random]] = replacement[to_random]
  weights = np.zeros(ids.shape, np.float32)
  weights[chosen] = 1.0
  return {'input_ids': inputs, 'targets': ids.copy(), 'loss_weights': weights}


def mask_tokens_batch(ids: ArrayLike, specials: SpecialIds, *, seed: int, epoch: int, indices: Sequence[int],
                      config: MlmConfig = MlmConfig()) -> dict[str, np.ndarray]:
  """`mask_tokens` on each row of ids (B, T), row b with `example_rng(seed, epoch, indices[b], Stream.MLM)`.
  Returns (B, T) arrays."""
  ids = np.asarray(ids)
  if ids.ndim != 2 or len(indices) != ids.shape[0]:
    raise ValueError(f'mask_tokens_batch: ids {ids.shape} must be (B, T) with one example index per row '
                     f'(got {len(indices)} indices)')
  rows = [mask_tokens(row, specials, example_rng(seed, epoch, int(i), Stream.MLM), config)
          for row, i in zip(ids, indices)]
  return {key: np.stack([r[key] for r in rows]) for key in rows[0]}


# --- ALBERT sentence-order prediction --------------------------------------------------------------------

def sentence_chunks(sentences: Sequence[ArrayLike], budget: int) -> list[dict[str, np.ndarray]]:
  """One document's consecutive sentences (token ids each, in order) grouped into chunks of at most `budget`
  tokens, each to become one sentence-order example (ALBERT's create_instances_from_document, without its
  random lengths: a fixed plan, so that rows stay random-access and the draws are per example).

  Whole sentences are added to a chunk while they fit; a sentence longer than `budget` is cut into pieces of
  `budget` tokens first. A chunk of fewer than 2 tokens (a document, or its tail, too short for two segments)
  is dropped. Returns, per chunk, 'tokens' (n,) int32, 2 <= n <= budget, the chunk's tokens as they are in the
  document, and 'bounds' (k,) int32, the ascending positions in (0, n) where a sentence (or piece) ends inside
  it: where `sentence_order_example` may cut segment A from segment B.
  """
  if budget < 2:
    raise ValueError(f'sentence_chunks: budget={budget} must be >= 2 (a token for each segment)')
  pieces = [p for s in sentences for p in _pieces(np.asarray(s, _IDS).reshape(-1), budget)]
  chunks, current = [], []
  for piece in pieces + [None]:  # None: the end of the document closes the last chunk
    if current and (piece is None or sum(map(len, current)) + len(piece) > budget):
      tokens = np.concatenate(current)
      if len(tokens) >= 2:
        chunks.append({'tokens': tokens, 'bounds': np.cumsum([len(p) for p in current[:-1]], dtype=_IDS)})
      current = []
    if piece is not None:
      current.append(piece)
  return chunks


def _pieces(ids: np.ndarray, budget: int) -> list[np.ndarray]:
  return [ids[i:i + budget] for i in range(0, len(ids), budget)]


def sentence_order_example(tokens: ArrayLike, bounds: ArrayLike, specials: SpecialIds, length: int,
                           rng: np.random.Generator) -> dict[str, np.ndarray]:
  """ALBERT's sentence-order pair of one chunk (`sentence_chunks`): [CLS] A [SEP] B [SEP], padded to `length`.

  A is the chunk up to a cut and B the rest: the cut is one of `bounds` (a sentence end), uniformly, or where
  the chunk is one piece, a token position uniformly in [1, n - 1]. Then with probability 0.5 the segments are
  swapped (Lan et al. 2020, section 4.2). Two uniform doubles are drawn, whatever the chunk; take rng from
  `example_rng(seed, epoch, index, Stream.SOP)`.

  Returns input_ids, token_type_ids (0 up to and including the first [SEP], 1 for the second segment and its
  [SEP]), attention_mask: (length,) int32; sentence_order_label: () int32, 0 = in order, 1 = swapped (HF's).
  """
  tokens, bounds = np.asarray(tokens, _IDS), np.asarray(bounds, _IDS)
  cls_id = specials.require('cls', 'a sentence-order example')
  sep_id = specials.require('sep', 'a sentence-order example')
  if not 2 <= len(tokens) <= length - 3:
    raise ValueError(f'sentence_order_example: {len(tokens)} tokens; need 2 .. length - 3 = {length - 3} (two '
                     'segments and [CLS] A [SEP] B [SEP])')
  where, swap = rng.random(2)
  cuts = bounds if len(bounds) else np.arange(1, len(tokens), dtype=_IDS)
  cut = int(cuts[min(int(where * len(cuts)), len(cuts) - 1)])
  first, second = tokens[:cut], tokens[cut:]
  swapped = bool(swap < 0.5)
  if swapped:
    first, second = second, first
  ids = np.concatenate([[cls_id], first, [sep_id], second, [sep_id]]).astype(_IDS)
  out = {'input_ids': np.full(length, specials.require('pad', 'padding'), _IDS),
         'token_type_ids': np.zeros(length, _IDS), 'attention_mask': np.zeros(length, _IDS)}
  out['input_ids'][:len(ids)] = ids
  out['token_type_ids'][len(first) + 2:len(ids)] = 1
  out['attention_mask'][:len(ids)] = 1
  return out | {'sentence_order_label': np.asarray(int(swapped), _IDS)}


# --- T5 span corruption ----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SpanCorruptionConfig:
  """T5's defaults: 15% of the tokens are noise, in spans of mean length 3."""

  noise_density: float = 0.15
  mean_noise_span_length: float = 3.0

  def __post_init__(self) -> None:
    if not 0.0 <= self.noise_density < 1.0:
      raise ValueError(f'SpanCorruptionConfig.noise_density={self.noise_density}: must be in [0, 1)')
    if self.mean_noise_span_length < 1.0:
      raise ValueError(f'SpanCorruptionConfig.mean_noise_span_length={self.mean_noise_span_length}: must be >= 1')


def _random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
  """(num_segments,) positive lengths summing to num_items, uniformly over such compositions (T5)."""
  first_in_segment = np.zeros(num_items, np.int64)
  first_in_segment[1:] = (np.arange(num_items - 1) < num_segments - 1)[_random_order(rng, num_items - 1)]
  return np.bincount(np.cumsum(first_in_segment), minlength=num_segments)


def random_spans_noise_mask(length: int, rng: np.random.Generator,
                            config: SpanCorruptionConfig = SpanCorruptionConfig()) -> np.ndarray:
  """(length,) bool, True at noise tokens: T5's `random_spans_noise_mask` (random_roll=False).

  round(length * noise_density) noise tokens (at least 1, at most length - 1) in max(1, round(noise /
  mean_noise_span_length)) spans; the noise and non-noise lengths are random compositions, interleaved starting
  with non-noise, so the mask ends with noise. One deviation: the span count is capped at the number of
  noise and of non-noise tokens, where T5 fails instead (only reachable for tiny lengths or extreme settings).
  """
  if length == 0 or config.noise_density == 0.0:
    return np.zeros(length, bool)
  orig_length, length = length, max(length, 2)  # as T5: avoid degenerate masks of one token
  num_noise = min(max(round(length * config.noise_density), 1), length - 1)
  num_nonnoise = length - num_noise
  num_spans = max(1, round(num_noise / config.mean_noise_span_length))
  num_spans = min(num_spans, num_noise, num_nonnoise)
  noise_lengths = _random_segmentation(num_noise, num_spans, rng)
  nonnoise_lengths = _random_segmentation(num_nonnoise, num_spans, rng)
  interleaved = np.stack([nonnoise_lengths, noise_lengths], axis=1).reshape(-1)
  span_start = np.zeros(length, np.int64)
  span_start[np.cumsum(interleaved)[:-1]] = 1
  return (np.cumsum(span_start) % 2 == 1)[:orig_length]


def _spans_to_sentinels(tokens: np.ndarray, noise: np.ndarray, sentinels: np.ndarray) -> np.ndarray:
  """Each run of noise tokens becomes one sentinel (the k-th run: sentinels[k]); other tokens stay."""
  previous = np.concatenate([[False], noise[:-1]])
  first = noise & ~previous
  out = np.where(first, sentinels[np.maximum(np.cumsum(first) - 1, 0)], tokens)
  return out[~(noise & previous)]


def span_corruption(tokens: ArrayLike, specials: SpecialIds, rng: np.random.Generator,
                    config: SpanCorruptionConfig = SpanCorruptionConfig()) -> dict[str, np.ndarray]:
  """T5's span corruption of one example.

  tokens: (n,) raw tokens without EOS (size n with `random_spans_helper`). With the noise mask of
  `random_spans_noise_mask`, inputs are the non-noise tokens with noise span k replaced by sentinels[k], then
  EOS; targets are sentinels[k] followed by noise span k for each k, then EOS (T5 appends EOS to both after
  the corruption). Take rng from `example_rng(seed, epoch, index, Stream.SPAN_CORRUPTION)`.

  Returns inputs (n - noise + spans + 1,) and targets (noise + spans + 1,) int32.
  """
  tokens = np.asarray(tokens, _IDS)
  if tokens.ndim != 1:
    raise ValueError(f'span_corruption: tokens has shape {tokens.shape}; give one example (n,)')
  eos = specials.require('eos', 'span corruption')
  noise = random_spans_noise_mask(len(tokens), rng, config)
  spans = int(np.count_nonzero(noise & ~np.concatenate([[False], noise[:-1]])))
  nonnoise_spans = int(np.count_nonzero(~noise & np.concatenate([[True], noise[:-1]])))
  if max(spans, nonnoise_spans) > len(specials.sentinels):
    raise ValueError(f'span_corruption: {len(tokens)} tokens make {spans} noise spans but SpecialIds.sentinels '
                     f'has {len(specials.sentinels)} ids: give more sentinels (T5 has 100) or shorter examples')
  sentinels = np.asarray(specials.sentinels or (0,), _IDS)
  end = np.asarray([eos], _IDS)
  return {'inputs': np.concatenate([_spans_to_sentinels(tokens, noise, sentinels), end]),
          'targets': np.concatenate([_spans_to_sentinels(tokens, ~noise, sentinels), end])}


def random_spans_helper(inputs_length: int, config: SpanCorruptionConfig = SpanCorruptionConfig(), *,
                        extra_tokens_per_span_inputs: int = 1,
                        extra_tokens_per_span_targets: int = 1) -> tuple[int, int]:
  """T5's `random_spans_helper`: (raw tokens per example, targets length) so that span-corrupted inputs,
  with one sentinel per span and EOS, are at most inputs_length long. 512 -> (568, 114) at T5's defaults."""
  if inputs_length < 2:
    raise ValueError(f'random_spans_helper: inputs_length={inputs_length} must be >= 2 (tokens + EOS)')

  def lengths(tokens_length: int) -> tuple[int, int]:
    num_noise = round(tokens_length * config.noise_density)
    num_spans = round(num_noise / config.mean_noise_span_length)
    return (tokens_length - num_noise + num_spans * extra_tokens_per_span_inputs + 1,
            num_noise + num_spans * extra_tokens_per_span_targets + 1)

  tokens_length = inputs_length - 1
  while lengths(tokens_length + 1)[0] <= inputs_length:
    tokens_length += 1
  targets_length = lengths(tokens_length)[1]
  # T5's hack: at density 0.5 make targets no longer than the (likely round) inputs length.
  if config.noise_density == 0.5 and targets_length > inputs_length:
    tokens_length -= 1
    targets_length -= 1
  return tokens_length, targets_length


def decoder_inputs(targets: ArrayLike, segment_ids: ArrayLike | None = None, start_id: int = 0) -> np.ndarray:
  """Teacher forcing: targets (..., T) shifted right by one, with start_id (T5: pad = 0) first in every
  segment, so that a packed example never sees the previous example's last target. segment_ids: (..., T)
  as `packing.pack_pairs` gives them (decoder_segment_ids). Returns (..., T) int32."""
  targets = np.asarray(targets, _IDS)
  shifted = np.concatenate([np.full(targets.shape[:-1] + (1,), start_id, _IDS), targets[..., :-1]], axis=-1)
  if segment_ids is not None:
    segment_ids = np.asarray(segment_ids)
    starts = np.ones(segment_ids.shape, bool)
    starts[..., 1:] = segment_ids[..., 1:] != segment_ids[..., :-1]
    shifted = np.where(starts, start_id, shifted).astype(_IDS)
  return shifted


# --- sequence to sequence (translation, summarisation) ---------------------------------------------------

def _eos_padded(ids: Sequence[int], length: int, eos: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
  """ids cut to length - 1, then EOS, then pad up to length: ((length,) int32 ids, (length,) int32 mask)."""
  kept = np.asarray(list(ids)[:length - 1] + [eos], _IDS)
  out = np.full(length, pad, _IDS)
  out[:len(kept)] = kept
  return out, (np.arange(length) < len(kept)).astype(_IDS)


def seq2seq_example(source: Sequence[int], target: Sequence[int], specials: SpecialIds, inputs_len: int,
                    targets_len: int) -> dict[str, np.ndarray]:
  """One translation / summarisation example for an encoder-decoder (T5, Vaswani et al.), fixed shapes.

  source, target: token ids without specials. Each side is cut to leave one place, then EOS is appended, then
  it is padded with specials.pad: a cut sequence still ends in EOS, as seqio's `append_eos_after_trim` (T5's
  tasks) and HF tokenizers with truncation=True build it. The decoder is teacher-forced: decoder_input_ids are
  the targets shifted right with pad as the start id (T5; `decoder_inputs`), and generation starts from pad.

  Returns input_ids, attention_mask: (inputs_len,) int32; targets, decoder_input_ids, decoder_attention_mask:
  (targets_len,) int32; loss_weights: (targets_len,) float32, 1 at the target tokens and their EOS, else 0.
  """
  eos = specials.require('eos', 'a seq2seq example')
  pad = specials.require('pad', 'a seq2seq example')
  for name, length in (('inputs_len', inputs_len), ('targets_len', targets_len)):
    if length < 1:
      raise ValueError(f'seq2seq_example: {name}={length} must be >= 1 (room for EOS)')
  input_ids, attention_mask = _eos_padded(source, inputs_len, eos, pad)
  targets, decoder_mask = _eos_padded(target, targets_len, eos, pad)
  return {'input_ids': input_ids, 'attention_mask': attention_mask, 'targets': targets,
          'loss_weights': decoder_mask.astype(np.float32), 'decoder_input_ids': decoder_inputs(targets, start_id=pad),
          'decoder_attention_mask': decoder_mask}


# --- classification and regression ----------------------------------------------------------------------

def _longest_first(first: list[int], second: list[int], budget: int) -> tuple[list[int], list[int]]:
  """'longest_first' truncation of a pair to `budget` tokens, as HF's Rust tokenizers do it (what
  `tokenizer(a, b, truncation=True)` runs): tokens come off the end of the longer sequence until it is as
  short as the other; if both must be cut, they keep budget // 2 and the rest, the longer one (the second on
  a tie) keeping the odd token. HF's Python `truncate_sequences` (slow tokenizers' `prepare_for_model`)
  differs only there: it always lets the first sequence keep the odd token."""
  n1, n2 = len(first), len(second)
  if n1 + n2 <= budget:
    return first, second
  swap = n1 > n2  # work with n1 <= n2
  if swap:
    n1, n2 = n2, n1
  n2 = n1 if n1 > budget else max(n1, budget - n1)
  if n1 + n2 > budget:
    n1 = budget // 2
    n2 = n1 + budget % 2
  if swap:
    n1, n2 = n2, n1
  return first[:n1], second[:n2]


def classification_example(first: Sequence[int], second: Sequence[int] | None, specials: SpecialIds,
                           max_length: int, *, label: int | float | None = None, regression: bool = False,
                           pad: bool = True) -> dict[str, np.ndarray]:
  """BERT's sequence(-pair) input: [CLS] first [SEP] (second [SEP]), as HF tokenizers build it; RoBERTa's
  pair (specials.pair_layout) has two separators between the texts, <s> A </s></s> B </s>.

  first, second: token ids without specials. When too long for max_length, the single sequence loses its
  tail, and a pair is cut by HF's 'longest_first' strategy as its (Rust) fast tokenizers apply it (see
  `_longest_first` for the one-token difference from its Python tokenizers). BERT's token_type_ids are 0 up to
  and including the first [SEP], 1 for second and its [SEP]; RoBERTa's are all 0. With pad, the row is padded
  to max_length with specials.pad (attention_mask 0, token type 0). label becomes int32, or float32 with
  regression.

  Returns input_ids, token_type_ids, attention_mask: (max_length,) int32 (without pad: the real length), and
  label: () when given.
  """
  cls_id = specials.require('cls', 'classification inputs')
  sep_id = specials.require('sep', 'classification inputs')
  layout = specials.pair_layout
  num_special = 2 if second is None else 2 + layout.separators
  if max_length < num_special:
    raise ValueError(f'classification_example: max_length={max_length} cannot hold the {num_special} special '
                     'tokens; raise max_length')
  first, rest = list(first), [] if second is None else list(second)
  budget = max_length - num_special
  if second is None:
    first = first[:budget]
  else:
    first, rest = _longest_first(first, rest, budget)
  head = [cls_id, *first, sep_id]
  ids = head + ([] if second is None else [sep_id] * (layout.separators - 1) + [*rest, sep_id])
  second_type = 1 if layout.token_types == 2 else 0
  types = [0] * len(head) + [second_type] * (len(ids) - len(head))
  width = max_length if pad else len(ids)
  out = {'input_ids': np.full(width, specials.require('pad', 'padding') if pad else 0, _IDS),
         'token_type_ids': np.zeros(width, _IDS), 'attention_mask': np.zeros(width, _IDS)}
  out['input_ids'][:len(ids)] = ids
  out['token_type_ids'][:len(ids)] = types
  out['attention_mask'][:len(ids)] = 1
  if label is not None:
    out['label'] = np.asarray(label, np.float32 if regression else _IDS)
  return out
