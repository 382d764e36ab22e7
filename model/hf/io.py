"""Import and export of HF transformers checkpoints, strictly: every tensor or an error. File IO and the two
directions, over the family tables of model/hf/<family>.py and the engine of model/hf/mapping.py.

  cfg, params = hf.from_pretrained('path/to/bert', scan_layers=False)   # config.json + model.safetensors
  hf.save_pretrained(cfg, params, 'out/')     # transformers.BertModel.from_pretrained('out/') loads it

One declarative table per family lists (HF tensor name, our parameter path(s), kind); the same rows drive
both directions, so import and export cannot drift apart. Rows whose parameters the config does not have
(biases of T5, the pooler of an MLM model, ...) are skipped; whatever is then left over on either side --
a tensor no parameter takes, a parameter no tensor fills -- is an error that names it. The only tensors
dropped silently are the ones explained here: non-parameter buffers (checked), tied duplicates of another
tensor (checked equal) and names the caller lists in `allow_unused`.

Where HF's behaviour depends on its version, we follow transformers 5 (what the tests run against): a
head matrix in the file that differs from the embeddings unties it, whatever tie_word_embeddings says.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.flax
import safetensors.numpy
from flax import traverse_util

from core.config import parse_enum
from core.paths import user_path
from model.config import EXECUTION_FIELDS, Family, Head, Inputs, ModelConfig, Position
from model.hf import albert, bert, distilbert, gpt2, roberta, t5, vit
from model.hf.mapping import CheckpointError, Entry, FamilySpec, hf_shape, table_entries, target_shapes, to_hf, to_ours
from model.params import Params, stack_layers, unstack_layers

# Every supported HF model type: a new family is a file like model/hf/bert.py and its entry here. An export
# goes to the first one of the config's family whose class expresses the config exactly.
SPECS: tuple[FamilySpec, ...] = (bert.SPEC, roberta.SPEC, distilbert.SPEC, albert.SPEC, vit.SPEC, gpt2.SPEC, t5.SPEC)
_SUPPORTED = ', '.join(f'{s.model_type}: {"/".join(s.classes)}' for s in SPECS)


# Weight files in the order HF prefers them; an index maps tensor names to shards in the same format.
_WEIGHT_FILES = ('model.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin',
                 'pytorch_model.bin.index.json')


def _read_file(file: Path) -> dict[str, np.ndarray]:
  if file.suffix == '.safetensors':
    try:
      tensors = safetensors.numpy.load_file(file)
    except TypeError:  # numpy has no bfloat16: read through jax, which has it.
      tensors = {k: np.asarray(v) for k, v in safetensors.flax.load_file(file).items()}
  else:
    import torch  # pylint: disable=import-outside-toplevel  # only legacy .bin files need torch
    state = torch.load(file, map_location='cpu', weights_only=True)
    tensors = {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in state.items()}
  return {k: v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) or v.dtype.name == 'bfloat16' else v
          for k, v in tensors.items()}


def _read_tensors(path: Path) -> dict[str, np.ndarray]:
  found = next((path / f for f in _WEIGHT_FILES if (path / f).is_file()), None)
  if found is None:
    raise CheckpointError(f'{path}: no weights; looked for {", ".join(_WEIGHT_FILES)}')
  files = [found]
  if found.name.endswith('.index.json'):
    files = [path / f for f in sorted(set(json.loads(found.read_text())['weight_map'].values()))]
  tensors: dict[str, np.ndarray] = {}
  for file in files:
    part = _read_file(file)
    if twice := sorted(tensors.keys() & part.keys()):
      raise CheckpointError(f'{file}: tensors also in an earlier shard: {twice}')
    tensors.update(part)
  return tensors


def _canonical(spec: FamilySpec, name: str) -> str:
  """The table's name of a file's tensor: TF-era LayerNorm gamma/beta renamed, the base prefix added."""
  name = re.sub(r'LayerNorm\.gamma$', 'LayerNorm.weight', re.sub(r'LayerNorm\.beta$', 'LayerNorm.bias', name))
  if spec.prefix and not name.startswith((spec.prefix, *spec.head_prefixes)):
    name = spec.prefix + name
  for pattern, replacement in spec.renames:
    name = re.sub(pattern, replacement, name)
  return name


def _spec_for(hf_config: Mapping[str, Any]) -> tuple[FamilySpec, str]:
  model_type = hf_config.get('model_type')
  spec = next((s for s in SPECS if s.model_type == model_type), None)
  if spec is None:
    raise CheckpointError(f'unsupported model_type {model_type!r}; supported: {_SUPPORTED}')
  arch = (hf_config.get('architectures') or [next(iter(spec.classes))])[0]
  if arch not in spec.classes:
    raise CheckpointError(f'unsupported architecture {arch!r} of model_type {model_type!r}; supported: '
                          f'{_SUPPORTED}')
  return spec, arch


def _names(names: Sequence[str], limit: int = 20) -> str:
  names = sorted(names)
  more = f' ... and {len(names) - limit} more' if len(names) > limit else ''
  return ', '.join(names[:limit]) + more


def config_from_pretrained(path: str | os.PathLike[str], **overrides: Any) -> ModelConfig:
  """The ModelConfig of an HF checkpoint directory from its config.json alone, no weights read (`train.py
  --dry_run` plans a distillation teacher with it). The LM head counts as tied unless config.json says
  tie_word_embeddings=false; `from_pretrained` also looks at the weights (HF 5 unties a file whose head differs)."""
  hf_config = json.loads((user_path(path) / 'config.json').read_text())
  spec, arch = _spec_for(hf_config)
  return _model_config(hf_config, spec, arch, bool(hf_config.get('tie_word_embeddings', True)), overrides)


def _model_config(hf_config: Mapping[str, Any], spec: FamilySpec, arch: str, tied: bool,
                  overrides: Mapping[str, Any]) -> ModelConfig:
  """config.json's fields as ours, the architecture's head (or overrides['head'], e.g. 'none': the backbone of a
  task model), `overrides` on top."""
  head = Head(overrides.get('head', spec.classes[arch]))
  return ModelConfig.from_dict({**spec.to_fields(hf_config, head, tied), **overrides})


def from_pretrained(path: str | os.PathLike[str], *, allow_unused: Sequence[str] = (),
                    **overrides: Any) -> tuple[ModelConfig, Params]:
  """Reads an HF checkpoint directory into (ModelConfig, params).

  The config comes from config.json (`model_type`, `architectures[0]`), with `overrides` (ModelConfig
  fields, e.g. scan_layers=False, param_dtype='bfloat16') on top. Weights come from model.safetensors (or
  its sharded index) or a legacy pytorch_model.bin. Params are float arrays in cfg.param_dtype, stacked
  when cfg.scan_layers. Every tensor must fill a parameter and every parameter must be filled, or a
  CheckpointError names the culprits; tensors matching a regex of `allow_unused` (re.match against the
  name in the file) are dropped on purpose, e.g. ('cls.seq_relationship.',) for a pretraining checkpoint.
  """
  path = user_path(path)
  hf_config = json.loads((path / 'config.json').read_text())
  spec, arch = _spec_for(hf_config)
  tensors, file_names = _read_canonical(spec, path)
  # Tied unless the file holds a different head matrix (as HF 5 decides); a family without an LM head has no alias.
  head, embedding = spec.aliases[0] if spec.aliases else (None, None)
  tied = (bool(hf_config.get('tie_word_embeddings', True)) if head not in tensors
          else embedding in tensors and np.array_equal(tensors[head], tensors[embedding]))
  cfg = _model_config(hf_config, spec, arch, tied, overrides)
  target = target_shapes(cfg)
  groups: dict[tuple[str, ...], list[Entry]] = {}
  for e in table_entries(spec.rows(cfg.head), cfg, target):
    groups.setdefault(e.ours, []).append(e)

  flat: dict[str, np.ndarray] = {}
  missing, taken = [], set()
  for ours, entries in groups.items():
    present = [e for e in entries if e.hf in tensors]
    if not present:
      missing.append(' or '.join(e.hf for e in entries))
      continue
    e = present[0]
    taken.update(p.hf for p in present)
    for other in present[1:]:  # an alternative name that HF 5 does not compute with: ignored, as HF does
      if not np.array_equal(tensors[other.hf], tensors[e.hf]):
        warnings.warn(f'{path}: {file_names[other.hf]} differs from {file_names[e.hf]}; using the latter, '
                      'as transformers does')
    x, want = tensors[e.hf], hf_shape(e.kind, target[ours[0]])
    if x.shape != want:
      raise CheckpointError(f'{path}: {file_names[e.hf]} has shape {x.shape}; {arch} with this config needs {want}')
    flat.update(zip(ours, to_ours(e.kind, x, [target[o] for o in ours])))

  unused = [file_names[n] for n, x in tensors.items()
            if n not in taken and not _explained(spec, n, file_names[n], x, tensors, allow_unused)]
  unmapped = sorted(set(target) - {o for ours in groups for o in ours})
  if missing or unused or unmapped:
    raise CheckpointError(_mismatch(f'{path}: the weights do not match {arch} as configured by config.json'
                                    + (f' and overrides {sorted(overrides)}' if overrides else ''),
                                    spec, unused, missing, unmapped))
  params = traverse_util.unflatten_dict({k: jnp.asarray(v, cfg.param_dtype) for k, v in flat.items()}, sep='/')
  return cfg, stack_layers(params) if cfg.scan_layers else params


def _read_canonical(spec: FamilySpec, path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """The checkpoint's tensors under the table's names, and each one's name in the file (for messages)."""
  tensors, file_names = {}, {}
  for file_name, x in _read_tensors(path).items():
    name = _canonical(spec, file_name)
    if name in tensors:
      raise CheckpointError(f'{path}: {file_names[name]} and {file_name} are the same tensor {name}')
    tensors[name], file_names[name] = x, file_name
  return tensors, file_names


def _mismatch(title: str, spec: FamilySpec, unused: Sequence[str], missing: Sequence[str],
              unmapped: Sequence[str]) -> str:
  lines = [title + ':']
  if unused:
    lines.append(f'  {len(unused)} tensor(s) in the file that no parameter takes: {_names(unused)}; if they '
                 'are not needed (e.g. a pretraining head), drop them with allow_unused=[regex, ...]')
  if missing:
    lines.append(f'  {len(missing)} tensor(s) missing from the file: {_names(missing)}')
  if unmapped:
    lines.append(f'  {len(unmapped)} parameter(s) that no {spec.model_type} tensor can fill: {_names(unmapped)}')
  return '\n'.join(lines)


def _explained(spec: FamilySpec, name: str, file_name: str, x: np.ndarray, tensors: Mapping[str, np.ndarray],
               allow_unused: Sequence[str]) -> bool:
  """Whether a tensor no parameter took may be dropped: asked for, a checked buffer or a tied duplicate."""
  if any(re.match(p, file_name) or re.match(p, name) for p in allow_unused):
    return True
  for pattern, check in spec.buffers:
    if re.fullmatch(pattern, name):
      if not check(x):
        raise CheckpointError(f'{file_name}: a buffer whose values are not what the model computes itself')
      return True
  for alias, source in spec.aliases:
    if name == alias and source in tensors:
      if not np.array_equal(x, tensors[source]):
        raise CheckpointError(f'{file_name} should be a tied copy of {source} but differs from it')
      return True
  return False


def save_pretrained(cfg: ModelConfig, params: Params, path: str | os.PathLike[str], *,
                    head: Head | str | None = None) -> None:
  """Writes config.json and model.safetensors that HF's class for `cfg` loads with no missing or unexpected
  keys and the same outputs. `params` may be scanned or not. A config HF cannot express is an error.

  head: export as a model with this head instead, one whose parameters are a part of these (`_with_head`): an
  ALBERT pretraining model (head=pretraining, AlbertForPreTraining by default) as head='lm' (AlbertForMaskedLM:
  the pooler and the sentence-order classifier left out) or head='none' (AlbertModel, with the pooler)."""
  if head is not None:
    cfg, params = _with_head(cfg, params, parse_enum(Head, head, field='save_pretrained head', what='head',
                                                     error=CheckpointError))
  if (cfg.target_mean, cfg.target_scale) != (0.0, 1.0):  # HF's regression head has no such affine: fold it in
    head = params['classifier']
    params = params | {'classifier': {'kernel': head['kernel'] * cfg.target_scale,
                                      'bias': head['bias'] * cfg.target_scale + cfg.target_mean}}
    cfg = cfg.replace(target_mean=0.0, target_scale=1.0)
  spec, hf_config = _export_spec(cfg)

  flat = {k: np.asarray(jax.device_get(v), np.float32)
          for k, v in traverse_util.flatten_dict(unstack_layers(params), sep='/').items()}
  target = target_shapes(cfg)
  wrong = {k: v.shape for k, v in flat.items() if k in target and v.shape != target[k]}
  if flat.keys() != target.keys() or wrong:
    raise CheckpointError(f'params do not match the config: missing {_names(target.keys() - flat.keys())}; '
                          f'extra {_names(flat.keys() - target.keys())}; wrong shapes {wrong}')
  tensors, written = {}, set()
  for e in table_entries(spec.rows(cfg.head), cfg, target):
    name = e.hf.removeprefix(spec.prefix) if cfg.head is Head.NONE else e.hf  # headless classes: no prefix
    tensors[name] = np.ascontiguousarray(to_hf(e.kind, [flat[o] for o in e.ours]), np.float32)
    written.update(e.ours)
  if unwritten := target.keys() - written:  # a parameter the table does not know: a bug here, not the user's
    raise CheckpointError(f'no {spec.model_type} tensor for parameter(s) {_names(unwritten)}')

  path = user_path(path)
  path.mkdir(parents=True, exist_ok=True)
  safetensors.numpy.save_file(tensors, path / 'model.safetensors', metadata={'format': 'pt'})
  (path / 'config.json').write_text(json.dumps(hf_config, indent=2, sort_keys=True) + '\n')


def _with_head(cfg: ModelConfig, params: Params, head: Head) -> tuple[ModelConfig, Params]:
  """`cfg` with `head` and the part of `params` such a model has; a head that needs parameters these lack (the
  sentence-order classifier of an MLM, say) is an error naming them. HF's MLM classes have no pooler, its
  classifiers and pretraining classes need one, its headless classes keep the one there is."""
  if head is cfg.head:
    return cfg, params
  pooler = head in (Head.CLASSIFIER, Head.PRETRAINING) or (head is Head.NONE and cfg.pooler)
  narrowed = cfg.replace(head=head, pooler=pooler, lm_head_bias=cfg.lm_head_bias and head.lm,
                         scale_tied_logits=cfg.scale_tied_logits and head.lm,
                         num_labels=cfg.num_labels if head is Head.CLASSIFIER else 0)
  flat = traverse_util.flatten_dict(unstack_layers(params), sep='/')
  target = target_shapes(narrowed)
  if lacking := sorted(k for k, shape in target.items() if k not in flat or tuple(flat[k].shape) != shape):
    raise CheckpointError(f'save_pretrained(head={head.value!r}): a model of head={cfg.head.value} has no '
                          f'{_names(lacking)}; export it as head={cfg.head.value!r}, or as a head whose parameters '
                          'it holds')
  return narrowed, traverse_util.unflatten_dict({k: flat[k] for k in target}, sep='/')


# Fields that do not change what a checkpoint computes: how it runs, its precision, layout and initialisation.
_RUNTIME_FIELDS = EXECUTION_FIELDS + ('dtype', 'param_dtype', 'scan_layers', 'init_std')
_DROPOUT_FIELDS = ('dropout_rate', 'attention_dropout_rate', 'ffn_dropout_rate', 'final_dropout')


def _architecture(cfg: ModelConfig) -> dict[str, Any]:
  """The fields that decide the function a checkpoint computes, with defaults resolved."""
  out = cfg.to_dict()
  out.update(head_dim=cfg.kv_dim,
             num_decoder_layers=cfg.decoder_layers if cfg.family is Family.ENCODER_DECODER else None,
             num_layer_groups=cfg.layer_groups)
  irrelevant = list(_RUNTIME_FIELDS + _DROPOUT_FIELDS)
  if cfg.position is not Position.RELATIVE:
    irrelevant += ['relative_buckets', 'relative_max_distance']
  if cfg.position is not Position.ROPE:
    irrelevant.append('rope_base')
  if cfg.position not in (Position.LEARNED, Position.SINUSOIDAL) or cfg.inputs is Inputs.PATCHES:
    irrelevant.append('max_len')
  if cfg.inputs is Inputs.PATCHES:  # images have no token table nor LM head
    irrelevant += ['vocab_size', 'tie_embeddings']
  return {k: v for k, v in out.items() if k not in irrelevant}


def _export_spec(cfg: ModelConfig) -> tuple[FamilySpec, dict[str, Any]]:
  """The first spec whose class for `cfg.head` expresses `cfg` exactly, and the config.json it writes; else an
  error that says, class by class, what each cannot express."""
  reasons = []
  for spec in SPECS:
    if spec.family is not cfg.family or cfg.head not in spec.classes.values():
      continue
    arch = spec.arch(cfg.head)
    try:
      hf_config = {'model_type': spec.model_type, 'architectures': [arch], **spec.to_config(cfg)}
      _check_expressible(cfg, ModelConfig.from_dict(spec.to_fields(hf_config, cfg.head, cfg.tie_embeddings)), arch)
    except CheckpointError as e:
      reasons.append(str(e) if str(e).startswith(arch) else f'{arch} cannot express this config: {e}')
      continue
    return spec, hf_config
  if not reasons:
    raise CheckpointError(f'no HF class for family={cfg.family.value}, head={cfg.head.value}; supported: {_SUPPORTED}')
  raise CheckpointError('\n'.join(reasons))


def _check_expressible(cfg: ModelConfig, back: ModelConfig, arch: str) -> None:
  """`back` is `cfg` read back from the config.json we would write: any difference is something HF's
  class cannot express. Dropout differences only change training, so they warn."""
  ours, theirs = _architecture(cfg), _architecture(back)
  if diff := [f'{k}={ours[k]!r} (HF gives {theirs.get(k)!r})' for k in ours if ours[k] != theirs.get(k)]:
    raise CheckpointError(f'{arch} cannot express this config: {", ".join(diff)}')
  if drops := [f'{k}={getattr(cfg, k)} (HF: {getattr(back, k)})' for k in _DROPOUT_FIELDS
               if getattr(cfg, k) != getattr(back, k)]:
    warnings.warn(f'{arch} has other dropout rates; inference is unaffected: {", ".join(drops)}')
