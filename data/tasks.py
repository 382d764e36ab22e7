"""From `config.data` to what the pipeline iterates: a random-access source and a per-example transform.

  corpus objectives (causal_lm, mlm, mlm_sop, span_corruption) on a text corpus ('builtin:sotu'):
      documents -> token ids (once, at start-up: seconds for the built-in corpora)
      -> fixed-length rows: documents joined by EOS/[SEP] and cut (GPT, RoBERTa FULL-SENTENCES, T5), or
         with data.packing, documents packed first-fit with segment ids so none attends to another; mlm_sop:
         chunks of whole sentences of one document (ALBERT)
      -> the objective per row, its random draws seeded by (seed, epoch, position): exact after a resume;
         with data.masking=static, by (seed, 0, row) in every epoch
  classification / regression on a task ('builtin:movie_sentiment/binary', 'tfds:glue/sst2', 'tsv:...'):
      example -> [CLS] A [SEP] (B [SEP]) -> token ids, token types, attention mask, label
  image_classification on an image source ('builtin:digits', 'tfds:cifar10'; data/images.py):
      image -> fitted to data.image_size, augmented (training split: per epoch from (seed, epoch, position)),
      normalised per channel -> pixel_values (C, H, W) float32, label; no tokenizer (Task.tokenizer is None)
  seq2seq on a source/target task ('tfds:wmt14_translate/de-en', 'tfds:cnn_dailymail', 'builtin:sentence_reversal',
  'tsv:...' with source and target columns):
      example -> source ids + EOS (data.seq_len), target ids + EOS (data.decoder_seq_len, default seq_len)
      -> encoder inputs, teacher-forced decoder inputs, targets; the raw target text stays in
      `task.source[i][task.info.target_feature]`, the reference for BLEU / ROUGE of generated text
  extractive_qa on a QA source ('tfds:squad/v1.1', 'builtin:sotu_cloze', 'json:...'; data/qa.py):
      example -> every window [CLS] question [SEP] context-window [SEP] with the answer's start / end tokens;
      the rows are these features (built at start-up), not the examples

Every feature has a fixed shape, so the train step compiles once. `EXAMPLES` (at the end) holds, per
objective, the kind of source it reads and its builder; objectives/__init__.py the rest of its spec.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.config import known_fields, parse_enum
from core.timing import Phase, phase
from data import batch, examples, images, packing, qa, sources, token_cache
from data.datasets import next_sentence
from data.tokenization import Tokenizer

Example = dict[str, np.ndarray]
Transform = Callable[[int, Any], Example]


class Objective(enum.Enum):
  CAUSAL_LM = 'causal_lm'
  MLM = 'mlm'
  SPAN_CORRUPTION = 'span_corruption'
  CLASSIFICATION = 'classification'
  REGRESSION = 'regression'
  SEQ2SEQ = 'seq2seq'  # source text -> target text (translation, summarisation) on an encoder-decoder.
  MLM_SOP = 'mlm_sop'  # ALBERT's pretraining: MLM on a pair of segments + their order (in order or swapped).
  IMAGE_CLASSIFICATION = 'image_classification'  # pixel_values -> a class (ViT).
  EXTRACTIVE_QA = 'extractive_qa'  # question + context -> the answer's start and end tokens (SQuAD; data/qa.py).


class Masking(enum.Enum):
  """When the random draws of a masking objective (its masks; mlm_sop's segment cut and order too) are made."""
  DYNAMIC = 'dynamic'  # every epoch anew, from (seed, epoch, row): RoBERTa (Liu et al. 2019, section 4.1)
  # once per row, from (seed, 0, row), and repeated every epoch: BERT's create_pretraining_data with dupe_factor=1
  STATIC = 'static'


def to_objective(value: Objective | str) -> Objective:
  """`data.objective` as the enum; an unknown string is an error naming the valid ones."""
  return parse_enum(Objective, value, field='data.objective', what='objective', error=ValueError)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig:
  """`config.data`, typed. seq_len is the model's input length (the encoder's for T5; for images the sequence the
  encoder runs, [CLS] + the patches, which the run checks against the model and the FLOPs accounting reads)."""

  source: str
  objective: Objective
  seq_len: int
  # Decoder length. span_corruption: None = T5's targets length for seq_len (512 -> 114). seq2seq: None =
  # seq_len, as translation setups use one length for both sides (Vaswani et al., Flax's wmt); summaries
  # are much shorter than their documents, so set it there (e.g. cnn_dailymail 512 -> 128).
  decoder_seq_len: int | None = None
  tokenizer: str = 'sentencepiece:auto,vocab_size=8000'
  packing: bool = False  # corpus objectives: pack whole documents with segment ids instead of joining them.
  data_dir: str | None = None  # TFDS data dir; None: $TFDS_DATA_DIR or ~/tensorflow_datasets.
  worker_count: int = 0  # grain worker processes.
  # Fine-tuning speed: batches of similar lengths, each cut to the smallest of these lengths that holds its
  # longest example (data/bucketing.py; the last must be seq_len); () = every batch padded to seq_len.
  length_buckets: tuple[int, ...] = ()
  bucket_window: int = 32  # global batches sorted by length together
  # seq2seq: two text features of the source to read as (source, target) instead of those it declares,
  # e.g. 'en' and 'de' for English -> German on 'tfds:wmt14_translate/de-en' (German -> English by default).
  source_feature: str | None = None
  target_feature: str | None = None
  # tsv: sources: a bad row (a missing or unknown label, a wrong field count, bytes that are not UTF-8, ...)
  # stops the run naming it ('error'), or is dropped with one line per file saying how many and where ('skip').
  bad_rows: sources.BadRows = sources.BadRows.ERROR
  # Classification on a tsv: source: the class names in class-id order; every label must be one of them (or its
  # id). () = the training split's classes: integers 0..max, or the sorted label strings.
  label_names: tuple[str, ...] = ()
  # Objectives that mask (mlm, mlm_sop): masks redrawn every epoch ('dynamic') or fixed per row ('static').
  masking: Masking = Masking.DYNAMIC
  # image_classification (data/images.py). The side images are brought to, None: as stored (one square size); and
  # how: resize (the shorter side, then the centre square) or pad (zeros around).
  image_size: int | None = None
  image_fit: images.ImageFit = images.ImageFit.RESIZE
  # Per-channel normalisation (pixel - mean) / std, in the source's pixel units (0..16 for digits, 0..255 for
  # photographs); () = measured on the training split at start-up (images.channel_stats). Both or neither.
  image_mean: tuple[float, ...] = ()
  image_std: tuple[float, ...] = ()
  # Training augmentation, drawn per example and epoch: a random crop of the image padded by this many zero pixels
  # on each side (0: none), and a horizontal flip with probability 1/2 (refused where a mirrored image changes
  # class: digits, mnist, ...).
  crop_padding: int = 0
  flip: bool = False
  # ... and first a rotation by an angle uniform in [-rotate, rotate] degrees (0: none): handwriting's slant.
  rotate: float = 0.0
  # extractive_qa (data/qa.py): consecutive windows of a long context overlap by this many tokens (HF run_qa's
  # doc_stride; 0: no striding, every context must fit one window), and the question keeps at most max_query_len.
  doc_stride: int = 128
  max_query_len: int = 64

  def __post_init__(self) -> None:
    object.__setattr__(self, 'objective', to_objective(self.objective))
    object.__setattr__(self, 'masking', parse_enum(Masking, self.masking, field='data.masking', what='masking',
                                                   error=ValueError))
    if self.masking is Masking.STATIC and not EXAMPLES[self.objective].masks:
      masking = ', '.join(o.value for o, e in EXAMPLES.items() if e.masks)
      raise ValueError(f'data.masking=static: data.objective={self.objective.value} draws no masks to keep fixed '
                       f'(only {masking} do); set data.masking=dynamic')
    object.__setattr__(self, 'bad_rows', parse_enum(sources.BadRows, self.bad_rows, field='data.bad_rows',
                                                    what='policy', error=ValueError))
    object.__setattr__(self, 'label_names', tuple(self.label_names))  # config trees hold lists
    if self.label_names:
      if self.objective is not Objective.CLASSIFICATION:
        raise ValueError(f'data.label_names={list(self.label_names)}: only data.objective=classification has '
                         f'classes, not {self.objective.value}; set data.label_names=()')
      if not all(isinstance(n, str) and n for n in self.label_names) or len(set(self.label_names)) < len(
          self.label_names):
        raise ValueError(f'data.label_names={list(self.label_names)}: the class names must be distinct, non-empty '
                         "strings, in class-id order, e.g. ('negative', 'positive')")
    self._check_images()
    for name in ('doc_stride', 'max_query_len'):
      if not isinstance(getattr(self, name), int) or getattr(self, name) < (name == 'max_query_len'):
        raise ValueError(f'data.{name}={getattr(self, name)!r}: must be an integer >= {int(name == "max_query_len")}')
    if self.seq_len < 4:
      raise ValueError(f'data.seq_len={self.seq_len}: must be at least 4')
    if self.decoder_seq_len is not None and self.decoder_seq_len < 2:
      raise ValueError(f'data.decoder_seq_len={self.decoder_seq_len}: must be at least 2 (a token and EOS), or '
                       'None for the default')
    if (self.source_feature is None) != (self.target_feature is None):
      raise ValueError(f'data.source_feature={self.source_feature!r}, data.target_feature={self.target_feature!r}: '
                       'set both (the source text and the target text) or neither')
    if self.source_feature is not None and self.objective is not Objective.SEQ2SEQ:
      raise ValueError(f'data.source_feature={self.source_feature!r}: only data.objective=seq2seq reads a source '
                       f'and a target feature, not {self.objective.value}; unset data.source_feature and '
                       'data.target_feature')
    object.__setattr__(self, 'length_buckets', tuple(self.length_buckets))  # config trees hold lists
    if self.length_buckets:
      if EXAMPLES[self.objective].source is sources.TaskKind.CORPUS:
        raise ValueError(f'data.length_buckets={self.length_buckets}: corpus objectives fill every row; bucketing is '
                         'for classification, regression and seq2seq examples: set data.length_buckets=()')
      if self.images:
        raise ValueError(f'data.length_buckets={self.length_buckets}: every image is the same sequence of patches, '
                         'with no length to bucket by; set data.length_buckets=()')
      if self.length_buckets[-1] != self.seq_len:
        raise ValueError(f'data.length_buckets={self.length_buckets}: the last bucket must be data.seq_len='
                         f'{self.seq_len}, the length examples are padded to; e.g. '
                         f'{tuple(b for b in self.length_buckets if b < self.seq_len) + (self.seq_len,)}')
    if self.packing and self.objective not in (Objective.CAUSAL_LM, Objective.MLM):
      raise ValueError(f'data.packing=True: only causal_lm and mlm pack documents, not {self.objective.value} '
                       '(span corruption joins documents as T5 does); set data.packing=False')

  def _check_images(self) -> None:
    """The image fields: typed, and set only for an image objective."""
    object.__setattr__(self, 'image_fit', parse_enum(images.ImageFit, self.image_fit, field='data.image_fit',
                                                     what='fit', error=ValueError))
    for name in ('image_mean', 'image_std'):  # config trees hold lists
      object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
    if not self.images:
      given = [f'data.{n}={getattr(self, n)!r}' for n in ('image_size', 'image_mean', 'image_std', 'crop_padding',
                                                          'flip', 'rotate') if getattr(self, n)]
      if given:
        raise ValueError(f'{", ".join(given)}: only data.objective=image_classification reads images, not '
                         f'{self.objective.value}; unset {" and ".join(g.split("=")[0] for g in given)}')
      return
    if self.image_size is not None and (not isinstance(self.image_size, int) or self.image_size < 1):
      raise ValueError(f'data.image_size={self.image_size!r}: a positive number of pixels, or None for the size the '
                       'images are stored at')
    if self.image_fit is images.ImageFit.PAD and self.image_size is None:
      raise ValueError('data.image_fit=pad: pads images up to data.image_size, which is None; set data.image_size')
    if bool(self.image_mean) != bool(self.image_std) or len(self.image_mean) != len(self.image_std):
      raise ValueError(f'data.image_mean={self.image_mean}, data.image_std={self.image_std}: give one of each per '
                       'channel, or neither (measured on the training split)')
    if any(not s > 0 for s in self.image_std):
      raise ValueError(f'data.image_std={self.image_std}: every std must be > 0')
    if not isinstance(self.crop_padding, int) or self.crop_padding < 0:
      raise ValueError(f'data.crop_padding={self.crop_padding!r}: pixels of zero padding around the random crop, '
                       'an integer >= 0 (0: no crop)')
    if not isinstance(self.rotate, (int, float)) or not 0 <= self.rotate < 180:
      raise ValueError(f'data.rotate={self.rotate!r}: the largest rotation in degrees, a number in [0, 180) (0: none)')

  @property
  def images(self) -> bool:
    """Whether the objective reads images (pixel_values) rather than text."""
    return EXAMPLES[self.objective].source is sources.TaskKind.IMAGE_CLASSIFICATION

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> DataConfig:
    """From `config.data`; unknown keys are an error naming the closest valid ones."""
    return cls(**known_fields(cls, values, section='data', error=ValueError))

  @property
  def targets_len(self) -> int:
    """Decoder length: data.decoder_seq_len, else seq_len for seq2seq and T5's for span corruption."""
    if self.decoder_seq_len:
      return self.decoder_seq_len
    if self.objective is Objective.SEQ2SEQ:
      return self.seq_len
    return examples.random_spans_helper(self.seq_len)[1]

  @property
  def seq2seq_features(self) -> tuple[str, str] | None:
    """(data.source_feature, data.target_feature), or None: the source's own."""
    return None if self.source_feature is None else (self.source_feature, self.target_feature)

  @property
  def read_rules(self) -> sources.ReadRules:
    """How the source's rows are checked: data.bad_rows, data.label_names, and the label kind of the objective."""
    kind = EXAMPLES[self.objective].source
    labels = kind if kind in (sources.TaskKind.CLASSIFICATION, sources.TaskKind.REGRESSION) else None
    return sources.ReadRules(self.bad_rows, self.label_names, labels)


@dataclasses.dataclass(frozen=True)
class Task:
  """What the pipeline needs: `transform(position, source[i])` gives one example of fixed-shape features."""

  source: Sequence[Any]
  transform: Callable[[int, Any], Example]
  tokenizer: Tokenizer | None  # None for images
  info: sources.TaskInfo
  config: DataConfig

  @property
  def token_types(self) -> int:
    """How many token types the examples use: 2 where a pair's second text is type 1 (BERT's layout) or where the
    objective cuts one text into a pair (mlm_sop), else 1."""
    if EXAMPLES[self.config.objective].segment_pairs:
      return 2
    return self.tokenizer.pair_layout.token_types if len(self.info.text_features) == 2 else 1


def special_ids(tokenizer: Tokenizer) -> examples.SpecialIds:
  return examples.SpecialIds(vocab_size=tokenizer.vocab_size, pad=tokenizer.pad_id, eos=tokenizer.eos_id,
                             bos=tokenizer.bos_id, unk=tokenizer.unk_id, cls=tokenizer.cls_id,
                             sep=tokenizer.sep_id, mask=tokenizer.mask_id, sentinels=tuple(tokenizer.sentinel_ids),
                             pair_layout=tokenizer.pair_layout)


def build_task(config: DataConfig, split: str, *, seed: int, tokenizer: Tokenizer | None = None,
               tokenizer_dir: str | Path | None = None, augment: bool = True) -> Task:
  """The task of `split`. The tokenizer is loaded from `config.tokenizer` unless given; an 'auto'
  SentencePiece vocabulary is trained on the train split on first use and kept in `tokenizer_dir`. Images have
  none, and are augmented (data.crop_padding, data.flip) on the train split unless `augment` is False (eval.py
  scoring the training split, features for scikit-learn's baselines)."""
  source = sources.open_source(config.source, split, data_dir=config.data_dir,
                               seq2seq_features=config.seq2seq_features, rules=config.read_rules)
  kind, wanted = source.info.kind, EXAMPLES[config.objective].source
  if kind is not wanted:
    hint = ''
    if sources.TaskKind.IMAGE_CLASSIFICATION in (kind, wanted):
      hint = (" (image_classification reads an 'image' feature and a ClassLabel 'label': 'builtin:digits', "
              "'tfds:mnist', 'tfds:cifar10', ...; text sources train the text objectives)")
    if sources.TaskKind.SEQ2SEQ in (kind, wanted):
      hint = (" (seq2seq needs a source text and a target text: a 'tsv:' file with source and target columns, a "
              "translation or summarisation 'tfds:' dataset, 'builtin:sentence_reversal', or two text features "
              'named by data.source_feature and data.target_feature)')
    if sources.TaskKind.QA in (kind, wanted):
      hint = (" (extractive_qa reads questions, contexts and answers: 'tfds:squad/v1.1', 'tfds:squad/v2.0', "
              "'builtin:sotu_cloze', 'json:<SQuAD JSON>', or a 'tsv:' file with id, context, question, answer_text and "
              'answer_start columns)')
    raise ValueError(f'data.objective={config.objective.value} does not fit data.source={config.source!r}, a '
                     f'{kind.value} dataset; pick a matching objective or source{hint}')
  entry = EXAMPLES[config.objective]
  if config.images and (not augment or split != TRAIN_SPLIT):
    config = dataclasses.replace(config, crop_padding=0, flip=False, rotate=0.0)
  if tokenizer is None and entry.tokenized:
    corpus = None
    if split == 'train':
      corpus = _texts(source)
    elif 'auto' in config.tokenizer:
      corpus = _texts(sources.open_source(config.source, 'train', data_dir=config.data_dir,
                                          seq2seq_features=config.seq2seq_features, rules=config.read_rules))
    with phase(Phase.TOKENIZER):
      tokenizer = token_cache.load_tokenizer(config.tokenizer, corpus=corpus, auto_dir=tokenizer_dir)
  specials = special_ids(tokenizer) if tokenizer is not None else None
  with phase(Phase.TOKENIZE):  # corpus objectives tokenize every document here; the others per example
    rows, transform = entry.build(config, source, tokenizer, specials, seed)
  if len(rows):  # the builder's features are those of the batch schema: a slip fails here, not in a compile
    batch.check_example(transform(0, rows[0]), f'data.objective={config.objective.value}')
  return Task(rows, transform, tokenizer, source.info, config)


def _texts(source: sources.Source) -> Iterator[str]:
  """Every text of the split, for training a vocabulary: a seq2seq task's source and target sides both."""
  for i in range(len(source)):
    example = source[i]
    for name in source.info.tokenized_features:
      yield example[name]


def _tokenize(source: sources.Source, tokenizer: Tokenizer) -> list[np.ndarray]:
  """Every document of the split as ids, from data/token_cache.py when an earlier run tokenized the same texts."""
  (name,) = source.info.text_features
  texts = [source[i][name] for i in range(len(source))]
  return token_cache.encode(tokenizer, texts, what=f'{source.split} split')


def _require(specials: examples.SpecialIds, objective: Objective, *names: str) -> None:
  missing = [n for n in names if getattr(specials, n) is None]
  if missing:
    raise ValueError(f'data.tokenizer has no {", ".join(missing)} token, which data.objective='
                     f'{objective.value} needs; use one that has it (sentencepiece reserves every special token)')


def _causal_lm(config: DataConfig, source: sources.Source, tokenizer: Tokenizer, specials: examples.SpecialIds,
               seed: int) -> tuple[Any, Transform]:
  """Documents joined by EOS and cut into rows of seq_len + 1 (inputs and shifted targets), or packed."""
  del seed  # nothing is drawn
  _require(specials, config.objective, 'eos')
  documents = _tokenize(source, tokenizer)
  if config.packing:
    rows = _packed([np.append(d, specials.eos) for d in documents], config.seq_len + 1, specials)
    return rows, lambda i, row: examples.causal_lm(row['tokens'], segment_ids=row['segment_ids'],
                                                   position_ids=row['position_ids'], pad_id=specials.pad)
  rows = _chunks(documents, config.seq_len, specials.eos)
  return rows, lambda i, row: examples.causal_lm(row, pad_id=specials.pad)


def _mlm(config: DataConfig, source: sources.Source, tokenizer: Tokenizer, specials: examples.SpecialIds,
         seed: int) -> tuple[Any, Transform]:
  """BERT's masking of rows of whole documents, redrawn every epoch from (seed, epoch, row) (data.masking)."""
  length = config.seq_len
  _require(specials, config.objective, 'cls', 'sep', 'mask', 'pad')
  documents = _tokenize(source, tokenizer)
  rng = _rng_of(seed, examples.Stream.MLM, config.masking)
  if config.packing:
    pieces = [np.concatenate([[specials.cls], p, [specials.sep]])
              for d in documents for p in _split(d, length - 2)]
    rows = _packed(pieces, length, specials)

    def mlm_packed(i: int, row: dict[str, np.ndarray]) -> Example:
      out = examples.mask_tokens(row['tokens'], specials, rng(i, len(rows)))
      return out | {'segment_ids': row['segment_ids'], 'position_ids': row['position_ids'],
                    'attention_mask': (row['segment_ids'] > 0).astype(np.int32),
                    'token_type_ids': np.zeros(length, np.int32)}
    return rows, mlm_packed
  # RoBERTa's FULL-SENTENCES rows: documents joined by [SEP], then [CLS] row [SEP].
  chunks = _chunks(documents, length - 3, specials.sep)

  def mlm(i: int, row: np.ndarray) -> Example:
    ids = np.concatenate([[specials.cls], row, [specials.sep]]).astype(np.int32)
    out = examples.mask_tokens(ids, specials, rng(i, len(chunks)))
    return out | {'attention_mask': np.ones(length, np.int32), 'token_type_ids': np.zeros(length, np.int32)}
  return chunks, mlm


def _mlm_sop(config: DataConfig, source: sources.Source, tokenizer: Tokenizer, specials: examples.SpecialIds,
             seed: int) -> tuple[Any, Transform]:
  """ALBERT's pretraining examples: each row a chunk of whole sentences of one document (at most seq_len - 3
  tokens, `examples.sentence_chunks`), cut into segments A and B at a sentence end and swapped with probability
  0.5 (`examples.sentence_order_example`, stream SOP), then BERT's masking of the pair (stream MLM). Both draws
  follow data.masking: a static row is one fixed instance, as create_pretraining_data writes it once."""
  _require(specials, config.objective, 'cls', 'sep', 'mask', 'pad')
  (name,) = source.info.text_features
  # Sentences as next_sentence cuts them (one regex for the code base), tokenized one by one, in document order.
  documents = [next_sentence.split_sentences(source[i][name]) for i in range(len(source))]
  ids = iter(token_cache.encode(tokenizer, [s for d in documents for s in d], what=f'{source.split} sentences'))
  rows = [chunk for d in documents for chunk in examples.sentence_chunks([next(ids) for _ in d], config.seq_len - 3)]
  if not rows:
    raise ValueError(f'data.source={config.source!r}: no document of its {source.split!r} split has the 2 tokens '
                     f'that data.objective={config.objective.value} cuts into two segments; use a corpus with text')
  order_rng = _rng_of(seed, examples.Stream.SOP, config.masking)
  mask_rng = _rng_of(seed, examples.Stream.MLM, config.masking)

  def mlm_sop(i: int, row: Mapping[str, np.ndarray]) -> Example:
    pair = examples.sentence_order_example(row['tokens'], row['bounds'], specials, config.seq_len,
                                           order_rng(i, len(rows)))
    return pair | examples.mask_tokens(pair['input_ids'], specials, mask_rng(i, len(rows)))
  return rows, mlm_sop


def _span_corruption(config: DataConfig, source: sources.Source, tokenizer: Tokenizer,
                     specials: examples.SpecialIds, seed: int) -> tuple[Any, Transform]:
  """T5's noise spans over rows of joined documents, sized so inputs fit seq_len and targets targets_len."""
  length = config.seq_len
  _require(specials, config.objective, 'eos', 'pad')
  if not specials.sentinels:
    raise ValueError('data.tokenizer has no sentinel tokens, which span_corruption needs; use '
                     "'sentencepiece:...' (it reserves 100 sentinels)")
  raw_len, _ = examples.random_spans_helper(length)
  targets_len = config.targets_len
  chunks = _chunks(_tokenize(source, tokenizer), raw_len - 1, specials.eos)
  rng = _rng_of(seed, examples.Stream.SPAN_CORRUPTION, config.masking)  # always dynamic: T5's spans

  def span(i: int, row: np.ndarray) -> Example:
    out = examples.span_corruption(row, specials, rng(i, len(chunks)))
    inputs, targets = _pad(out['inputs'], length, specials.pad), _pad(out['targets'], targets_len, specials.pad)
    return {'input_ids': inputs, 'attention_mask': (np.arange(length) < len(out['inputs'])).astype(np.int32),
            'decoder_input_ids': examples.decoder_inputs(targets, start_id=specials.pad),
            'decoder_attention_mask': (np.arange(targets_len) < len(out['targets'])).astype(np.int32),
            'targets': targets, 'loss_weights': (np.arange(targets_len) < len(out['targets'])).astype(np.float32)}
  return chunks, span


def _rng_of(seed: int, stream: examples.Stream, masking: Masking) -> Callable[[int, int], np.random.Generator]:
  """position in the stream -> the generator of that example: epoch = position // rows (always 0 with static
  masking: one draw per row), index = the rest."""
  static = masking is Masking.STATIC
  return lambda position, rows: examples.example_rng(seed, 0 if static else position // rows, position % rows,
                                                     stream)


def _chunks(documents: list[np.ndarray], length: int, separator: int) -> np.ndarray:
  rows, _ = examples.chunk_documents(documents, length, eos_id=separator, drop_remainder=True)
  if not len(rows):
    raise ValueError(f'the corpus has fewer than {length + 1} tokens: lower data.seq_len or use a larger source')
  return rows


def _split(ids: np.ndarray, length: int) -> list[np.ndarray]:
  return [ids[i:i + length] for i in range(0, max(len(ids), 1), length)]


def _packed(pieces: list[np.ndarray], length: int, specials: examples.SpecialIds) -> list[dict[str, np.ndarray]]:
  """First-fit packing of all pieces at once (a fixed plan over the split: rows stay random-access)."""
  packed = packing.pack_sequences([{'tokens': p} for p in pieces], length, overflow=packing.Overflow.SPLIT,
                                  pad_values={'tokens': specials.pad})
  rows = packed.rows
  return [{k: v[r] for k, v in rows.items()} for r in range(packed.num_rows)]


def _pad(ids: np.ndarray, length: int, pad: int) -> np.ndarray:
  if len(ids) > length:
    raise ValueError(f'{len(ids)} tokens do not fit in {length}: data.decoder_seq_len is too short')
  return np.pad(np.asarray(ids, np.int32), (0, length - len(ids)), constant_values=pad)


def _seq2seq(config: DataConfig, source: sources.Source, tokenizer: Tokenizer, specials: examples.SpecialIds,
             seed: int) -> tuple[Any, Transform]:
  """example -> `examples.seq2seq_example` of its source and target texts (seq_len, targets_len)."""
  del seed  # nothing is drawn
  _require(specials, config.objective, 'eos', 'pad')
  (source_name,), target_name = source.info.text_features, source.info.target_feature
  inputs_len, targets_len = config.seq_len, config.targets_len

  def transform(i: int, example: Mapping[str, Any]) -> Example:
    del i  # deterministic: nothing is drawn
    return examples.seq2seq_example(tokenizer.encode(example[source_name]), tokenizer.encode(example[target_name]),
                                    specials, inputs_len, targets_len)
  return source, transform


def _classification(config: DataConfig, source: sources.Source, tokenizer: Tokenizer,
                    specials: examples.SpecialIds, seed: int) -> tuple[Any, Transform]:
  """example -> [CLS] A [SEP] (B [SEP]), token types, attention mask and the label (a class or a number)."""
  del seed  # nothing is drawn
  _require(specials, config.objective, 'cls', 'sep', 'pad')
  info = source.info
  regression = config.objective is Objective.REGRESSION

  def transform(i: int, example: Mapping[str, Any]) -> Example:
    del i  # deterministic: nothing is drawn
    texts = [tokenizer.encode(example[name]) for name in info.text_features]
    return examples.classification_example(texts[0], texts[1] if len(texts) > 1 else None, specials,
                                             config.seq_len, label=example[info.label_feature],
                                             regression=regression)
  return source, transform


def _extractive_qa(config: DataConfig, source: sources.Source, tokenizer: Tokenizer, specials: examples.SpecialIds,
                   seed: int) -> tuple[Any, Transform]:
  """Every window of every example as a row (`qa.build_features`): training uses them all, as HF's run_qa."""
  del seed  # nothing is drawn
  _require(specials, config.objective, 'cls', 'sep', 'pad')
  table = qa.build_features(source, tokenizer, specials, seq_len=config.seq_len, doc_stride=config.doc_stride,
                            max_query_len=config.max_query_len, where=f'data.source={config.source!r} {source.split}')
  return table, lambda i, row: dict(row)


TRAIN_SPLIT = 'train'  # the split a run trains on, the one that is augmented and measured for normalisation


def _image_classification(config: DataConfig, source: sources.Source, tokenizer: None, specials: None,
                          seed: int) -> tuple[Any, Transform]:
  """image -> pixel_values (C, H, W) float32 and label (data/images.py): fitted to data.image_size, augmented
  when data.rotate, data.crop_padding or data.flip (build_task leaves them off but on the train split), normalised by
  data.image_mean / image_std or the training split's figures."""
  del tokenizer, specials  # images have no tokens
  info = source.info
  images.stored_side(info.image_shape, config.image_size, config.source)  # one square size, or an error
  if config.flip and not info.horizontal_flips:
    raise ValueError(f'data.flip=True: a mirrored image of data.source={config.source!r} is not one of its class '
                     '(digits, letters); set data.flip=False')
  channels = info.image_shape[-1]
  mean, std = config.image_mean, config.image_std
  if mean and len(mean) != channels:
    raise ValueError(f'data.image_mean={mean}, data.image_std={std}: data.source={config.source!r} has {channels}-'
                     f'channel images; give {channels} values each')
  if not mean:
    mean, std = _training_stats(config.source, config.data_dir, config.image_size, config.image_fit)
  name = info.image_feature
  rng = _rng_of(seed, examples.Stream.AUGMENT, Masking.DYNAMIC)
  augmenting = bool(config.crop_padding or config.flip or config.rotate)

  def transform(i: int, example: Mapping[str, Any]) -> Example:
    image = images.fit(np.asarray(example[name]), config.image_size, config.image_fit)
    if augmenting:
      image = images.augment(image, rng(i, len(source)), crop_padding=config.crop_padding, flip=config.flip,
                             rotate=config.rotate)
    return {'pixel_values': images.normalise(image, mean, std), 'label': np.int32(example['label'])}
  return source, transform


@functools.lru_cache(maxsize=8)  # a run builds the train split, its eval split and eval.py's: measured once
def _training_stats(spec: str, data_dir: str | None, size: int | None,
                    how: images.ImageFit) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel mean and std of the training split's fitted images (images.channel_stats)."""
  train = sources.open_source(spec, TRAIN_SPLIT, data_dir=data_dir)
  name = train.info.image_feature
  mean, std = images.channel_stats(len(train), lambda i: images.fit(np.asarray(train[i][name]), size, how))
  if not all(s > 0 for s in std):
    raise ValueError(f'data.source={spec!r}: a channel of its training images is constant (std {std}); set '
                     'data.image_mean and data.image_std')
  return mean, std


@dataclasses.dataclass(frozen=True)
class Examples:
  """What the data side needs of an objective: the kind of source it reads and how its examples are built
  (rows to index, and the transform of row i; random draws seeded by (seed, epoch, row))."""

  source: sources.TaskKind
  build: Callable[[DataConfig, sources.Source, Tokenizer | None, examples.SpecialIds | None, int],
                  tuple[Any, Transform]]
  # The most positions of a row that carry a loss weight, where the examples bound it well below the row's
  # length (MLM: 15%); the train step then computes the LM head at those positions alone.
  max_targets: Callable[[DataConfig], int] | None = None
  masks: bool = False  # it draws masks, which data.masking may fix per row
  segment_pairs: bool = False  # it cuts one text into [CLS] A [SEP] B [SEP], B of token type 1 (ALBERT's layout)
  tokenized: bool = True  # it reads text through data.tokenizer (images do not: build gets None for both)


def max_targets(config: DataConfig) -> int:
  """EXAMPLES[objective].max_targets of `config`, or 0 where every position may carry a loss weight."""
  bound = EXAMPLES[config.objective].max_targets
  return bound(config) if bound else 0


def _mlm_targets(config: DataConfig) -> int:
  """BERT's masking chooses at most this many of a row's seq_len positions (a pair's three specials leave fewer)."""
  return examples.MlmConfig().max_targets(config.seq_len)


# One entry per objective (its model, loss and scoring: objectives/__init__.py).
EXAMPLES: dict[Objective, Examples] = {
    Objective.CAUSAL_LM: Examples(sources.TaskKind.CORPUS, _causal_lm),
    Objective.MLM: Examples(sources.TaskKind.CORPUS, _mlm, _mlm_targets, masks=True),
    Objective.SPAN_CORRUPTION: Examples(sources.TaskKind.CORPUS, _span_corruption),
    Objective.CLASSIFICATION: Examples(sources.TaskKind.CLASSIFICATION, _classification),
    Objective.REGRESSION: Examples(sources.TaskKind.REGRESSION, _classification),
    Objective.SEQ2SEQ: Examples(sources.TaskKind.SEQ2SEQ, _seq2seq),
    Objective.MLM_SOP: Examples(sources.TaskKind.CORPUS, _mlm_sop, _mlm_targets, masks=True, segment_pairs=True),
    Objective.IMAGE_CLASSIFICATION: Examples(sources.TaskKind.IMAGE_CLASSIFICATION, _image_classification,
                                             tokenized=False),
    Objective.EXTRACTIVE_QA: Examples(sources.TaskKind.QA, _extractive_qa),
}
