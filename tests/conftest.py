"""Test-wide settings: everything runs offline on the CPU."""

import os

# The reference models are built from configs or loaded from local directories; never reach for a hub.
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Eight simulated CPU devices, for sharding tests on a (data, fsdp, tensor) mesh; set before jax is imported.
if '--xla_force_host_platform_device_count' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8').strip()
