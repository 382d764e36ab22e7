"""core/compile_cache.py: where compiled programs are kept, and that a fresh process reuses them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax

from core import compile_cache
from core.paths import user_path

ROOT = Path(__file__).resolve().parents[1]
# A fresh process: the cache in FOLDER, one program compiled; prints the cache hits and misses it saw.
PROGRAM = '''
import sys
import jax, jax.numpy as jnp
from core import compile_cache
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
compile_cache.enable(sys.argv[1])
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)  # this program is tiny
jax.jit(lambda x: jnp.tanh(x @ x.T) + 1).lower(jax.ShapeDtypeStruct((48, 48), jnp.float32)).compile()
print(events.count('/jax/compilation_cache/cache_hits'), events.count('/jax/compilation_cache/cache_misses'))
'''


def compile_in_a_fresh_process(folder: Path) -> tuple[int, int]:
  out = subprocess.run([sys.executable, '-c', PROGRAM, str(folder)], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, JAX_PLATFORMS='cpu'), timeout=120, check=True)
  hits, misses = out.stdout.split()
  return int(hits), int(misses)


def entries(folder: Path) -> dict[str, int]:
  return {p.name: p.stat().st_size for p in folder.iterdir()}


def test_a_fresh_process_loads_the_program_and_a_torn_entry_is_replaced(tmp_path: Path):
  assert compile_in_a_fresh_process(tmp_path) == (0, 1)
  written = entries(tmp_path)
  assert len(written) == 1 and all(name.endswith('-cache') for name in written)  # no temporary file left
  assert compile_in_a_fresh_process(tmp_path) == (1, 0)
  # A process killed while JAX wrote in place left half an entry: read as a miss, then replaced whole.
  (name, size), = written.items()
  (tmp_path / name).write_bytes((tmp_path / name).read_bytes()[:size // 2])
  assert compile_in_a_fresh_process(tmp_path) == (0, 1)
  assert entries(tmp_path) == written
  assert compile_in_a_fresh_process(tmp_path) == (1, 0)


def test_where_the_setting_puts_the_cache(monkeypatch, tmp_path: Path):
  monkeypatch.setenv(compile_cache.ENV_VAR, str(tmp_path / 'env'))
  assert compile_cache.resolve() == tmp_path / 'env'
  assert compile_cache.resolve(str(tmp_path / 'field')) == tmp_path / 'field'  # the config field wins
  assert compile_cache.resolve('') is None
  monkeypatch.setenv(compile_cache.ENV_VAR, '')
  assert compile_cache.resolve() is None
  monkeypatch.delenv(compile_cache.ENV_VAR)
  previous = jax.config.jax_compilation_cache_dir
  try:  # nothing compiles meanwhile: the folder is only read back
    jax.config.update('jax_compilation_cache_dir', str(tmp_path / 'jax'))  # JAX_COMPILATION_CACHE_DIR, say
    assert compile_cache.resolve() == tmp_path / 'jax'
    jax.config.update('jax_compilation_cache_dir', None)
    assert compile_cache.resolve() == user_path('~/.cache/transformers_jax/jax_cache')
  finally:
    jax.config.update('jax_compilation_cache_dir', previous)
