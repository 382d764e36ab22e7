"""Multi-host start-up on JAX's own distributed runtime.

`jax.distributed.initialize` must run before anything touches a device. It is called when the config
names a coordinator (explicit address, process count and id) or when the environment is a cluster JAX
recognises by itself (SLURM with several tasks, Open MPI, TPU pods, an explicit JAX_COORDINATOR_ADDRESS);
a plain single-process run skips it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax

# Environment variables whose presence means a launcher started several cooperating processes.
_CLUSTER_SIGNS = {
    'SLURM_NTASKS': lambda v: int(v) > 1,  # srun --ntasks N (SLURM_JOB_ID alone may be a 1-task job)
    'OMPI_COMM_WORLD_SIZE': lambda v: int(v) > 1,  # mpirun -np N
    'JAX_COORDINATOR_ADDRESS': bool,
    'TPU_WORKER_HOSTNAMES': lambda v: ',' in v,  # a multi-host TPU slice
}


def cluster_detected(environ: Mapping[str, str] | None = None) -> bool:
  environ = os.environ if environ is None else environ
  return any(name in environ and check(environ[name]) for name, check in _CLUSTER_SIGNS.items())


def maybe_initialize(distributed: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None) -> bool:
  """Initialises JAX's distributed runtime if asked or in a cluster; returns whether it did.

  distributed: `config.distributed` with coordinator_address ('' = auto-detect), num_processes (0 = auto),
  process_id (-1 = auto)."""
  distributed = dict(distributed or {})
  address = distributed.get('coordinator_address') or None
  num_processes = distributed.get('num_processes') or None
  process_id = distributed.get('process_id', -1)
  process_id = None if process_id is None or process_id < 0 else process_id
  if address is None and not cluster_detected(environ):
    if num_processes not in (None, 1) or process_id is not None:
      raise ValueError('distributed.num_processes / process_id are set but distributed.coordinator_address is '
                       "empty and no cluster was detected: give the coordinator's host:port")
    return False
  jax.distributed.initialize(coordinator_address=address, num_processes=num_processes, process_id=process_id)
  return True
