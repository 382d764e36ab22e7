"""Typed config sections: the helpers every section's frozen dataclass uses, and each section's ConfigDict
generated from that dataclass, so a default is written once.

  config.data = section(DataConfig, source='builtin:sotu', objective='causal_lm', seq_len=128)
  data = DataConfig.from_dict(config.data)      # -> known_fields: an unknown key names the closest valid ones

`section` lists every field of the dataclass with its default (enums as their values, a None default as a
typed placeholder, so that `--config.data.decoder_seq_len=128` can set it from the command line), then the
setup's values on top; a key the dataclass does not have is an error. A field whose default is itself a
ConfigDict (eval.generate: every decoding.GenerateConfig field, unset) is a sub-section: the setup's values go
over its fields, and a key it lacks is an error too.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import ml_collections

E = TypeVar('E', bound=enum.Enum)


class ConfigError(ValueError):
  """A config field holds a value that cannot be used; the message names the field and the fix."""


def unknown_keys_message(unknown: Iterable[str], known: Iterable[str], section: str) -> str:
  """'<section> config: unknown field(s) [...]' with the closest valid name of each, then every valid one."""
  known, unknown = sorted(known), sorted(unknown)
  close = {name: difflib.get_close_matches(name, known, n=1) for name in unknown}
  hints = [f'{name!r} -> {match[0]!r}' for name, match in close.items() if match]
  return (f'{section} config: unknown field(s) {unknown}; valid fields are {known}'
          + (f'; did you mean {", ".join(hints)}?' if hints else ''))


def known_fields(cls: type, values: Mapping[str, Any] | None, *, section: str,
                 error: type[Exception] = ConfigError, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
  """`values` as a dict, or `error` naming the unknown keys of config `section` (with the closest valid
  names) and the valid ones: the fields of dataclass `cls` but `exclude`."""
  values = dict(values or {})
  known = {f.name for f in dataclasses.fields(cls)} - set(exclude)
  unknown = set(values) - known
  if unknown:
    raise error(unknown_keys_message(unknown, known, section))
  return values


def parse_enum(enum_type: type[E], value: Any, *, field: str, what: str,
               error: type[Exception] = ConfigError) -> E:
  """`value` (an enum member or its case-insensitive string) as `enum_type`; anything else raises `error`
  naming the config `field` and listing the valid values."""
  if isinstance(value, enum_type):
    return value
  if isinstance(value, str):
    try:
      return enum_type(value.lower())
    except ValueError:
      pass
  raise error(f'{field}={value!r}: unknown {what}; valid values are {[m.value for m in enum_type]}')


@functools.cache
def _placeholder_type(cls: type, name: str) -> type:
  """The type a None-defaulted field holds when set: X of `X | None`."""
  hint = typing.get_type_hints(cls)[name]
  args = [a for a in typing.get_args(hint) if a is not type(None)]
  if typing.get_origin(hint) not in (typing.Union, types.UnionType) or len(args) != 1:
    raise TypeError(f'{cls.__name__}.{name}: a None default needs an `X | None` annotation, not {hint}')
  return typing.get_origin(args[0]) or args[0]


def _config_value(cls: type, field: dataclasses.Field, value: Any) -> Any:
  if value is None:  # a typed placeholder: None until set, and settable from the command line
    return ml_collections.config_dict.placeholder(_placeholder_type(cls, field.name))
  if isinstance(value, enum.Enum):
    return value.value
  return value


def section(cls: type, values: Mapping[str, Any] | None = None, *, name: str,
            exclude: tuple[str, ...] = ()) -> ml_collections.ConfigDict:
  """The ConfigDict of config section `name`: every field of dataclass `cls` (but `exclude`) at its default,
  `values` on top. A field without a default must be in `values`; an unknown key is an error. A field whose
  default is a ConfigDict is a sub-section (eval.generate): the values given for it go over its fields one by
  one, and a key it lacks is an error naming `<name>.<field>`."""
  given = known_fields(cls, values, section=name, exclude=exclude)
  out = {}
  for field in dataclasses.fields(cls):
    if field.name in exclude:
      continue
    default = _default(field)
    if isinstance(default, ml_collections.ConfigDict):
      out[field.name] = _subsection(default, given.get(field.name), name=f'{name}.{field.name}')
    elif field.name in given or default is not dataclasses.MISSING:
      out[field.name] = _config_value(cls, field, given.get(field.name, default))
    else:
      raise ConfigError(f'{name}.{field.name}: required, and the setup does not set it')
  return ml_collections.ConfigDict(out)


def _subsection(fields: ml_collections.ConfigDict, values: Mapping[str, Any] | None, *,
                name: str) -> ml_collections.ConfigDict:
  """`fields` (a sub-section's default, typed for the command line) with `values` set over it."""
  values = dict(values or {})
  unknown = set(values) - set(fields)
  if unknown:
    raise ConfigError(unknown_keys_message(unknown, fields.keys(), name))
  fields.update({k: v.value if isinstance(v, enum.Enum) else v for k, v in values.items()})
  return fields


def _default(field: dataclasses.Field) -> Any:
  if field.default is not dataclasses.MISSING:
    return field.default
  if field.default_factory is not dataclasses.MISSING:
    return field.default_factory()
  return dataclasses.MISSING


def defaults(cls: type, *, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
  """{field: default} of the fields of dataclass `cls` that have one (enums as their values, a sub-section as
  a dict)."""
  out = {}
  for field in dataclasses.fields(cls):
    value = _default(field)
    if field.name in exclude or value is dataclasses.MISSING:
      continue
    if isinstance(value, ml_collections.ConfigDict):
      value = value.to_dict()
    out[field.name] = value.value if isinstance(value, enum.Enum) else value
  return out
