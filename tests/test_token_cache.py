"""data/token_cache.py: a second encode of the same texts reads the cache; the key follows texts and tokenizer;
a damaged entry is rebuilt; '' turns it off."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data import token_cache
from data import tokenization
from data.tokenization import WordPieceTokenizer, load_tokenizer

TEXTS = [f'Document {i}: the whale swam {"far " * (i % 7)}away from the ship, said Ishmael.' * 40 for i in range(60)]


class Counting:
  """A tokenizer that counts its encode_batch calls (the cache must make none on a hit)."""

  def __init__(self, inner: WordPieceTokenizer) -> None:
    self.inner, self.calls = inner, 0
    self.fingerprint = inner.fingerprint

  def encode_batch(self, texts):
    self.calls += 1
    return self.inner.encode_batch(texts)


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
  monkeypatch.setenv(token_cache.ENV_VAR, str(tmp_path / 'tok'))
  return tmp_path / 'tok'


@pytest.fixture(scope='module')
def wordpiece() -> WordPieceTokenizer:
  return load_tokenizer('wordpiece')


def token_cache_vocab(tok: WordPieceTokenizer) -> Path:
  """The vocab.txt the default WordPiece tokenizer reads (MiniLM's)."""
  return tokenization._minilm_vocab()  # pylint: disable=protected-access


def test_second_encode_reads_the_cache(cache: Path, wordpiece, capsys: pytest.CaptureFixture) -> None:
  assert sum(map(len, TEXTS)) >= token_cache.MIN_CHARS
  tok = Counting(wordpiece)
  first = token_cache.encode(tok, TEXTS, what='train split')
  second = token_cache.encode(tok, TEXTS, what='train split')
  assert tok.calls == 1 and len(list(cache.glob('*.npz'))) == 1
  assert 'from the cache' in capsys.readouterr().out
  expected = wordpiece.encode_batch(TEXTS)
  for a, b, e in zip(first, second, expected):
    assert a.dtype == b.dtype == np.int32 and a.tolist() == b.tolist() == e


def test_the_key_follows_texts_and_tokenizer(wordpiece) -> None:
  cased = WordPieceTokenizer(token_cache_vocab(wordpiece), lowercase=False)
  assert token_cache.key(wordpiece, TEXTS) != token_cache.key(cased, TEXTS)
  assert token_cache.key(wordpiece, TEXTS) != token_cache.key(wordpiece, TEXTS[:-1] + [TEXTS[-1] + ' '])
  # Texts split differently are other texts, though their characters are the same.
  assert token_cache.key(wordpiece, ['ab', 'c']) != token_cache.key(wordpiece, ['a', 'bc'])
  assert token_cache.key(wordpiece, TEXTS) == token_cache.key(load_tokenizer('wordpiece'), list(TEXTS))


def test_a_damaged_entry_is_rebuilt(cache: Path, wordpiece, capsys: pytest.CaptureFixture) -> None:
  token_cache.encode(wordpiece, TEXTS)
  (entry,) = cache.glob('*.npz')
  entry.write_bytes(entry.read_bytes()[:100])  # a torn file, as a full disk leaves one
  tok = Counting(wordpiece)
  again = token_cache.encode(tok, TEXTS)
  assert tok.calls == 1 and 'does not read' in capsys.readouterr().out
  assert [a.tolist() for a in again] == wordpiece.encode_batch(TEXTS)
  assert token_cache.encode(Counting(wordpiece), TEXTS)[0].tolist() == again[0].tolist()  # rewritten whole


def test_off_and_small(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, wordpiece) -> None:
  monkeypatch.setenv(token_cache.ENV_VAR, '')
  assert token_cache.folder() is None
  tok = Counting(wordpiece)
  token_cache.encode(tok, TEXTS)
  token_cache.encode(tok, TEXTS)
  assert tok.calls == 2
  monkeypatch.setenv(token_cache.ENV_VAR, str(tmp_path))
  token_cache.encode(wordpiece, ['a short text'])  # milliseconds to encode: no file
  assert not list(tmp_path.glob('*.npz'))


def test_sentencepiece_fingerprint_follows_the_model(tmp_path: Path) -> None:
  corpus = [f'the {w} of the sea and the {w} of the land' for w in ('whale', 'ship', 'harpoon', 'captain', 'sailor', 'ocean')] * 80
  a = load_tokenizer('sentencepiece:auto,vocab_size=380', corpus=corpus, auto_dir=tmp_path / 'a')
  b = load_tokenizer('sentencepiece:auto,vocab_size=385', corpus=corpus, auto_dir=tmp_path / 'b')
  assert a.fingerprint != b.fingerprint and len(a.fingerprint) == 64


def test_a_trained_vocabulary_is_reused_by_a_new_workdir(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
  """The second workdir gets the first one's model byte for byte without training; other texts train anew."""
  spec = 'sentencepiece:auto,vocab_size=400'
  first = token_cache.load_tokenizer(spec, corpus=iter(TEXTS), auto_dir=tmp_path / 'a')
  (model,) = (tmp_path / 'a').glob('*.model')
  trained = []
  real_train = tokenization.train_sentencepiece
  monkeypatch.setattr(tokenization, 'train_sentencepiece', lambda *a, **k: trained.append(1) or real_train(*a, **k))
  capsys.readouterr()
  second = token_cache.load_tokenizer(spec, corpus=iter(TEXTS), auto_dir=tmp_path / 'b')
  assert not trained and 'copied from the cache' in capsys.readouterr().out
  assert (tmp_path / 'b' / model.name).read_bytes() == model.read_bytes()
  assert second.encode(TEXTS[3]) == first.encode(TEXTS[3])
  token_cache.load_tokenizer(spec, corpus=iter(TEXTS[:30]), auto_dir=tmp_path / 'c')
  assert trained == [1]
