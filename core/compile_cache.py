"""XLA's persistent compilation cache, on by default: a rerun, or the next cell of a sweep with the same shapes,
loads its compiled programs from disk instead of compiling them again (MiniLM's six: ~40 s on 2 CPU cores).

  compile_cache.enable(config.train.compilation_cache)   # before the first compile; train.py, eval.py, describe.py

Where (`train.compilation_cache`, written once here as AUTO):
  'auto'        $TJ_COMPILATION_CACHE if set ('' = off), else a folder JAX was already given
                (JAX_COMPILATION_CACHE_DIR, jax.config), else ~/.cache/transformers_jax/jax_cache
  ''            off
  '<folder>'    that folder

Several processes may share the folder (a sweep's cells run side by side). The pinned JAX (0.10.2) writes an
entry in place (`Path.write_bytes`), so a process killed mid-write leaves a torn entry that JAX then warns
about and recompiles on every later run, never replacing it, and a process reading while another writes may
see half an entry. Here every entry is written to a temporary file and renamed into place: a reader sees a
whole entry or none, and a torn entry left by anything else is replaced by the next compile of its program.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
from jax._src import compilation_cache as jax_compilation_cache  # the cache's file layer (see module docstring)
from jax._src import lru_cache
from jax.experimental.compilation_cache import compilation_cache

from core.paths import user_cache_dir, user_path

AUTO = 'auto'  # train.compilation_cache's default
ENV_VAR = 'TJ_COMPILATION_CACHE'
# Programs that compile faster than this are not written: a cache read costs a few ms, and eager jnp calls
# compile hundreds of tiny programs. The tiny configs' train steps take ~0.5-2 s on the CPU, so they are kept.
MIN_COMPILE_SECS = 0.2


def resolve(setting: str = AUTO) -> Path | None:
  """The folder `setting` (train.compilation_cache) names, or None for off (module docstring)."""
  if setting != AUTO:
    return _folder(setting)
  if ENV_VAR in os.environ:
    return _folder(os.environ[ENV_VAR])
  configured = jax.config.jax_compilation_cache_dir
  return _folder(configured) if configured else user_cache_dir('jax_cache')


def enable(setting: str = AUTO) -> Path | None:
  """Points JAX's persistent cache at `resolve(setting)` (or turns it off), with atomic writes; returns the folder.

  Call it before the first compile; a later call with another folder resets JAX's cache so the next compile
  reads the new one."""
  folder = resolve(setting)
  jax_compilation_cache.get_file_cache = _atomic_file_cache
  value = None if folder is None else str(folder)
  if jax.config.jax_compilation_cache_dir != value or not isinstance(_current_cache(), _AtomicFileCache):
    jax.config.update('jax_compilation_cache_dir', value)
    compilation_cache.reset_cache()  # JAX sets its cache up once per process, at the first compile
  # Lowered from JAX's 1 s, never raised: a caller's lower setting (tests: 0) stays.
  jax.config.update('jax_persistent_cache_min_compile_time_secs',
                    min(jax.config.jax_persistent_cache_min_compile_time_secs, MIN_COMPILE_SECS))
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)  # any size; -1: no override by JAX
  return folder


def _folder(value: str) -> Path | None:
  return user_path(value) if value else None


def _current_cache() -> object:
  return getattr(jax_compilation_cache, '_cache', None)


class _AtomicFileCache(lru_cache.LRUCache):
  """JAX's file cache, whose entries appear whole (temporary file + rename) and replace a torn one."""

  def put(self, key: str, value: bytes) -> None:
    if self.eviction_enabled or not lru_cache._is_local_filesystem(str(self.path)):  # pylint: disable=protected-access
      super().put(key, value)  # a size cap (JAX's file lock) or a remote store: JAX's own way
      return
    path = os.path.join(str(self.path), f'{key}{lru_cache._CACHE_SUFFIX}')  # pylint: disable=protected-access
    tmp = f'{path}.{os.getpid()}.{os.urandom(4).hex()}.tmp'
    try:
      with open(tmp, 'xb') as f:
        f.write(value)
      os.replace(tmp, path)  # the same program's bytes: whichever writer renames last wins
    except BaseException:
      Path(tmp).unlink(missing_ok=True)
      raise


def _atomic_file_cache(path: str) -> tuple[lru_cache.LRUCache, str]:
  """JAX's `get_file_cache`, with `_AtomicFileCache` in place of its LRUCache."""
  cache = _AtomicFileCache(path, max_size=jax.config.jax_compilation_cache_max_size)
  if jax.config.jax_compilation_cache_check_contents:
    return jax_compilation_cache.VerificationCache(cache), path
  return cache, path
