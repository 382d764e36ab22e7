"""Logical axis names and the one table that maps them onto the device mesh.

Every parameter is created with `nn.with_logical_partitioning(init, names)` and the main activations are
constrained with `nn.with_logical_constraint(x, names)`, using only the names below. The mapping onto the
mesh axes (data, fsdp, tensor) lives here alone and can be overridden from `config.mesh.rules`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# Logical axes (DESIGN.md). `layers` is the leading axis of scanned (stacked) layer parameters.
BATCH = 'batch'
LENGTH = 'length'
EMBED = 'embed'
HEADS = 'heads'
KV = 'kv'
MLP = 'mlp'
VOCAB = 'vocab'
LAYERS = 'layers'

LOGICAL_AXES = (BATCH, LENGTH, EMBED, HEADS, KV, MLP, VOCAB, LAYERS)
MESH_AXES = ('data', 'fsdp', 'tensor')

Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

# Flax resolves a name with the first rule whose mesh axes are still unused in that array, so an
# activation (batch, length, embed) shards batch over (data, fsdp) and leaves embed replicated, while a
# weight (embed, mlp) shards embed over fsdp (ZeRO-3 style) and mlp over tensor (Megatron style).
DEFAULT_RULES: Rules = (
    (BATCH, ('data', 'fsdp')),
    (EMBED, 'fsdp'),
    (HEADS, 'tensor'),
    (MLP, 'tensor'),
    (VOCAB, 'tensor'),
    (KV, None),
    (LENGTH, None),
    (LAYERS, None),
)


def make_rules(overrides: Mapping[str, str | Sequence[str] | None] | None = None) -> Rules:
  """The default table with `overrides` (logical name -> mesh axis, axes or None) replacing entries."""
  overrides = dict(overrides or {})
  for name, target in overrides.items():
    if name not in LOGICAL_AXES:
      raise ValueError(f'mesh.rules: unknown logical axis {name!r}; valid names are {list(LOGICAL_AXES)}')
    targets = (target,) if isinstance(target, str) else tuple(target or ())
    bad = [t for t in targets if t not in MESH_AXES]
    if bad:
      raise ValueError(f'mesh.rules.{name}: unknown mesh axis {bad}; valid axes are {list(MESH_AXES)}')
  rules = []
  for name, target in DEFAULT_RULES:
    if name in overrides:
      target = overrides[name]
      target = tuple(target) if isinstance(target, (list, tuple)) else target
    rules.append((name, target))
  return tuple(rules)
