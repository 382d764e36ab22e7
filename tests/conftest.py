"""Test-wide settings: everything runs offline on the CPU."""

import os

# The reference models are built from configs or loaded from local directories; never reach for a hub.
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Eight simulated CPU devices, for sharding tests on a (data, fsdp, tensor) mesh; set before jax is imported.
if '--xla_force_host_platform_device_count' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8').strip()

# One XLA compilation cache for the whole run (a fresh folder each run, so nothing carries over between runs):
# many tests compile the same tiny programs (every GLUE config's 2-label classifier, the shared tiny models), and
# a cache hit skips XLA's compile. Set through the environment, read when jax is first imported.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  import tempfile  # pylint: disable=g-import-not-at-top
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='jax_cache_tests_')
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'
