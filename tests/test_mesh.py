"""MeshConfig -> mesh: the -1 axis, shapes that do not fit the devices, rules overrides, uneven dimensions."""

from __future__ import annotations

import jax
import ml_collections
import pytest
from jax.sharding import PartitionSpec

from model import partitioning as P
from trainer.mesh import MeshConfig, MeshConfigError, fit_spec, make_mesh


@pytest.mark.parametrize('fields, devices, shape', [
    ({}, 8, (8, 1, 1)),
    ({'fsdp': 2, 'tensor': 2}, 8, (2, 2, 2)),
    ({'data': 2, 'fsdp': -1}, 8, (2, 4, 1)),
    ({'data': 1, 'fsdp': 1, 'tensor': -1}, 4, (1, 1, 4)),
    ({'data': 2, 'fsdp': 2, 'tensor': 2}, 8, (2, 2, 2)),
    ({}, 1, (1, 1, 1)),
])
def test_minus_one_is_the_rest(fields, devices, shape):
  assert MeshConfig(**fields).shape(devices) == shape


def test_make_mesh_on_all_and_on_some_devices():
  mesh = make_mesh(MeshConfig(fsdp=2, tensor=2))
  assert dict(mesh.shape) == {'data': 2, 'fsdp': 2, 'tensor': 2} and mesh.axis_names == P.MESH_AXES
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
  single = make_mesh(MeshConfig(), devices=jax.devices()[:1])
  assert dict(single.shape) == {'data': 1, 'fsdp': 1, 'tensor': 1}


@pytest.mark.parametrize('fields, devices, message', [
    ({'data': 3, 'fsdp': 2, 'tensor': 1}, 8,
     r'mesh.data=3, mesh.fsdp=2, mesh.tensor=1: 6 devices in all, but there are 8 devices'),
    ({'data': -1, 'fsdp': 3}, 8, r'mesh.data=-1, mesh.fsdp=3, mesh.tensor=1: the fixed axes need a multiple of 3 '
                                 r'devices, but there are 8 devices'),
    ({'data': 2, 'fsdp': 2, 'tensor': 4}, 8, r'16 devices in all, but there are 8 devices'),
])
def test_shapes_that_do_not_fit_name_the_fields_and_the_device_count(fields, devices, message):
  with pytest.raises(MeshConfigError, match=message):
    MeshConfig(**fields).shape(devices)


def test_misfit_raises_in_make_mesh_before_anything_compiles():
  with pytest.raises(MeshConfigError, match=r'there are 8 devices'):
    make_mesh(MeshConfig(data=4, fsdp=4))


@pytest.mark.parametrize('fields, message', [
    ({'data': -1, 'fsdp': -1}, r'mesh.data=-1, mesh.fsdp=-1: at most one axis may be -1'),
    ({'tensor': 0}, r'mesh.tensor=0: must be a positive integer, or -1'),
    ({'fsdp': 1.5}, r'mesh.fsdp=1.5: must be a positive integer'),
    ({'rules': {'embedd': 'fsdp'}}, r"mesh.rules: unknown logical axis 'embedd'"),
    ({'rules': {'embed': 'model'}}, r"mesh.rules.embed: unknown mesh axis \['model'\]"),
])
def test_bad_fields(fields, message):
  with pytest.raises(ValueError, match=message):
    MeshConfig(**fields)


def test_from_config_dict_with_rule_overrides():
  config = ml_collections.ConfigDict({'data': -1, 'fsdp': 2, 'tensor': 1,
                                      'rules': {'embed': None, 'mlp': ['fsdp', 'tensor']}})
  cfg = MeshConfig.from_dict(config)
  rules = dict(cfg.logical_rules)
  assert rules['embed'] is None and rules['mlp'] == ('fsdp', 'tensor')
  assert rules['batch'] == ('data', 'fsdp') and rules['heads'] == 'tensor'  # the rest: the default table
  assert [name for name, _ in cfg.logical_rules] == [name for name, _ in P.DEFAULT_RULES]  # order kept
  hash(cfg)  # frozen and hashable, rules included
  with pytest.raises(MeshConfigError, match=r"unknown field\(s\) \['model'\]"):
    MeshConfig.from_dict({'model': 2})


def test_rules_overrides_change_the_shardings():
  specs = {'w': PartitionSpec('embed', 'mlp')}
  shapes = {'w': jax.ShapeDtypeStruct((32, 64), 'float32')}
  default = MeshConfig(fsdp=2, tensor=2).context().logical_shardings(specs, shapes)
  assert default['w'].spec == PartitionSpec('fsdp', 'tensor')
  overridden = MeshConfig(fsdp=2, tensor=2, rules={'embed': None}).context().logical_shardings(specs, shapes)
  assert overridden['w'].spec == PartitionSpec(None, 'tensor')


def test_uneven_dimensions_are_replicated():
  """JAX cannot split 101 rows over 2 devices: that dimension is replicated, the others stay sharded."""
  mesh = make_mesh(MeshConfig(fsdp=2, tensor=2))
  spec, dropped = fit_spec(PartitionSpec('tensor', 'fsdp'), (101, 32), mesh)
  assert spec == PartitionSpec(None, 'fsdp') and dropped == [0]
  spec, dropped = fit_spec(PartitionSpec(('data', 'fsdp')), (6, 3), mesh)
  assert spec == PartitionSpec(None, None) and dropped == [0]
