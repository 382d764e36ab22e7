"""`GenerateConfig`: the typed, validated description of how to decode (greedy, sampling or beam search).

Built once, at the boundary, from a mapping (`GenerateConfig.from_dict(config.eval.generate)`) or directly;
every field is checked at construction and an error names the field and the fix, before anything compiles.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

from core.config import ConfigError, known_fields, parse_enum


class Strategy(enum.Enum):
  GREEDY = 'greedy'  # argmax at every step.
  SAMPLE = 'sample'  # ancestral sampling from softmax(logits / temperature), optionally top-k / top-p truncated.
  BEAM = 'beam'  # beam search with a GNMT length penalty.


@dataclasses.dataclass(frozen=True, kw_only=True)
class GenerateConfig:
  """How `decoding.generate` picks tokens. Ids default to the T5 vocabulary (pad 0, eos 1, start = pad)."""

  strategy: Strategy = Strategy.GREEDY
  max_new_tokens: int = 32  # tokens generated per row (EOS included), the width of the returned `tokens`.
  temperature: float = 1.0  # SAMPLE: logits are divided by it; < 1 sharpens, > 1 flattens.
  top_k: int = 0  # SAMPLE: keep the k most likely tokens; 0 = off.
  top_p: float = 1.0  # SAMPLE: keep the smallest set of tokens with probability >= top_p (nucleus); 1 = off.
  num_beams: int = 1  # BEAM: hypotheses kept per row.
  length_penalty: float = 0.0  # BEAM: alpha of GNMT/T5X, scores are log p / ((5 + len) / 6) ** alpha; 0 = none.
  eos_id: int | None = 1  # a row stops after emitting it; None: always generate max_new_tokens.
  pad_id: int = 0  # fills `tokens` after EOS.
  decoder_start_id: int = 0  # encoder-decoder: the first decoder input (T5 starts with pad = 0).

  def __post_init__(self) -> None:
    object.__setattr__(self, 'strategy', parse_enum(Strategy, self.strategy, field='generate.strategy',
                                                    what='strategy'))
    self._validate()

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> GenerateConfig:
    """Builds from a mapping (e.g. a ConfigDict section); unknown keys are an error naming them."""
    return cls(**known_fields(cls, values, section='generate'))

  def to_dict(self) -> dict[str, Any]:
    """Plain values (the strategy as its string), accepted by `from_dict`."""
    return {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in dataclasses.asdict(self).items()}

  def replace(self, **changes: Any) -> GenerateConfig:
    return dataclasses.replace(self, **changes)

  def _validate(self) -> None:
    def fail(name: str, why: str) -> None:
      raise ConfigError(f'generate.{name}={getattr(self, name)!r}: {why}')

    def is_int(value: Any) -> bool:  # bool is an int subclass, but `top_k=True` is a mistake.
      return isinstance(value, int) and not isinstance(value, bool)

    def is_real(value: Any) -> bool:
      return isinstance(value, (int, float)) and not isinstance(value, bool)

    if not is_int(self.max_new_tokens) or self.max_new_tokens < 1:
      fail('max_new_tokens', 'must be a positive integer')
    for name in ('pad_id', 'decoder_start_id'):
      if not is_int(getattr(self, name)) or getattr(self, name) < 0:
        fail(name, 'must be a token id, an integer >= 0')
    if self.eos_id is not None and (not is_int(self.eos_id) or self.eos_id < 0):
      fail('eos_id', 'must be a token id (an integer >= 0), or None to always generate max_new_tokens')
    if not is_real(self.temperature) or not self.temperature > 0:
      fail('temperature', 'must be > 0 (for argmax decoding use strategy=greedy)')
    if not is_int(self.top_k) or self.top_k < 0:
      fail('top_k', 'must be an integer >= 0 (0 turns top-k off)')
    if not is_real(self.top_p) or not 0 < self.top_p <= 1:
      fail('top_p', 'must be in (0, 1] (1 turns nucleus sampling off)')
    if not is_int(self.num_beams) or self.num_beams < 1:
      fail('num_beams', 'must be a positive integer')
    # A negative alpha would reward short hypotheses and void the beam search's early-stopping bound.
    if not is_real(self.length_penalty) or self.length_penalty < 0:
      fail('length_penalty', 'must be >= 0 (0 turns the length penalty off)')
    # A setting the chosen strategy ignores is almost always a forgotten `strategy=`: say so, do not ignore it.
    if self.strategy is not Strategy.SAMPLE:
      for name, off in (('temperature', 1.0), ('top_k', 0), ('top_p', 1.0)):
        if getattr(self, name) != off:
          fail(name, f'only used by strategy=sample, not {self.strategy.value}; set generate.strategy=sample '
               f'or {name}={off}')
    if self.strategy is not Strategy.BEAM:
      for name, off in (('num_beams', 1), ('length_penalty', 0.0)):
        if getattr(self, name) != off:
          fail(name, f'only used by strategy=beam, not {self.strategy.value}; set generate.strategy=beam '
               f'or {name}={off}')
