"""core/timing.py: the start-up breakdown's clock, on a fake clock (exact seconds)."""

from __future__ import annotations

import pytest

from core import timing
from core.timing import Phase


@pytest.fixture
def ticks(monkeypatch) -> list[float]:
  """perf_counter reads these in turn."""
  values: list[float] = []
  monkeypatch.setattr(timing.time, 'perf_counter', lambda: values.pop(0))
  return values


def test_nested_phases_count_for_the_inner_one_and_the_rest_is_other(ticks):
  # start 0; checks 1..10 holding tokenizer 2..3 and tokenize 4..8; compile 10..40; stop at 42.
  ticks.extend([0.0, 1.0, 2.0, 3.0, 4.0, 8.0, 10.0, 10.0, 40.0, 42.0])
  clock = timing.Clock()
  with timing.phase(Phase.CHECKS):
    with timing.phase(Phase.TOKENIZER):
      pass
    with timing.phase(Phase.TOKENIZE):
      pass
  with timing.phase(Phase.COMPILE):
    pass
  clock.notes[Phase.COMPILE] = '6 programs'
  clock.stop()
  assert clock.seconds == {Phase.CHECKS: 4.0, Phase.TOKENIZER: 1.0, Phase.TOKENIZE: 4.0, Phase.COMPILE: 30.0}
  assert clock.line() == ('start-up 42.0 s: checks 4.0, tokenizer 1.0, tokenize 4.0, compile 30.0 (6 programs), '
                          'other 3.0')
  assert clock.as_metrics() == {'checks_s': 4.0, 'tokenizer_s': 1.0, 'tokenize_s': 4.0, 'compile_s': 30.0,
                                'other_s': 3.0, 'total_s': 42.0}
  with timing.phase(Phase.INIT):  # stopped: no longer active, nothing read from the clock
    pass
  assert Phase.INIT not in clock.seconds


def test_phase_without_a_clock_does_nothing(ticks):
  with timing.phase(Phase.TOKENIZE):
    pass
  assert not ticks  # never read the clock
