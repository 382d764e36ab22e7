"""`config.mesh` -> a device mesh (data, fsdp, tensor) and the logical-axis rules, and the shardings of a
tree of logically named arrays on it.

  cfg = MeshConfig.from_dict(config.mesh)     # data=-1, fsdp=1, tensor=1, rules={} (overrides)
  ctx = cfg.context()                         # MeshContext(mesh, rules): -1 = the rest of the devices
  batch = ctx.to_global(host_batch)           # this process's numpy rows -> global arrays, batch-sharded
  with ctx.active(): ...                      # trace under the mesh and the rules
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec

from core.config import known_fields
from model import partitioning as P

RuleTarget = str | tuple[str, ...] | None


class MeshConfigError(ValueError):
  """`config.mesh` cannot be laid out on the devices; the message names the fields and the device count."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class MeshConfig:
  """Mesh axis sizes: each a positive integer, or -1 for "the rest of the devices" (at most one -1).

  rules: overrides of the default logical-axis table (`model.partitioning.DEFAULT_RULES`), logical name ->
  mesh axis, axes or None; given as a mapping (e.g. a ConfigDict) or pairs, stored as pairs sorted by name
  so that the config stays frozen and hashable.
  """

  data: int = -1
  fsdp: int = 1
  tensor: int = 1
  rules: Mapping[str, RuleTarget] | tuple[tuple[str, RuleTarget], ...] = dataclasses.field(default_factory=dict)

  def __post_init__(self) -> None:
    for name in P.MESH_AXES:
      value = getattr(self, name)
      if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or (value < 1 and value != -1):
        raise MeshConfigError(f'mesh.{name}={value!r}: must be a positive integer, or -1 for the rest of the devices')
    wild = [n for n in P.MESH_AXES if getattr(self, n) == -1]
    if len(wild) > 1:
      raise MeshConfigError(f'mesh.{"=-1, mesh.".join(wild)}=-1: at most one axis may be -1 (the rest of the '
                            'devices); give the others explicit sizes')
    object.__setattr__(self, 'rules', _normalise_rules(self.rules))
    P.make_rules(dict(self.rules))  # validates names now: errors name mesh.rules.<axis>

  @classmethod
  def from_dict(cls, values: Mapping[str, Any] | None) -> MeshConfig:
    """From `config.mesh` (a ConfigDict or mapping); unknown keys are an error naming the valid ones."""
    return cls(**known_fields(cls, values, section='mesh', error=MeshConfigError))

  def context(self, devices: Sequence[jax.Device] | None = None) -> MeshContext:
    """The mesh over `devices` (default: all) with this config's rules; a shape that does not fit fails here."""
    return MeshContext(make_mesh(self, devices), self.logical_rules)

  @property
  def logical_rules(self) -> P.Rules:
    """The rules table with this config's overrides (what `nn.logical_axis_rules` and shardings use)."""
    return P.make_rules(dict(self.rules))

  def shape(self, num_devices: int) -> tuple[int, int, int]:
    """(data, fsdp, tensor) with the -1 resolved; raises MeshConfigError if it does not fit num_devices."""
    sizes = {n: getattr(self, n) for n in P.MESH_AXES}
    given = ', '.join(f'mesh.{n}={v}' for n, v in sizes.items())
    fixed = math.prod(v for v in sizes.values() if v != -1)
    if -1 in sizes.values():
      if num_devices % fixed:
        raise MeshConfigError(f'{given}: the fixed axes need a multiple of {fixed} devices, but there are '
                              f'{num_devices} devices; pick sizes whose product divides {num_devices}')
      sizes = {n: (num_devices // fixed if v == -1 else v) for n, v in sizes.items()}
    elif fixed != num_devices:
      raise MeshConfigError(f'{given}: {fixed} devices in all, but there are {num_devices} devices; make the '
                            f'product equal {num_devices}, or set one axis to -1 (the rest)')
    return tuple(sizes[n] for n in P.MESH_AXES)


def _normalise_rules(rules: Any) -> tuple[tuple[str, RuleTarget], ...]:
  """Mapping / ConfigDict / pairs -> sorted ((name, target), ...) with list targets as tuples."""
  if hasattr(rules, 'items'):
    rules = list(rules.items())
  out = []
  for pair in rules:
    if not (isinstance(pair, Sequence) and len(pair) == 2 and isinstance(pair[0], str)):
      raise MeshConfigError(f'mesh.rules: expected a mapping of logical axis -> mesh axes, got {rules!r}')
    name, target = pair
    if isinstance(target, (list, tuple)):
      target = tuple(target)
    out.append((name, target))
  return tuple(sorted(out, key=lambda pair: pair[0]))


def make_mesh(cfg: MeshConfig, devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """The (data, fsdp, tensor) mesh over `devices` (default: all), Auto axis types.

  jax.make_mesh orders the devices for the physical topology (ICI rings on TPU, NVLink islands, one host's
  devices together), which a reshape of jax.devices() does not; it also works across processes.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = cfg.shape(len(devices))
  return jax.make_mesh(shape, P.MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(shape), devices=devices)


def fit_spec(spec: PartitionSpec, shape: Sequence[int], mesh: jax.sharding.Mesh) -> tuple[PartitionSpec, list[int]]:
  """`spec` with every entry whose mesh size does not divide its dimension replaced by None.

  JAX cannot lay out an array unevenly (e.g. GPT-2's odd vocabulary of 50257 over tensor=2), so such a
  dimension is replicated instead. Returns the spec and the indices of the dimensions that were dropped.
  """
  entries, dropped = [], []
  for i, (entry, size) in enumerate(zip(tuple(spec) + (None,) * (len(shape) - len(spec)), shape)):
    axes = (entry,) if isinstance(entry, str) else tuple(entry or ())
    if size % math.prod(mesh.shape[a] for a in axes):
      entries.append(None)
      dropped.append(i)
    else:
      entries.append(entry)
  return PartitionSpec(*entries), dropped


@dataclasses.dataclass(frozen=True)
class MeshContext:
  """The device mesh and the logical-axis rules that map names onto it: everything a sharding decision
  needs, as one object (`MeshConfig.context()`), from the sharded init to the batches and the compiles."""

  mesh: jax.sharding.Mesh
  rules: P.Rules = P.DEFAULT_RULES

  @contextlib.contextmanager
  def active(self) -> Iterator[None]:
    """Mesh and rules in force while tracing: where nn.with_logical_constraint reads them."""
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      yield

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, PartitionSpec())

  def logical_shardings(self, logical_specs: Any, shapes: Any) -> Any:
    """Tree of logical PartitionSpecs (names like 'embed') + tree of shapes -> tree of NamedShardings.

    Dimensions the mesh cannot divide evenly are replicated (see `fit_spec`), with one log line naming them.
    """
    mesh_specs = nn.logical_to_mesh(logical_specs, self.rules)
    is_spec = lambda x: isinstance(x, PartitionSpec)
    flat_specs, tree = jax.tree.flatten(mesh_specs, is_leaf=is_spec)
    flat_shapes = tree.flatten_up_to(shapes)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(mesh_specs, is_leaf=is_spec)[0]]
    out, unsharded = [], []
    for path, spec, leaf in zip(paths, flat_specs, flat_shapes):
      spec, dropped = fit_spec(spec, leaf.shape, self.mesh)
      if dropped:
        unsharded.append(f'{path}{tuple(leaf.shape)} dims {dropped}')
      out.append(NamedSharding(self.mesh, spec))
    if unsharded:
      logging.warning('replicated instead of sharded (size not divisible by the mesh axes): %s', '; '.join(unsharded))
    return jax.tree.unflatten(tree, out)

  def batch_sharding(self, ndim: int) -> NamedSharding:
    """Leading axis over the mesh axes of the logical 'batch' axis (the rules table), the rest replicated."""
    return NamedSharding(self.mesh, nn.logical_to_mesh_axes((P.BATCH,) + (None,) * (ndim - 1), self.rules))

  def to_global(self, batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
    """This process's rows -> global arrays sharded along the batch axis (every process calls this)."""
    return {k: jax.make_array_from_process_local_data(self.batch_sharding(v.ndim), v) for k, v in batch.items()}

  @property
  def batch_axes(self) -> tuple[str, ...]:
    """The mesh axes a batch's rows are split over (the rules' 'batch' entry: data and fsdp by default)."""
    spec = self.batch_sharding(1).spec
    entry = spec[0] if len(spec) else None
    return (entry,) if isinstance(entry, str) else tuple(entry or ())

  @property
  def batch_devices(self) -> int:
    """How many ways a batch's rows are split: global batch sizes must be a multiple of it."""
    return math.prod(self.mesh.shape[a] for a in self.batch_axes)

  def batch_shardings(self, batch_shapes: Mapping[str, Any], microbatches: int = 1) -> dict[str, NamedSharding]:
    """The sharding of each feature (leading axis over the mesh axes of 'batch'); checks before any compile
    that the rows (and each microbatch's rows) divide evenly over those devices."""
    out = {}
    axes, devices = self.batch_axes, self.batch_devices
    for name, x in batch_shapes.items():
      sharding = self.batch_sharding(len(x.shape))
      rows = x.shape[0] // microbatches
      if x.shape[0] % microbatches or rows % devices:
        per = f' / train.microbatches={microbatches} = {rows}' if microbatches > 1 else ''
        raise ValueError(f'batch feature {name!r}: {x.shape[0]} rows{per} do not split over the {devices} devices '
                         f'of mesh axes {axes} (the logical batch axis); use train.batch_size a multiple of '
                         f'{devices * microbatches}')
      out[name] = sharding
    return out
