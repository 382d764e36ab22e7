"""Test-wide settings: everything runs offline on the CPU."""

import os

# The reference models are built from configs or loaded from local directories; never reach for a hub.
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Eight simulated CPU devices, for sharding tests on a (data, fsdp, tensor) mesh; set before jax is imported.
if '--xla_force_host_platform_device_count' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8').strip()

# One XLA compilation cache for this pytest process (a fresh folder each run, so nothing carries over between
# runs): many tests compile the same tiny programs (every GLUE config's 2-label classifier, the shared tiny
# models), and a cache hit skips XLA's compile. Set on jax.config, not in the environment, so that the
# processes tests start (train.py runs, killed writers) do not share it: a child SIGKILLed while it wrote a
# cache entry left the next compile of that program here waiting 300 s.
import tempfile  # pylint: disable=g-import-not-at-top,wrong-import-position

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update('jax_compilation_cache_dir', tempfile.mkdtemp(prefix='jax_cache_tests_'))
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
