"""Test-wide settings: everything runs offline on the CPU."""

import os

# The reference models are built from configs or loaded from local directories; never reach for a hub.
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
