"""The SWORD reader (data/datasets/sword.py), the versification tables and the bible builder, on tiny modules
written in the real file format (tests/fixtures/sword_modules.py); no network."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from data import prepare, sources
from data.datasets import bible, common, sword
from data.datasets.bible import Drop, Text
from data.datasets import versification as V
from data.datasets.versification import Versification
from tests.fixtures import raw_packages, sword_modules

VERSES = {('Gen', 1, 1): '<w lemma="strong:H0430">In</w> the beginning<note placement="foot">Hebrew: x</note>.',
          ('Gen', 1, 2): 'The earth &amp; the sea.',
          ('Exod', 1, 1): 'Now these are the names.',  # the next book: its own block
          ('Matt', 1, 1): 'The book of the genealogy.'}


@pytest.fixture(scope='module')
def module(tmp_path_factory: pytest.TempPathFactory) -> sword.Module:
  """Gen 1:1-2 and Exodus 1:1 (two blocks), Gen 1:3 linked to 1:2, Gen 1:4 empty, Matthew 1:1 in the NT."""
  root = tmp_path_factory.mktemp('sword')
  sword_modules.write_module(root, 'Tiny', Versification.KJV, VERSES, linked={('Gen', 1, 3)})
  return sword.read_conf(root, 'Tiny')


def test_versification_tables() -> None:
  kjv = [b for t in V.Testament for b in V.canon(Versification.KJV, t)]
  assert (len(kjv), sum(len(b.verses) for b in kjv), sum(sum(b.verses) for b in kjv)) == (66, 1189, 31102)
  nrsva = {b.osis: b.verses for t in V.Testament for b in V.canon(Versification.NRSVA, t)}
  # The KJV's verses, one more in each of 3 John 1 and Revelation 12, and the deuterocanon's.
  assert len(nrsva) == 83 and sum(map(sum, nrsva.values())) == 31102 + 2 + 6687
  assert nrsva['3John'] == (15,) and nrsva['Rev'][11] == 18 and nrsva['Ps'][118] == 176


def test_reader(module: sword.Module) -> None:
  assert module.versification is Versification.KJV and module.lang == 'en'
  verses = sword.read_verses(module)
  assert len(verses) == 31102
  by_key = {(v.book, v.chapter, v.verse): v for v in verses}
  assert (verses[0].book, verses[0].chapter, verses[0].verse) == ('Gen', 1, 1) and verses[-1].book == 'Rev'
  assert by_key[('Gen', 1, 1)].markup == VERSES[('Gen', 1, 1)] and not by_key[('Gen', 1, 1)].linked
  assert by_key[('Gen', 1, 2)].linked and by_key[('Gen', 1, 3)].linked  # the range: its first and the linked one
  assert by_key[('Gen', 1, 3)].markup == VERSES[('Gen', 1, 2)]
  assert by_key[('Gen', 1, 4)].markup == '' and not by_key[('Gen', 1, 4)].linked
  assert by_key[('Exod', 1, 1)].markup == VERSES[('Exod', 1, 1)]
  assert by_key[('Matt', 1, 1)].markup == VERSES[('Matt', 1, 1)]
  assert sum(bool(v.markup) for v in verses) == 5


@pytest.mark.parametrize('markup, text', [
    ('<w lemma="strong:H0430">God</w><note placement="foot"><reference>1:1 </reference>Elohim.</note><w>created</w>',
     'God created'),
    ('<title type="x-section">The Fall</title> <w>Now</w>  the\nserpent', 'Now the serpent'),
    ('<title>BOOK 1</title><title canonical="true" type="psalm">A Psalm by David.</title> Yahweh, how',
     'A Psalm by David. Yahweh, how'),
    ('<speaker>Beloved</speaker> <l level="1" sID="x"/>Let him kiss me<l eID="x"/><l sID="y"/>with kisses',
     'Let him kiss me with kisses'),
    ('Jehová &amp; &#8220;Dios&#8221; <transChange type="added">están</transChange> <milestone type="x"/>aquí',
     'Jehová & \u201cDios\u201d están aquí'),
])
def test_clean(markup: str, text: str) -> None:
  assert sword.clean(markup) == text


def test_missing_module_file(tmp_path: Path) -> None:
  data_dir = sword_modules.write_module(tmp_path, 'Tiny', Versification.KJV, VERSES)
  (data_dir / 'nt.bzz').unlink()
  with pytest.raises(sword.SwordError, match=r'Tiny: .*Tiny/nt\.bzz is missing'):
    sword.read_verses(sword.read_conf(tmp_path, 'Tiny'))
  with pytest.raises(sword.SwordError, match=r'Other: no .*mods\.d/Other\.conf'):
    sword.read_conf(tmp_path, 'Other')


def test_corrupt_block(tmp_path: Path) -> None:
  data_dir = sword_modules.write_module(tmp_path, 'Tiny', Versification.KJV, VERSES)
  data = bytearray((data_dir / 'ot.bzz').read_bytes())
  data[2:6] = b'\xff\xff\xff\xff'  # inside Genesis' zlib stream (block 0)
  (data_dir / 'ot.bzz').write_bytes(bytes(data))
  with pytest.raises(sword.SwordError, match=r'Tiny/ot\.bzz: block 0 .* is not a zlib stream'):
    sword.read_verses(sword.read_conf(tmp_path, 'Tiny'))


def test_wrong_versification_names_the_chapter(tmp_path: Path) -> None:
  """A heading entry that names another chapter (a wrong table) and an index of the wrong size fail loudly."""
  sword_modules.write_module(tmp_path, 'Tiny', Versification.KJV, VERSES,
                             headings={('Exod', 1): '<chapter osisID="Gen.51"/>'})
  with pytest.raises(sword.SwordError, match=r'ot\.bzv: entry \d+ should be the heading of Exodus 1 \(Exod\.1\) '
                                             r'but holds Gen\.51'):
    sword.read_verses(sword.read_conf(tmp_path, 'Tiny'))
  conf = tmp_path / 'mods.d' / 'tiny.conf'
  conf.write_text(conf.read_text().replace('Versification=KJV', 'Versification=NRSVA'))
  with pytest.raises(sword.SwordError, match=r'ot\.bzv: 24115 index entries, but NRSVA .* has 31027 for the OT'):
    sword.read_verses(sword.read_conf(tmp_path, 'Tiny'))


def _texts(rows: dict[tuple[str, int, int], str], linked: set = frozenset()) -> dict:
  return {key: Text(text, key in linked) for key, text in rows.items()}


def test_align_drops_shifted_chapters() -> None:
  """Job 38's last verse is empty in Spanish (it moved into 39, which is then shifted); Acts 8 lacks a verse in
  English; the other rules drop single verses."""
  en, es = {}, {}
  for book, chapter in (('Job', 37), ('Job', 38), ('Job', 39), ('Acts', 8)):
    for verse in range(1, 4):
      en[(book, chapter, verse)] = f'English {book} {chapter}:{verse} words'
      es[(book, chapter, verse)] = f'Español {book} {chapter}:{verse} palabras'
  es[('Job', 38, 3)] = ''  # moved into Job 39
  en[('Acts', 8, 2)] = ''  # a verse the English omits
  en[('Job', 37, 1)] = 'Short.'  # a pair out of the length ratio
  en[('Job', 37, 2)] = es[('Job', 37, 2)] = ''  # a verse neither has
  rev = {('Rev', 22, 20): 'Come, Lord Jesus.', ('Rev', 22, 21): 'The grace of the Lord Jesus. Glossary ...'}
  en |= rev | {('Rev', 22, 19): 'Linked verses.'}
  es |= {k: 'Ven, Señor Jesús. La gracia.' for k in rev} | {('Rev', 22, 19): 'Versos unidos.'}
  assert bible.shifted_chapters(_texts(en), _texts(es)) == {('Job', 38), ('Job', 39), ('Acts', 8)}
  pairs, dropped = bible.align(_texts(en, {('Rev', 22, 19)}), _texts(es))
  assert [p.key for p in pairs] == ['Job.37.3', 'Rev.22.20']
  assert dropped == collections.Counter({Drop.CHAPTER: 9, Drop.RATIO: 1, Drop.EMPTY: 1, Drop.LINKED: 1,
                                         Drop.GLOSSARY: 1})


@pytest.mark.parametrize('text, fixed', [
    ('EN el principio', 'En el principio'), ('Y DESPUÉS movió', 'Y después movió'), ('¡OH Jehová', '¡Oh Jehová'),
    ('In the beginning', 'In the beginning'), ('I AM THAT I AM', 'I AM THAT I AM')])
def test_unshout(text: str, fixed: str) -> None:
  assert bible.unshout(text) == fixed


@pytest.fixture(scope='module')
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
  raw = raw_packages.write_raw_cache(tmp_path_factory.mktemp('raw'))
  data_dir = tmp_path_factory.mktemp('tfds')
  for name in ('bible/en-es', 'bible/es-en'):
    prepare.build(name, data_dir, raw_cache_dir=raw)
  return data_dir


def test_builder_splits_by_chapter(built: Path) -> None:
  """Every chapter in the split its hash names, both directions the same records; the split is stable."""
  chapters = collections.defaultdict(set)
  for split in ('train', 'validation', 'test'):
    source = sources.open_source('builtin:bible/en-es', split, data_dir=built, build=False)
    for record in (source[i] for i in range(len(source))):
      chapters[split].add((record['book'], int(record['chapter'])))
      assert record['en'] == sword.clean(sword_modules.ENGLISH[(record['book'], record['chapter'], record['verse'])])
  expected = collections.defaultdict(set)
  for book, chapter in sword_modules.BIBLE_CHAPTERS:
    expected[common.split_of(f'bible/{book}.{chapter}', common.SPLITS_98_1_1)].add((book, chapter))
  assert chapters == expected and sum(map(len, chapters.values())) == 4
  assert common.split_of('bible/Gen.1', common.SPLITS_98_1_1) == 'train'  # the split of a chapter never changes
  first = sources.open_source('builtin:bible/en-es', 'train', data_dir=built, build=False)[0]
  assert first['es'].startswith('En el capítulo')  # unshouted
  reverse = sources.open_source('builtin:bible/es-en', 'train', data_dir=built, build=False)
  assert reverse.info.text_features == ('es',) and reverse.info.target_feature == 'en' and reverse[0] == first
