"""`config.train`, typed (how long a run goes, in what batches, what it logs, evaluates and keeps), and the table
of the config tree's sections."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

from core.config import defaults, known_fields, parse_enum
from data.tasks import DataConfig
from evaluation.config import EvalConfig
from model.config import ModelConfig
from trainer.distributed import DistributedConfig
from trainer.mesh import MeshConfig
from trainer.optim import OptimConfig


class NanPolicy(enum.Enum):
  HALT = 'halt'  # stop with the step number and the last good checkpoint
  SKIP = 'skip'  # drop the update of a step whose gradients are not finite, and go on


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
  """`config.train`, typed."""

  num_steps: int  # ignored when num_epochs > 0
  batch_size: int  # global, all processes together
  num_epochs: float = 0.0  # > 0: num_steps = ceil(num_epochs * training examples / batch_size) (fine-tuning)
  microbatches: int = 1
  seed: int = 0
  z_loss: float = 0.0
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

  def __post_init__(self) -> None:
    object.__setattr__(self, 'nan_policy', parse_enum(NanPolicy, self.nan_policy, field='train.nan_policy',
                                                      what='nan policy', error=ValueError))
    if self.num_epochs < 0:
      raise ValueError(f'train.num_epochs={self.num_epochs}: must be >= 0 (0 = train.num_steps steps)')
    for name in ('num_steps', 'batch_size', 'log_every', 'eval_every', 'eval_batches', 'checkpoint_every', 'keep'):
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
          'distributed': (DistributedConfig, ())}


def schema_defaults() -> dict[str, dict[str, Any]]:
  """{section: {field: default}}: what a run used for a field its saved config lacks (a field added since)."""
  return {name: defaults(cls, exclude=exclude) for name, (cls, exclude) in sections().items()}
