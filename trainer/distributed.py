"""Multi-host start-up on JAX's own distributed runtime.

`jax.distributed.initialize` must run before anything touches a device. It is called when the config
names a coordinator (explicit address, process count and id) or when the environment is a cluster JAX
recognises by itself (SLURM with several tasks, Open MPI, TPU pods, an explicit JAX_COORDINATOR_ADDRESS);
a plain single-process run skips it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import jax

from core.config import known_fields

# Environment variables whose presence means a launcher started several cooperating processes.
_CLUSTER_SIGNS = {
    'SLURM_NTASKS': lambda v: int(v) > 1,  # srun --ntasks N (SLURM_JOB_ID alone may be a 1-task job)
    'OMPI_COMM_WORLD_SIZE': lambda v: int(v) > 1,  # mpirun -np N
    'JAX_COORDINATOR_ADDRESS': bool,
    'TPU_WORKER_HOSTNAMES': lambda v: ',' in v,  # a multi-host TPU slice
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistributedConfig:
  """`config.distributed`: empty means "ask JAX's cluster detection (SLURM, TPU pods, Open MPI)"."""

  coordinator_address: str = ''  # host:port of process 0
  num_processes: int = 0  # 0: auto
  process_id: int = -1  # -1: auto

  @classmethod
  def from_dict(cls, values: Mapping[str, Any] | None) -> DistributedConfig:
    return cls(**known_fields(cls, values, section='distributed', error=ValueError))


def cluster_detected(environ: Mapping[str, str] | None = None) -> bool:
  environ = os.environ if environ is None else environ
  return any(name in environ and check(environ[name]) for name, check in _CLUSTER_SIGNS.items())


def maybe_initialize(distributed: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None) -> bool:
  """Initialises JAX's distributed runtime if asked or in a cluster; returns whether it did.

  distributed: `config.distributed` with coordinator_address ('' = auto-detect), num_processes (0 = auto),
  process_id (-1 = auto)."""
  cfg = DistributedConfig.from_dict(distributed)
  address = cfg.coordinator_address or None
  num_processes = cfg.num_processes or None
  process_id = None if cfg.process_id is None or cfg.process_id < 0 else cfg.process_id
  if address is None and not cluster_detected(environ):
    if num_processes not in (None, 1) or process_id is not None:
      raise ValueError('distributed.num_processes / process_id are set but distributed.coordinator_address is '
                       "empty and no cluster was detected: give the coordinator's host:port")
    return False
  jax.distributed.initialize(coordinator_address=address, num_processes=num_processes, process_id=process_id)
  return True
