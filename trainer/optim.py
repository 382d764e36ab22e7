"""`config.optim` -> an Optax optimizer and its learning-rate schedule.

  cfg = OptimConfig.from_dict(config.optim)
  tx, schedule = make_optimizer(cfg)          # tx: clip (global norm) -> AdamW | Adafactor
  schedule(step) -> learning rate of update number `step` (0-based, as Optax counts)

Weight decay (decoupled, AdamW's and Adafactor's) applies to dense kernels and embedding tables only:
biases, norm scales and biases, BERT's MLM vocabulary bias and T5's relative-position bias table never
decay (BERT and GPT-2 recipes; T5's bias table is an attention bias, not a projection). Embedding tables
(token, position, token type) do decay by default, as in BERT's and nanoGPT's AdamW; set
`optim.decay_embeddings=False` to exclude them too.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from core.config import known_fields, parse_enum


class OptimizerName(enum.Enum):
  ADAMW = 'adamw'
  ADAFACTOR = 'adafactor'


class Schedule(enum.Enum):
  WARMUP_COSINE = 'warmup_cosine'  # linear 0 -> lr over warmup_steps, cosine to end_lr_ratio*lr at num_steps.
  WARMUP_LINEAR = 'warmup_linear'  # linear 0 -> lr, then linear to end_lr_ratio*lr at num_steps (BERT).
  WARMUP_RSQRT = 'warmup_rsqrt'  # linear 0 -> lr, then lr * sqrt(warmup_steps / step) (Vaswani et al., T5).
  CONSTANT = 'constant'  # linear 0 -> lr over warmup_steps (if any), then lr.


class OptimConfigError(ValueError):
  """A `config.optim` field holds an invalid value; the message names the field and the valid values."""


# Leaf names (flax's) that weight decay applies to; everything else (bias, scale, lm_bias, relpos_bias) is
# excluded. A positive list: a new kind of parameter does not decay until someone decides it should.
_DECAYED_KERNELS = ('kernel',)
_DECAYED_EMBEDDINGS = ('embedding',)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimConfig:
  """Optimizer hyper-parameters. Defaults are AdamW for BERT/GPT-2-style pretraining."""

  name: OptimizerName = OptimizerName.ADAMW
  learning_rate: float = 1e-4  # peak learning rate (after warmup).
  schedule: Schedule = Schedule.WARMUP_COSINE
  warmup_steps: int = 0
  warmup_ratio: float = 0.0  # > 0: warmup_steps = round(warmup_ratio * num_steps) (HF's warmup_ratio), for
  #                            runs whose length is set in epochs; warmup_steps must then be 0.
  num_steps: int = 10_000  # where cosine / linear decay ends (usually train.num_steps).
  end_lr_ratio: float = 0.0  # final lr = end_lr_ratio * learning_rate (cosine, linear).
  weight_decay: float = 0.0  # decoupled; AdamW multiplies it by the lr, Adafactor does not (as in T5X).
  decay_embeddings: bool = True  # whether embedding tables decay along with kernels.
  clip_norm: float = 1.0  # global gradient-norm clipping threshold; 0 = off.
  b1: float = 0.9  # AdamW first moment.
  b2: float = 0.999  # AdamW second moment.
  eps: float = 1e-8  # AdamW denominator epsilon.
  # Adafactor (Shazeer & Stern 2018) with T5's settings: factored second moments, decay 1 - step^-0.8,
  # update clipping at RMS 1, step size relative to the parameter's RMS.
  adafactor_decay_rate: float = 0.8
  adafactor_clipping_threshold: float = 1.0
  adafactor_min_dim_size_to_factor: int = 128
  adafactor_multiply_by_parameter_scale: bool = True
  adafactor_momentum: float = 0.0  # first-moment decay; 0 = none (T5), which is what saves the memory.

  def __post_init__(self) -> None:
    for name, enum_type in (('name', OptimizerName), ('schedule', Schedule)):
      value = getattr(self, name)
      if not isinstance(value, enum_type):
        object.__setattr__(self, name, parse_enum(enum_type, value, field=f'optim.{name}', what=name,
                                                 error=OptimConfigError))
    if not 0.0 <= self.warmup_ratio < 1.0:
      raise OptimConfigError(f'optim.warmup_ratio={self.warmup_ratio!r}: must be in [0, 1) (0 = use warmup_steps)')
    if self.warmup_ratio:
      if self.warmup_steps:
        raise OptimConfigError(f'optim.warmup_ratio={self.warmup_ratio} and optim.warmup_steps={self.warmup_steps} '
                               'are both set: set one of them to 0')
      object.__setattr__(self, 'warmup_steps', max(1, round(self.warmup_ratio * self.num_steps))
                         if self.num_steps > 1 else 0)
    self._validate()

  @classmethod
  def from_dict(cls, values: Mapping[str, Any] | None) -> OptimConfig:
    """From `config.optim`; unknown keys are an error naming the valid ones."""
    return cls(**known_fields(cls, values, section='optim', error=OptimConfigError))

  @classmethod
  def for_run(cls, values: Mapping[str, Any] | None, num_steps: int) -> tuple[OptimConfig, str | None]:
    """`config.optim` for a run of `num_steps` updates, and a note when its warmup had to be fitted.

    A warmup as long as the run or longer (a short run of a config written for a long one:
    `--config.train.num_steps=20` of a setup that warms up over 30) is cut to a tenth of the run: the
    schedule then still reaches its peak and decays, and the note says so."""
    values = dict(values or {}) | {'num_steps': num_steps}
    warmup = values.get('warmup_steps', cls.warmup_steps)
    if not isinstance(warmup, int) or warmup < num_steps:
      return cls.from_dict(values), None
    fitted = min(max(1, num_steps // 10), num_steps - 1)
    note = (f'optim.warmup_steps={warmup} does not fit train.num_steps={num_steps}: warming up over {fitted} '
            f'step(s) instead (a tenth of the run; set --config.optim.warmup_steps to choose)')
    return cls.from_dict(values | {'warmup_steps': fitted}), note

  def _validate(self) -> None:
    def fail(name: str, why: str) -> None:
      raise OptimConfigError(f'optim.{name}={getattr(self, name)!r}: {why}')

    if not self.learning_rate > 0:
      fail('learning_rate', 'must be > 0')
    if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
      fail('warmup_steps', 'must be an integer >= 0')
    if not isinstance(self.num_steps, int) or self.num_steps < 1:
      fail('num_steps', 'must be a positive integer')
    if self.schedule in (Schedule.WARMUP_COSINE, Schedule.WARMUP_LINEAR) and self.warmup_steps >= self.num_steps:
      fail('warmup_steps', f'must be below optim.num_steps={self.num_steps} for schedule={self.schedule.value}')
    if self.schedule is Schedule.WARMUP_RSQRT and self.warmup_steps < 1:
      fail('warmup_steps', 'warmup_rsqrt decays as sqrt(warmup_steps / step) and needs warmup_steps >= 1')
    if not 0.0 <= self.end_lr_ratio <= 1.0:
      fail('end_lr_ratio', 'must be in [0, 1]')
    for name in ('weight_decay', 'clip_norm'):
      if getattr(self, name) < 0:
        fail(name, 'must be >= 0 (0 = off)')
    for name in ('b1', 'b2', 'adafactor_momentum'):
      if not 0.0 <= getattr(self, name) < 1.0:
        fail(name, 'must be in [0, 1)')
    if not self.eps > 0:
      fail('eps', 'must be > 0')


def make_schedule(cfg: OptimConfig) -> optax.Schedule:
  """step (0-based update count) -> learning rate; closed forms in `Schedule`'s comments."""
  peak, warmup = cfg.learning_rate, cfg.warmup_steps
  end = peak * cfg.end_lr_ratio
  warm = optax.linear_schedule(0.0, peak, warmup) if warmup else optax.constant_schedule(peak)
  match cfg.schedule:
    case Schedule.WARMUP_COSINE:
      after = optax.cosine_decay_schedule(peak, cfg.num_steps - warmup, alpha=cfg.end_lr_ratio)
    case Schedule.WARMUP_LINEAR:
      after = optax.linear_schedule(peak, end, cfg.num_steps - warmup)
    case Schedule.WARMUP_RSQRT:
      # join_schedules hands `after` the steps since the boundary; rsqrt needs the absolute step.
      after = lambda s: peak * jnp.sqrt(warmup / (jnp.asarray(s, jnp.float32) + warmup))
    case Schedule.CONSTANT:
      after = optax.constant_schedule(peak)
  return optax.join_schedules([warm, after], [warmup]) if warmup else after


def decay_mask(params: Any, *, decay_embeddings: bool = True) -> Any:
  """Tree of bools like `params`: True where weight decay applies (kernels; embedding tables if asked)."""
  names = _DECAYED_KERNELS + (_DECAYED_EMBEDDINGS if decay_embeddings else ())

  def leaf_name(path: tuple[Any, ...]) -> str:
    last = path[-1]
    return str(getattr(last, 'key', getattr(last, 'name', last)))

  return jax.tree_util.tree_map_with_path(lambda path, _: leaf_name(path) in names, params)


def make_optimizer(cfg: OptimConfig) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(global-norm clipping if clip_norm > 0, then AdamW or Adafactor with the schedule), and the schedule."""
  schedule = make_schedule(cfg)
  mask: Callable[[Any], Any] = lambda params: decay_mask(params, decay_embeddings=cfg.decay_embeddings)
  match cfg.name:
    case OptimizerName.ADAMW:
      tx = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=mask)
    case OptimizerName.ADAFACTOR:
      tx = optax.adafactor(schedule, min_dim_size_to_factor=cfg.adafactor_min_dim_size_to_factor,
                           decay_rate=cfg.adafactor_decay_rate,
                           multiply_by_parameter_scale=cfg.adafactor_multiply_by_parameter_scale,
                           clipping_threshold=cfg.adafactor_clipping_threshold or None,
                           momentum=cfg.adafactor_momentum or None, weight_decay_rate=cfg.weight_decay or None,
                           weight_decay_mask=mask)
  if cfg.clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), tx)
  return tx, schedule
