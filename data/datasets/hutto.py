"""Reads the human-rated sentiment snippets of Hutto & Gilbert (ICWSM 2014), shipped in the vaderSentiment sdist.

The archive `additional_resources/hutto_ICWSM_2014.tar.gz` of PyPI 'vaderSentiment' 3.3.2 holds four
`<domain>_GroundTruth.txt` files: UTF-8, CRLF line ends, no newline after the last row, three tab-separated
fields per row: id, mean rating of 20+ raters in [-4, 4], text. Ids are plain numbers (movies, tweets) or
`<document>_<sentence>` (Amazon reviews, NYT editorials). Texts keep Pang & Lee's `''` quotes; HTML entities
(`&amp;`, `&lt;`, `&gt;`) are unescaped and runs of whitespace (left where dashes were removed) collapsed.

Splits are by document: `split_of('<domain>/<document>')` ~80/10/10, so all sentences of one review or
editorial land in the same split; tweets and movie snippets are their own documents.
"""

from __future__ import annotations

import dataclasses
import enum
import html
import tarfile
from pathlib import Path

from data.datasets import common

ARCHIVE = 'hutto_ICWSM_2014.tar.gz'
_ARCHIVE_PLACES = (f'additional_resources/{ARCHIVE}', ARCHIVE)  # the sdist layout, or the archive alone.


class Domain(enum.Enum):
  """A ground-truth file of the archive; the value is the file's prefix."""
  MOVIES = 'movieReviewSnippets'  # 10,605 sentences of Pang & Lee's movie reviews.
  TWEETS = 'tweets'  # 4,200 tweets.
  AMAZON = 'amazonReviewSnippets'  # 3,708 sentences of 309 Amazon reviews (Hu & Liu 2004).
  NYT = 'nytEditorialSnippets'  # 5,190 sentences of 500 New York Times editorials.

  @property
  def short(self) -> str:
    """The name used in config names and split keys: movies, tweets, amazon, nyt."""
    return {'movieReviewSnippets': 'movies', 'amazonReviewSnippets': 'amazon',
            'nytEditorialSnippets': 'nyt'}.get(self.value, self.value)


@dataclasses.dataclass(frozen=True)
class Snippet:
  """One rated row: `line` is its 0-based row in the file, `document` the id before '_' (or the id)."""
  line: int
  id: str
  document: str
  score: float
  text: str

  def split(self, domain: Domain) -> str:
    return common.split_of(f'{domain.short}/{self.document}', common.SPLITS_80_10_10)


def read_ground_truth(manual_dir: Path, domain: Domain, dataset: str) -> list[Snippet]:
  """All rows of `<domain>_GroundTruth.txt`, from the archive in `manual_dir` or an unpacked copy of it.

  `dataset` names the builder in the error for a missing file. Raises ValueError naming file and line for
  a row that is not `id<TAB>score<TAB>text`."""
  name = f'{domain.value}_GroundTruth.txt'
  unpacked = [manual_dir / 'hutto_ICWSM_2014' / name, manual_dir / name]
  for path in unpacked:
    if path.is_file():
      return parse_ground_truth(path.read_bytes(), str(path))
  for place in _ARCHIVE_PLACES:
    if (manual_dir / place).is_file():
      with tarfile.open(manual_dir / place) as archive:
        member = archive.extractfile(f'hutto_ICWSM_2014/{name}')
        if member is None:
          break
        return parse_ground_truth(member.read(), f'{manual_dir / place}:{name}')
  raise common.missing_raw_error(dataset, manual_dir, f'{_ARCHIVE_PLACES[0]} (or {name})')


def parse_ground_truth(data: bytes, where: str) -> list[Snippet]:
  """Parses the bytes of one ground-truth file (see the module docstring for the format)."""
  snippets = []
  for line, row in enumerate(data.decode('utf-8').splitlines()):
    if not row.strip():
      continue
    fields = row.split('\t')
    if len(fields) != 3:
      raise ValueError(f'{where}, row {line + 1}: expected id<TAB>score<TAB>text, got {len(fields)} fields')
    id_, score, text = fields
    snippets.append(Snippet(line=line, id=id_, document=id_.split('_')[0], score=float(score),
                            text=common.normalize_space(html.unescape(text))))
  return snippets
