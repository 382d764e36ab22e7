"""Test-wide settings: everything runs offline on the CPU."""

import os

# The reference models are built from configs or loaded from local directories; never reach for a hub.
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Eight simulated CPU devices, for sharding tests on a (data, fsdp, tensor) mesh; set before jax is imported.
if '--xla_force_host_platform_device_count' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8').strip()

# One XLA compilation cache for this pytest session and the train.py processes its tests start (a fresh folder
# each session, so nothing carries over between sessions, and nothing is written under the user's home): many
# tests compile the same tiny programs (every GLUE config's 2-label classifier, the shared tiny models), and a
# cache hit skips XLA's compile. core/compile_cache writes entries atomically: a child SIGKILLed while it wrote
# one leaves no torn entry behind (with JAX's in-place writes, the next compile of that program here waited 300 s).
import tempfile  # pylint: disable=g-import-not-at-top,wrong-import-position

os.environ['TJ_COMPILATION_CACHE'] = tempfile.mkdtemp(prefix='jax_cache_tests_')
# Tokenized splits (data/token_cache.py) likewise: shared by the session and its children, never the user's.
os.environ['TJ_TOKEN_CACHE'] = tempfile.mkdtemp(prefix='token_cache_tests_')

from core import compile_cache  # pylint: disable=g-import-not-at-top,wrong-import-position

compile_cache.enable()
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)  # the tests' programs are tinier still
