"""Where a run's start-up goes: seconds per phase before its first step, as one line and one metrics row.

  clock = timing.Clock()                  # started at launch; active for this thread from here on
  with timing.phase(Phase.TOKENIZE):      # anywhere below (data/ too): a no-op when no clock is active
    ids = tokenizer.encode_batch(texts)
  clock.stop(); print(clock.line())       # 'start-up 41.2 s: tokenize 6.1, compile 30.2 (6 programs), ..., other 2.2'

A phase inside another counts for the inner one alone (tokenizing while the source is read is 'tokenize', not
'source'), so the phases add up to the total with the rest reported as 'other'.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import time
from collections.abc import Iterator


class Phase(enum.Enum):
  """The start-up phases, in the order the line lists them."""
  CHECKS = 'checks'  # configs, the workdir's saved config, the source's TaskInfo, the model against the data
  TOKENIZER = 'tokenizer'  # loading (or training, on the first run) the tokenizer
  TOKENIZE = 'tokenize'  # tokenizing the splits (or reading them from the token cache)
  PIPELINE = 'pipeline'  # the batch order and the grain pipeline
  COMPILE = 'compile'
  TEACHER = 'teacher'  # distill.teacher onto the mesh
  RESTORE = 'restore'  # the latest checkpoint
  INIT = 'init'  # initialising the parameters (+ train.init_from)
  FIRST_BATCH = 'first batch'


_ACTIVE: contextvars.ContextVar[Clock | None] = contextvars.ContextVar('startup_clock', default=None)


class Clock:
  """Seconds per `Phase` from its creation to `stop()`; `notes` add a word to a phase ('6 programs')."""

  def __init__(self, activate: bool = True) -> None:
    self._start = time.perf_counter()
    self._end: float | None = None
    self.seconds: dict[Phase, float] = {}
    self.notes: dict[Phase, str] = {}
    self._open: list[list[Phase | float]] = []  # [phase, seconds of inner phases] of the phases in progress
    self._token = _ACTIVE.set(self) if activate else None

  @contextlib.contextmanager
  def phase(self, name: Phase) -> Iterator[None]:
    start = time.perf_counter()
    self._open.append([name, 0.0])
    try:
      yield
    finally:
      _, inner = self._open.pop()
      spent = time.perf_counter() - start
      self.seconds[name] = self.seconds.get(name, 0.0) + spent - inner
      if self._open:
        self._open[-1][1] += spent

  def stop(self) -> None:
    """Ends the start-up: the total is fixed and the clock no longer collects phases."""
    if self._end is None:
      self._end = time.perf_counter()
      if self._token is not None:
        _ACTIVE.reset(self._token)

  @property
  def total(self) -> float:
    return (self._end or time.perf_counter()) - self._start

  @property
  def other(self) -> float:
    return max(self.total - sum(self.seconds.values()), 0.0)

  def line(self) -> str:
    """'start-up 41.2 s: tokenizer 0.3, tokenize 6.1, compile 30.2 (6 programs), init 2.0, other 2.2'."""
    parts = [f'{p.value} {self.seconds[p]:.1f}' + (f' ({self.notes[p]})' if p in self.notes else '')
             for p in Phase if p in self.seconds]
    return f'start-up {self.total:.1f} s: ' + ', '.join(parts + [f'other {self.other:.1f}'])

  def as_metrics(self) -> dict[str, float]:
    """{'<phase>_s': seconds, 'other_s', 'total_s'}: the metrics row of the start-up."""
    out = {f'{p.value.replace(" ", "_")}_s': self.seconds[p] for p in Phase if p in self.seconds}
    return out | {'other_s': self.other, 'total_s': self.total}


@contextlib.contextmanager
def phase(name: Phase) -> Iterator[None]:
  """`name`'s time on the active clock of this thread, if any (library code times itself at no cost)."""
  clock = _ACTIVE.get()
  if clock is None or clock._end is not None:  # pylint: disable=protected-access
    yield
    return
  with clock.phase(name):
    yield
