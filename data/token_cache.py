"""Tokenized texts cached on disk, so that a second run on the same data does not tokenize it again.

  ids = token_cache.encode(tokenizer, texts)   # [np.ndarray int32 per text], from the cache when it has them

The key is a sha256 of the tokenizer's `fingerprint` (its model bytes, normalisation, specials), of the texts
themselves (in order, each with its length) and of FORMAT: it can never serve ids of other texts or of another
tokenizer, whatever the source (a builtin dataset rebuilt, a tsv file edited in place, a '+' mixture). Reading
and hashing the texts costs little next to encoding them (the State of the Union corpus: 0.03 s against 0.8 s).

Where: $TJ_TOKEN_CACHE if set ('' = off), else ~/.cache/transformers_jax/tokenized. One .npz per split
(all ids concatenated + offsets), written to a temporary file and renamed (several processes may write the same
entry: whichever renames last wins, with the same bytes). A file that does not read is reported, deleted and
rebuilt. Entries are never evicted: delete the folder to reclaim the space.

  tokenizer = token_cache.load_tokenizer(spec, corpus=texts, auto_dir=workdir / 'tokenizer')

does the same for an 'auto' SentencePiece vocabulary that a new workdir must train first (a sweep's cells, a
second run of a config in a new folder): SentencePiece training here is deterministic (seeded sampling, fixed
threads: data/tokenization.train_sentencepiece), so the model trained on the same texts with the same spec is
kept under vocabularies/ in the same folder, keyed by the spec, the texts and the library's version, and copied
into auto_dir instead of being trained again (gpt_tiny: 5 s of its start-up).
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from absl import logging

from core.paths import user_cache_dir, user_path
import sentencepiece as spm

from data import tokenization
from data.tokenization import Tokenizer, TokenizerSpec

ENV_VAR = 'TJ_TOKEN_CACHE'
FORMAT = 'token_cache/1'
# Change it when train_sentencepiece's fixed settings change (what it writes for the same texts and spec).
VOCABULARY_FORMAT = 'vocabulary/1'  # change it when what encode() returns changes for the same tokenizer and texts
# Below this many characters in all, encoding takes milliseconds: not worth a file.
MIN_CHARS = 100_000


def folder() -> Path | None:
  """The cache folder, or None when $TJ_TOKEN_CACHE is '' (off)."""
  value = os.environ.get(ENV_VAR)
  if value is None:
    return user_cache_dir('tokenized')
  return user_path(value) if value else None


def key(tokenizer: Tokenizer, texts: Sequence[str]) -> str:
  """The cache key of `texts` encoded by `tokenizer` (module docstring)."""
  return _digest(f'{FORMAT}|{tokenizer.fingerprint}', texts)


def _digest(prefix: str, texts: Sequence[str]) -> str:
  """sha256 of `prefix` and the texts, each with its length (so no two lists of texts collide by joining)."""
  digest = hashlib.sha256(f'{prefix}|{len(texts)}'.encode())
  for text in texts:
    data = text.encode('utf-8', 'surrogatepass')
    digest.update(len(data).to_bytes(8, 'little'))
    digest.update(data)
  return digest.hexdigest()


def encode(tokenizer: Tokenizer, texts: Sequence[str], *, what: str = 'texts') -> list[np.ndarray]:
  """`tokenizer.encode_batch(texts)` as int32 arrays, read from the cache when it holds them (else encoded and
  written there). `what` names the texts in the line printed on a hit or a rebuild."""
  where = folder()
  if where is None or sum(map(len, texts)) < MIN_CHARS:
    return _encode(tokenizer, texts)
  path = where / f'{key(tokenizer, texts)}.npz'
  if path.is_file():
    try:
      with np.load(path) as f:
        ids, offsets = f['ids'], f['offsets']
      if len(offsets) != len(texts) + 1 or offsets[-1] != len(ids):
        raise ValueError(f'{len(offsets) - 1} texts and {len(ids)} ids, for {len(texts)} texts')
      print(f'tokenized {what}: {len(texts):,} texts, {len(ids):,} ids, from the cache ({path})', flush=True)
      return np.split(ids, offsets[1:-1])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
      logging.warning('token cache %s does not read (%s): deleted; tokenizing again', path, e)
      print(f'token cache {path} does not read ({e}): tokenizing {what} again', flush=True)
      path.unlink(missing_ok=True)
  out = _encode(tokenizer, texts)
  lengths = np.fromiter(map(len, out), np.int64, len(out))
  offsets = np.concatenate([[0], np.cumsum(lengths)])
  ids = np.concatenate(out) if out else np.zeros(0, np.int32)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f'{path.stem}.{os.getpid()}.{os.urandom(4).hex()}.tmp.npz')
  try:
    np.savez(tmp, ids=ids.astype(np.int32), offsets=offsets)
    os.replace(tmp, path)
  except OSError as e:  # a full or read-only disk costs the next run its tokenizing, nothing else
    tmp.unlink(missing_ok=True)
    logging.warning('token cache %s not written: %s', path, e)
  return out


def _encode(tokenizer: Tokenizer, texts: Sequence[str]) -> list[np.ndarray]:
  return [np.asarray(ids, np.int32) for ids in tokenizer.encode_batch(list(texts))]


def load_tokenizer(spec: TokenizerSpec | str, *, corpus: Iterable[str] | None,
                   auto_dir: str | os.PathLike[str] | None) -> Tokenizer:
  """`tokenization.load_tokenizer(spec, corpus=corpus, auto_dir=auto_dir)`; an 'auto' SentencePiece model that
  auto_dir lacks is copied from the cache when the same spec was trained on the same texts before, and put there
  after training otherwise (module docstring)."""
  parsed = TokenizerSpec.parse(spec) if isinstance(spec, str) else spec
  where = folder()
  if (where is None or corpus is None or auto_dir is None or not parsed.auto
      or parsed.kind is not tokenization.TokenizerKind.SENTENCEPIECE or parsed.vocab_size is None):
    return tokenization.load_tokenizer(parsed, corpus=corpus, auto_dir=auto_dir)
  target = tokenization.auto_model_path(parsed, auto_dir)
  if target.is_file():
    return tokenization.load_tokenizer(parsed, corpus=None, auto_dir=auto_dir)
  texts = list(corpus)
  cached = where / 'vocabularies' / f'{_digest(f"{VOCABULARY_FORMAT}|{spm.__version__}|{parsed!r}", texts)}.model'
  if cached.is_file():
    _copy(cached, target)
    print(f'vocabulary {target.name}: trained on the same texts by an earlier run, copied from the cache '
          f'({cached})', flush=True)
    return tokenization.load_tokenizer(parsed, corpus=None, auto_dir=auto_dir)
  tokenizer = tokenization.load_tokenizer(parsed, corpus=texts, auto_dir=auto_dir)
  try:
    _copy(target, cached)
  except OSError as e:  # a full or read-only disk costs the next run its training, nothing else
    logging.warning('vocabulary cache %s not written: %s', cached, e)
  return tokenizer


def _copy(source: Path, destination: Path) -> None:
  """Copies a file through a temporary name and a rename: a reader never sees half of it."""
  destination.parent.mkdir(parents=True, exist_ok=True)
  tmp = destination.with_name(f'.{destination.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp')
  try:
    tmp.write_bytes(source.read_bytes())
    os.replace(tmp, destination)
  finally:
    tmp.unlink(missing_ok=True)
