"""`config.train`, typed (how long a run goes, in what batches, what it logs, evaluates and keeps), and the table
of the config tree's sections."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

from core import compile_cache
from core.config import defaults, known_fields, parse_enum
from data.tasks import DataConfig
from evaluation.config import EvalConfig
from model.config import ModelConfig
from trainer.distill import DistillConfig
from trainer.distributed import DistributedConfig
from trainer.mesh import MeshConfig
from trainer.optim import OptimConfig


class PrngImpl(enum.Enum):
  """The PRNG that draws the dropout masks (jax's implementations). On this project's CPU threefry was the
  fastest (t5_tiny step 594 ms against 739 ms with rbg); on GPUs rbg is reported faster (Levanter)."""
  THREEFRY = 'threefry2x32'  # jax's default: the same bits on every backend and mesh
  RBG = 'rbg'  # XLA's RngBitGenerator; bits may differ between backends and shardings
  UNSAFE_RBG = 'unsafe_rbg'  # rbg with a cheaper, lower-quality key derivation


# The step count of a run measured in epochs before its data is read (to check the optimizer config early,
# and for plans, whose memory does not depend on it): longer than any warmup.
UNKNOWN_STEPS = 1_000_000


class NanPolicy(enum.Enum):
  HALT = 'halt'  # stop with the step number and the last good checkpoint
  SKIP = 'skip'  # drop the update of a step whose gradients are not finite, and go on


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
  """`config.train`, typed."""

  batch_size: int  # global, all processes together
  # The run's length: num_steps updates, or num_epochs passes over the training split (fine-tuning:
  # ceil(num_epochs * training examples / batch_size) updates). Exactly one of them is set (> 0).
  num_steps: int = 0
  num_epochs: float = 0.0
  microbatches: int = 1
  seed: int = 0
  z_loss: float = 0.0
  # Token objectives: compute the vocabulary logits this many positions of every row at a time, in the
  # forward and again in the backward pass, never all (B, T, V) at once (0 = all at once). Same loss and
  # gradients; less memory, and on the CPU a faster step (bench/RESULTS.md).
  logits_chunk: int = 0
  prng_impl: PrngImpl = PrngImpl.THREEFRY  # of the dropout masks (the initialisation always uses threefry)
  log_every: int = 50
  eval_every: int = 500
  eval_batches: int = 20
  checkpoint_every: int = 1000
  keep: int = 3
  init_from: str = ''  # one of our workdirs, or an HF checkpoint directory
  nan_policy: NanPolicy = NanPolicy.HALT
  # Regression: the head predicts in units of the training labels' mean and std (model.target_mean /
  # target_scale, from the training split), as it would on standardized labels; predictions stay in label units.
  standardize_targets: bool = False
  # XLA's persistent compilation cache (core/compile_cache.py): 'auto' ($TJ_COMPILATION_CACHE, else
  # ~/.cache/transformers_jax/jax_cache), a folder, or '' for off. A rerun with the same shapes compiles nothing.
  compilation_cache: str = compile_cache.AUTO

  def __post_init__(self) -> None:
    object.__setattr__(self, 'nan_policy', parse_enum(NanPolicy, self.nan_policy, field='train.nan_policy',
                                                      what='nan policy', error=ValueError))
    object.__setattr__(self, 'prng_impl', parse_enum(PrngImpl, self.prng_impl, field='train.prng_impl',
                                                     what='PRNG implementation', error=ValueError))
    if self.logits_chunk < 0:
      raise ValueError(f'train.logits_chunk={self.logits_chunk}: must be >= 0 positions (0 = all logits at once)')
    if self.num_epochs < 0 or self.num_steps < 0:
      raise ValueError(f'train.num_steps={self.num_steps}, train.num_epochs={self.num_epochs}: must be >= 0')
    if self.num_epochs > 0 and self.num_steps > 0:
      raise ValueError(f'train.num_steps={self.num_steps} and train.num_epochs={self.num_epochs} both set the length '
                       f'of the run: add --config.train.num_epochs=0 to train {self.num_steps} steps, or '
                       f'--config.train.num_steps=0 to train {self.num_epochs:g} epochs')
    if not (self.num_epochs > 0 or self.num_steps > 0):
      raise ValueError('train.num_steps=0 and train.num_epochs=0: set the length of the run, e.g. '
                       '--config.train.num_steps=1000 (or --config.train.num_epochs=3 for a fine-tune)')
    for name in ('batch_size', 'log_every', 'eval_every', 'eval_batches', 'checkpoint_every', 'keep'):
      if getattr(self, name) < 1:
        raise ValueError(f'train.{name}={getattr(self, name)}: must be a positive integer')

  @classmethod
  def from_dict(cls, values: Mapping[str, Any] | None) -> TrainConfig:
    """From `config.train`; unknown keys are an error naming the closest valid ones."""
    return cls(**known_fields(cls, values, section='train', error=ValueError))


def sections() -> dict[str, tuple[type, tuple[str, ...]]]:
  """The config tree's sections: name -> (the dataclass that types it, its fields that are not config keys).
  One table for the setups (configs/presets.make_config) and for reading configs saved before a field was
  added (`schema_defaults`)."""
  return {'model': (ModelConfig, ()), 'data': (DataConfig, ()),
          'optim': (OptimConfig, ('num_steps',)),  # train.num_steps (or num_epochs) sets it
          'mesh': (MeshConfig, ()), 'train': (TrainConfig, ()),
          'eval': (EvalConfig, ('objective',)),  # data.objective
          'distributed': (DistributedConfig, ()), 'distill': (DistillConfig, ())}


def schema_defaults() -> dict[str, dict[str, Any]]:
  """{section: {field: default}}: what a run used for a field its saved config lacks (a field added since)."""
  return {name: defaults(cls, exclude=exclude) for name, (cls, exclude) in sections().items()}
