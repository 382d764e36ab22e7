"""The mapping engine between HF checkpoints and our parameter trees: how one HF tensor lays out our arrays
(`Kind`), the table rows of a family, the per-family spec, and the helpers that expand and convert rows.

One declarative table per family (model/hf/<family>.py) lists (HF tensor name, our parameter path(s), kind);
the same rows drive both directions (model/hf/io.py), so import and export cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import traverse_util

from model.config import Activation, Family, Head, ModelConfig
from model.params import build, init_params


class CheckpointError(ValueError):
  """A checkpoint that cannot be read into (or written from) a ModelConfig exactly; the message says why."""


class Kind(NamedTuple):
  """How one HF tensor lays out the values of one or more of our arrays."""

  transpose: bool  # torch nn.Linear stores (out, in); embeddings and GPT-2's Conv1D store (in, out) like us.
  in_axes: int  # our leading axes that form HF's input axis ((heads, kv) of an attention output); 0: a vector.
  fused: int = 1  # HF concatenates this many of our arrays along its last axis (GPT-2's c_attn: q, k, v).
  unit_axes: int = 0  # HF's tensor has this many leading axes of size 1 more (ViT's [CLS] token (1, 1, D)).
  conv: bool = False  # a torch ConvNd weight (out, in, *kernel) <-> our kernel (in, *kernel, out): every axis kept.


EMBED = Kind(False, 1)  # (N, D) tables; also T5's (buckets, heads) relative bias.
VECTOR = Kind(False, 0)  # biases and norm scales: HF (H*Dh,) <-> ours (H, Dh).
LINEAR = Kind(True, 1)  # nn.Linear (out, in) <-> kernel (in, *out).
LINEAR_OUT = Kind(True, 2)  # attention output: nn.Linear (D, H*Dh) <-> kernel (H, Dh, D).
CONV1D = Kind(False, 1)  # GPT-2 Conv1D (in, out) <-> kernel (in, *out).
CONV1D_OUT = Kind(False, 2)
QKV = Kind(False, 1, 3)  # GPT-2 c_attn.weight (D, 3*H*Dh) <-> query, key, value kernels (D, H, Dh).
QKV_BIAS = Kind(False, 0, 3)  # c_attn.bias (3*H*Dh,) <-> query, key, value biases (H, Dh).
TOKEN = Kind(False, 0, unit_axes=2)  # ViT's [CLS] token (1, 1, D) <-> ours (D,).
TABLE = Kind(False, 1, unit_axes=1)  # ViT's position table (1, T, D) <-> ours (T, D).
CONV = Kind(False, 3, conv=True)  # ViT's patch Conv2d (D, C, p, p) <-> our patch kernel (C, p, p, D).

# (HF name, our '/'-joined path or paths, kind); '{i}' is a layer of the stack our path starts with. HF
# names are those of the task classes (`bert.`/`transformer.` prefixed); the headless classes drop it.
# Rows with the same parameters are alternative names of one tensor (see BERT's vocabulary bias).
Row = tuple[str, str | tuple[str, ...], Kind]


def dense(hf: str, ours: str, kind: Kind = LINEAR) -> list[Row]:
  return [(f'{hf}.weight', f'{ours}/kernel', kind), (f'{hf}.bias', f'{ours}/bias', VECTOR)]


def norm(hf: str, ours: str) -> list[Row]:
  return [(f'{hf}.weight', f'{ours}/scale', VECTOR), (f'{hf}.bias', f'{ours}/bias', VECTOR)]


def attention(hf: str, ours: str, names: Sequence[str]) -> list[Row]:
  """Separate nn.Linear q, k, v, out projections (`names` are HF's for them)."""
  return [row for n, o in zip(names, ('query', 'key', 'value', 'out'))
          for row in dense(f'{hf}.{n}', f'{ours}/{o}', LINEAR_OUT if o == 'out' else LINEAR)]


# HF activation names; the export uses the first name of each of ours.
_ACTIVATIONS = {'gelu': Activation.GELU, 'gelu_new': Activation.GELU_TANH, 'relu': Activation.RELU,
                'silu': Activation.SILU, 'tanh': Activation.TANH, 'gelu_pytorch_tanh': Activation.GELU_TANH,
                'swish': Activation.SILU}
ACTIVATION_NAMES = {a: n for n, a in reversed(_ACTIVATIONS.items())}


def activation(name: str) -> Activation:
  if name not in _ACTIVATIONS:
    raise CheckpointError(f'unsupported HF activation {name!r}; supported: {sorted(_ACTIVATIONS)}')
  return _ACTIVATIONS[name]


def get(hf: Mapping[str, Any], key: str) -> Any:
  if key not in hf:
    raise CheckpointError(f'config.json has no {key!r}, which this model type needs')
  return hf[key]


def unsupported(hf: Mapping[str, Any], **bad: Any) -> None:
  """Errors for config flags that change the computation in ways ModelConfig cannot express."""
  for key, value in bad.items():
    if key in hf and hf[key] != value:
      raise CheckpointError(f'config.json sets {key}={hf[key]!r}; only {value!r} is supported')


def num_labels(hf: Mapping[str, Any], head: Head) -> int:
  """A sequence classifier's outputs (HF counts id2label; its default is 2); 0 for other heads."""
  return len(hf.get('id2label') or {0: 0, 1: 1}) if head is Head.CLASSIFIER else 0


def labels_config(cfg: ModelConfig) -> dict[str, Any]:
  """config.json's label fields of a sequence classifier (none for other heads); one output is regression."""
  if cfg.head is not Head.CLASSIFIER:
    return {}
  out: dict[str, Any] = dict(id2label={str(i): f'LABEL_{i}' for i in range(cfg.num_labels)},
                             label2id={f'LABEL_{i}': i for i in range(cfg.num_labels)})
  if cfg.num_labels == 1:
    out['problem_type'] = 'regression'
  return out


def is_arange(x: np.ndarray) -> bool:
  return np.array_equal(x.reshape(-1), np.arange(x.size))


def is_zeros(x: np.ndarray) -> bool:
  return not np.any(x)


def is_causal(x: np.ndarray) -> bool:
  n = x.shape[-1]
  return x.size == n * n and np.array_equal(x.reshape(n, n) != 0, np.tri(n, dtype=bool))


@dataclasses.dataclass(frozen=True)
class FamilySpec:
  """Everything one HF model type needs beyond the generic machinery."""

  model_type: str
  family: Family
  classes: Mapping[str, Head]  # supported HF classes; the first one per head is the one we export
  prefix: str  # base_model_prefix + '.' of the task classes; the headless class saves without it
  head_prefixes: tuple[str, ...]  # task-head tensors, which never carry the prefix
  table: tuple[Row, ...]
  to_fields: Callable[[Mapping[str, Any], Head, bool], dict[str, Any]]  # config.json, head, tied -> ours
  to_config: Callable[[ModelConfig], dict[str, Any]]  # ours -> config.json
  # Tied duplicates (name, source): checked equal, never written. The first is the LM head and the
  # embedding it repeats when tied.
  aliases: tuple[tuple[str, str], ...]
  buffers: tuple[tuple[str, Callable[[np.ndarray], bool]], ...]  # non-parameters: (regex, sanity check)
  # Rows of one head's class only, where classes name the same parameter differently (RoBERTa's pooler is
  # roberta.pooler in RobertaModel, classifier.dense in RobertaForSequenceClassification).
  head_tables: Mapping[Head, tuple[Row, ...]] = dataclasses.field(default_factory=dict)
  # Older layouts of the same tensors, read on import as transformers 5 reads them: (regex, replacement) applied in
  # order to a name with its prefix; the export writes the table's (current) names.
  renames: tuple[tuple[str, str], ...] = ()

  def arch(self, head: Head) -> str:
    return next(name for name, h in self.classes.items() if h is head)

  def rows(self, head: Head) -> tuple[Row, ...]:
    return self.table + tuple(self.head_tables.get(head, ()))


class Entry(NamedTuple):
  """One table row for one layer."""

  hf: str
  ours: tuple[str, ...]
  kind: Kind


def table_entries(table: Sequence[Row], cfg: ModelConfig, target: Mapping[str, tuple[int, ...]]) -> list[Entry]:
  """The rows expanded over layers, keeping those whose parameters exist for `cfg`."""
  out = []
  for hf, ours, kind in table:
    ours = (ours,) if isinstance(ours, str) else ours
    # an encoder layer index is a parameter set: one per group of layers sharing it (ALBERT)
    layers = cfg.decoder_layers if ours[0].startswith('decoder/') else cfg.layer_groups
    for i in range(layers) if '{i}' in hf else (0,):
      entry = Entry(hf.format(i=i), tuple(o.format(i=i) for o in ours), kind)
      if all(o in target for o in entry.ours):
        out.append(entry)
  return out


def hf_shape(kind: Kind, shape: tuple[int, ...]) -> tuple[int, ...]:
  """HF's shape for `kind.fused` of our arrays of `shape`."""
  if kind.conv:
    return (shape[-1],) + tuple(shape[:-1])
  if kind.in_axes == 0:
    mat = (math.prod(shape) * kind.fused,)
  else:
    mat = (math.prod(shape[:kind.in_axes]), math.prod(shape[kind.in_axes:]) * kind.fused)
  return (1,) * kind.unit_axes + (mat[::-1] if kind.transpose else mat)


def to_hf(kind: Kind, arrays: Sequence[np.ndarray]) -> np.ndarray:
  if kind.conv:
    return np.moveaxis(arrays[0], -1, 0)
  parts = [a.reshape(-1) if kind.in_axes == 0 else a.reshape(math.prod(a.shape[:kind.in_axes]), -1) for a in arrays]
  x = np.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
  x = x.T if kind.transpose else x
  return x.reshape((1,) * kind.unit_axes + x.shape)


def to_ours(kind: Kind, x: np.ndarray, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
  if kind.conv:
    return [np.moveaxis(x, 0, -1).reshape(shapes[0])]
  x = x.reshape(x.shape[kind.unit_axes:])
  x = x.T if kind.transpose else x
  parts = np.split(x, kind.fused, axis=-1) if kind.fused > 1 else [x]
  return [p.reshape(s) for p, s in zip(parts, shapes)]


def target_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
  """Our unscanned parameter shapes by '/'-joined path, from shapes alone (nothing allocated)."""
  tree = jax.eval_shape(lambda: init_params(build(cfg.replace(scan_layers=False)), jax.random.key(0)))
  return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(tree, sep='/').items()}
