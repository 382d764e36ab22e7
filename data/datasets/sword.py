"""Reads the verses of a SWORD zText Bible module (numpy, zlib and the standard library only).

  module = read_conf(sword_dir, 'engWEB2015eb')     # sword_dir: the folder holding mods.d/ and modules/
  verses = read_verses(module)                      # every verse slot of its versification, in order
  text = clean(verses[0].markup)                    # the OSIS markup as plain text

A zText module (`ModDrv=zText`) keeps each testament in three files under its `DataPath`:
  <t>.bzz  zlib streams, one per block (a book, for `BlockType=BOOK`)
  <t>.bzs  12-byte little-endian records, one per block: offset in .bzz, compressed size, uncompressed size
  <t>.bzv  10-byte little-endian records, one per index entry: block number (u32), offset in the decompressed
           block (u32), size (u16). Size 0: no text. An entry equal to the one before it: the same text, a
           linked verse range (the verses are rendered as one).
The entries follow the versification (data/datasets/versification.py): the module header, the testament header,
then per book an introduction entry and per chapter a heading entry (which holds `<chapter osisID="Gen.1" .../>`)
followed by one entry per verse. `read_verses` checks the entry count and every chapter heading against that
layout, so a wrong table or a file of another versification fails naming the book and chapter.

Cleaning (`clean`): notes (footnotes, cross references), non-canonical titles (section headings, 'BOOK 1') and
speaker labels go with their words; every other tag is dropped and its words kept (a psalm's canonical title
stays), entities are unescaped, whitespace is collapsed.
"""

from __future__ import annotations

import dataclasses
import html
import re
import zlib
from pathlib import Path

import numpy as np

from data.datasets.versification import Book, Testament, Versification, canon

_BLOCK = np.dtype([('offset', '<u4'), ('compressed', '<u4'), ('size', '<u4')])  # a .bzs record
_ENTRY = np.dtype([('block', '<u4'), ('offset', '<u4'), ('size', '<u2')])  # a .bzv record
_HEADERS = 2  # the module header and the testament header precede the first book's entries


class SwordError(ValueError):
  """A module file that cannot be read as its .conf says; the message names the file and what is wrong."""


@dataclasses.dataclass(frozen=True)
class Module:
  """What a module's .conf file (mods.d/<name>.conf) says about its files."""
  name: str  # 'engWEB2015eb'
  data_dir: Path  # the folder of its ot/nt .bzs, .bzv, .bzz files
  versification: Versification
  lang: str  # 'en'


@dataclasses.dataclass(frozen=True)
class Verse:
  book: str  # the OSIS book id: 'Gen'
  chapter: int
  verse: int
  markup: str  # OSIS markup; '' for a verse without text
  linked: bool  # part of a linked range: its text is that of several verses (the first holds it, the rest repeat it)


def read_conf(sword_dir: Path, name: str) -> Module:
  """The module `name` described by `sword_dir`/mods.d/<name lowercased>.conf (or <name>.conf)."""
  candidates = [sword_dir / 'mods.d' / f'{name.lower()}.conf', sword_dir / 'mods.d' / f'{name}.conf']
  path = next((p for p in candidates if p.is_file()), None)
  if path is None:
    raise SwordError(f'SWORD module {name}: no {candidates[1]} (the module is not installed in {sword_dir})')
  fields: dict[str, str] = {}
  for line in path.read_text(encoding='utf-8').splitlines():
    key, sep, value = line.partition('=')
    if sep and not line.startswith('#'):
      fields.setdefault(key.strip(), value.strip())
  if fields.get('ModDrv', '').lower() != 'ztext':
    raise SwordError(f'{path}: ModDrv={fields.get("ModDrv")!r}; only zText modules can be read')
  try:
    versification = Versification(fields.get('Versification', 'KJV'))  # SWORD's default is KJV
  except ValueError:
    raise SwordError(f'{path}: Versification={fields["Versification"]!r} has no table here; known: '
                     f'{", ".join(v.value for v in Versification)} (data/datasets/versification.py)') from None
  data_path = fields.get('DataPath', '').removeprefix('./')
  if not data_path:
    raise SwordError(f'{path}: no DataPath=; cannot find the module files')
  return Module(name, sword_dir / data_path, versification, fields.get('Lang', ''))


def read_verses(module: Module) -> list[Verse]:
  """Every verse slot of both testaments of `module`, in canonical order (empty ones with markup '')."""
  return [verse for testament in Testament for verse in _testament(module, testament)]


def _file(module: Module, testament: Testament, suffix: str) -> bytes:
  path = module.data_dir / f'{testament.value}.{suffix}'
  if not path.is_file():
    raise SwordError(f'SWORD module {module.name}: {path} is missing (the module files are incomplete; fetch the '
                     'package again)')
  return path.read_bytes()


def _records(data: bytes, dtype: np.dtype, path: Path) -> np.ndarray:
  if len(data) % dtype.itemsize:
    raise SwordError(f'{path}: {len(data)} bytes is not a whole number of {dtype.itemsize}-byte records; the file '
                     'is truncated or not a zText index')
  return np.frombuffer(data, dtype)


class _Blocks:
  """The decompressed blocks of one testament, each inflated on first use and checked against its .bzs size."""

  def __init__(self, module: Module, testament: Testament) -> None:
    self._path = module.data_dir / f'{testament.value}.bzz'
    self._records = _records(_file(module, testament, 'bzs'), _BLOCK, self._path.with_suffix('.bzs'))
    self._data = _file(module, testament, 'bzz')
    self._cache: dict[int, bytes] = {}

  def get(self, number: int) -> bytes:
    if number not in self._cache:
      if number >= len(self._records):
        index, blocks = self._path.with_suffix('.bzv'), self._path.with_suffix('.bzs')
        raise SwordError(f'{index}: block {number} does not exist ({blocks} lists {len(self._records)})')
      offset, compressed, size = (int(x) for x in self._records[number])
      try:
        block = zlib.decompress(self._data[offset:offset + compressed])
      except zlib.error as e:
        raise SwordError(f'{self._path}: block {number} (bytes {offset}..{offset + compressed}) is not a zlib '
                         f'stream ({e}); the file is corrupt: fetch the package again') from None
      if len(block) != size:
        raise SwordError(f'{self._path}: block {number} inflates to {len(block)} bytes, '
                         f'{self._path.with_suffix(".bzs")} says {size}; the file is corrupt')
      self._cache[number] = block
    return self._cache[number]


_CHAPTER_ID = re.compile(r'<chapter\b[^>]*\bosisID="([^"]+)"')


def _testament(module: Module, testament: Testament) -> list[Verse]:
  index_path = module.data_dir / f'{testament.value}.bzv'
  entries = _records(_file(module, testament, 'bzv'), _ENTRY, index_path)
  books = canon(module.versification, testament)
  expected = _HEADERS + sum(1 + len(b.verses) + sum(b.verses) for b in books)
  if len(entries) != expected:
    raise SwordError(f'{index_path}: {len(entries)} index entries, but {module.versification.value} (the .conf\'s '
                     f'Versification) has {expected} for the {testament.name}; wrong table or wrong module')
  blocks = _Blocks(module, testament)

  def text(i: int) -> str:
    number, offset, size = (int(x) for x in entries[i])
    if not size:
      return ''
    block = blocks.get(number)
    if offset + size > len(block):
      raise SwordError(f'{index_path}: entry {i} reads bytes {offset}..{offset + size} of block {number}, which has '
                       f'{len(block)}; the index is corrupt')
    try:
      return block[offset:offset + size].decode('utf-8')
    except UnicodeDecodeError as e:
      raise SwordError(f'{index_path}: entry {i} (block {number}) is not UTF-8 ({e})') from None

  def same(i: int) -> bool:  # an entry equal to a neighbour with text: a linked verse range
    return bool(entries[i]['size']) and entries[i] == entries[i - 1]

  verses, i = [], _HEADERS
  for book in books:
    i += 1  # the book's introduction
    for chapter, count in enumerate(book.verses, start=1):
      _check_heading(index_path, i, text(i), book, chapter)
      i += 1
      for verse in range(1, count + 1):
        linked = same(i) or (i + 1 < len(entries) and same(i + 1))
        verses.append(Verse(book.osis, chapter, verse, text(i), linked))
        i += 1
  return verses


def _check_heading(path: Path, i: int, markup: str, book: Book, chapter: int) -> None:
  """A chapter heading entry names its chapter; one that names another means the table and the file disagree."""
  found = _CHAPTER_ID.search(markup)
  if found and found.group(1) != f'{book.osis}.{chapter}':
    raise SwordError(f'{path}: entry {i} should be the heading of {book.name} {chapter} ({book.osis}.{chapter}) but '
                     f'holds {found.group(1)}: the versification table of {book.name} does not match the module')


# Elements deleted with their content: notes, speaker labels, and titles that are not part of the text.
_NOTE = re.compile(r'<note\b[^>]*?(?<!/)>.*?</note>', re.S)
_SPEAKER = re.compile(r'<speaker\b[^>]*>.*?</speaker>', re.S)
_TITLE = re.compile(r'<title\b([^>]*?)(?<!/)>(.*?)</title>', re.S)
# Tags that separate words (lines, paragraphs, milestones): a space; any other tag (<w>, <q>, <transChange>): nothing.
_SEPARATOR = re.compile(r'</?(?:chapter|div|l|lb|lg|list|item|milestone|p|title|verse|note|speaker)\b[^>]*>')
_TAG = re.compile(r'<[^>]*>')


def clean(markup: str) -> str:
  """The words of an OSIS verse: notes and non-canonical titles deleted, tags stripped, entities unescaped.

  >>> clean('<w lemma="strong:H0430">God</w><note placement="foot">Hebrew: Elohim</note><w>created</w> &amp; saw')
  'God created & saw'
  """
  text = _NOTE.sub(' ', markup)
  text = _SPEAKER.sub(' ', text)
  text = _TITLE.sub(lambda m: m.group(0) if 'canonical="true"' in m.group(1) else ' ', text)
  text = _SEPARATOR.sub(' ', text)
  text = _TAG.sub('', text)
  return ' '.join(html.unescape(text).split())
