"""Import and export of HF transformers checkpoints (BERT, GPT-2, T5), strictly: every tensor or an error.

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

import dataclasses
import json
import math
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.flax
import safetensors.numpy
from flax import traverse_util

from core.paths import user_path
from model.config import Activation, Family, Head, ModelConfig, Norm, NormPlacement, Position
from model.params import Params, build, init_params, stack_layers, unstack_layers


class CheckpointError(ValueError):
  """A checkpoint that cannot be read into (or written from) a ModelConfig exactly; the message says why."""


class Kind(NamedTuple):
  """How one HF tensor lays out the values of one or more of our arrays."""

  transpose: bool  # torch nn.Linear stores (out, in); embeddings and GPT-2's Conv1D store (in, out) like us.
  in_axes: int  # our leading axes that form HF's input axis ((heads, kv) of an attention output); 0: a vector.
  fused: int = 1  # HF concatenates this many of our arrays along its last axis (GPT-2's c_attn: q, k, v).


EMBED = Kind(False, 1)  # (N, D) tables; also T5's (buckets, heads) relative bias.
VECTOR = Kind(False, 0)  # biases and norm scales: HF (H*Dh,) <-> ours (H, Dh).
LINEAR = Kind(True, 1)  # nn.Linear (out, in) <-> kernel (in, *out).
LINEAR_OUT = Kind(True, 2)  # attention output: nn.Linear (D, H*Dh) <-> kernel (H, Dh, D).
CONV1D = Kind(False, 1)  # GPT-2 Conv1D (in, out) <-> kernel (in, *out).
CONV1D_OUT = Kind(False, 2)
QKV = Kind(False, 1, 3)  # GPT-2 c_attn.weight (D, 3*H*Dh) <-> query, key, value kernels (D, H, Dh).
QKV_BIAS = Kind(False, 0, 3)  # c_attn.bias (3*H*Dh,) <-> query, key, value biases (H, Dh).

# (HF name, our '/'-joined path or paths, kind); '{i}' is a layer of the stack our path starts with. HF
# names are those of the task classes (`bert.`/`transformer.` prefixed); the headless classes drop it.
# Rows with the same parameters are alternative names of one tensor (see BERT's vocabulary bias).
Row = tuple[str, str | tuple[str, ...], Kind]


def _dense(hf: str, ours: str, kind: Kind = LINEAR) -> list[Row]:
  return [(f'{hf}.weight', f'{ours}/kernel', kind), (f'{hf}.bias', f'{ours}/bias', VECTOR)]


def _norm(hf: str, ours: str) -> list[Row]:
  return [(f'{hf}.weight', f'{ours}/scale', VECTOR), (f'{hf}.bias', f'{ours}/bias', VECTOR)]


def _attention(hf: str, ours: str, names: Sequence[str]) -> list[Row]:
  """Separate nn.Linear q, k, v, out projections (`names` are HF's for them)."""
  return [row for n, o in zip(names, ('query', 'key', 'value', 'out'))
          for row in _dense(f'{hf}.{n}', f'{ours}/{o}', LINEAR_OUT if o == 'out' else LINEAR)]


_BERT_LAYER = 'bert.encoder.layer.{i}'
BERT_TABLE: tuple[Row, ...] = (
    ('bert.embeddings.word_embeddings.weight', 'token_embed/embedding', EMBED),
    ('bert.embeddings.position_embeddings.weight', 'encoder/position_embed/embedding', EMBED),
    ('bert.embeddings.token_type_embeddings.weight', 'encoder/type_embed/embedding', EMBED),
    *_norm('bert.embeddings.LayerNorm', 'encoder/embed_norm'),
    *_attention(f'{_BERT_LAYER}.attention', 'encoder/layers_{i}/self_attn',
                ('self.query', 'self.key', 'self.value', 'output.dense')),
    *_norm(f'{_BERT_LAYER}.attention.output.LayerNorm', 'encoder/layers_{i}/self_attn_norm'),
    *_dense(f'{_BERT_LAYER}.intermediate.dense', 'encoder/layers_{i}/ffn/wi'),
    *_dense(f'{_BERT_LAYER}.output.dense', 'encoder/layers_{i}/ffn/wo'),
    *_norm(f'{_BERT_LAYER}.output.LayerNorm', 'encoder/layers_{i}/ffn_norm'),
    *_dense('bert.pooler.dense', 'pooler'),
    *_dense('cls.predictions.transform.dense', 'mlm_dense'),
    *_norm('cls.predictions.transform.LayerNorm', 'mlm_norm'),
    # Two names for the vocabulary bias: HF 4 made them one parameter; HF 5 computes with decoder.bias
    # (when the file has it) and leaves cls.predictions.bias unused in an untied model. Rows that share a
    # parameter are alternatives: import takes the first in the file, export writes both.
    ('cls.predictions.decoder.bias', 'lm_bias', VECTOR),
    ('cls.predictions.bias', 'lm_bias', VECTOR),
    ('cls.predictions.decoder.weight', 'lm_head/kernel', LINEAR),  # untied only; else a tied duplicate
    *_dense('classifier', 'classifier'),
)

_GPT2_LAYER = 'transformer.h.{i}'
GPT2_TABLE: tuple[Row, ...] = (
    ('transformer.wte.weight', 'token_embed/embedding', EMBED),
    ('transformer.wpe.weight', 'decoder/position_embed/embedding', EMBED),
    *_norm(f'{_GPT2_LAYER}.ln_1', 'decoder/layers_{i}/self_attn_norm'),
    (f'{_GPT2_LAYER}.attn.c_attn.weight', tuple(f'decoder/layers_{{i}}/self_attn/{n}/kernel'
                                                for n in ('query', 'key', 'value')), QKV),
    (f'{_GPT2_LAYER}.attn.c_attn.bias', tuple(f'decoder/layers_{{i}}/self_attn/{n}/bias'
                                              for n in ('query', 'key', 'value')), QKV_BIAS),
    *_dense(f'{_GPT2_LAYER}.attn.c_proj', 'decoder/layers_{i}/self_attn/out', CONV1D_OUT),
    *_norm(f'{_GPT2_LAYER}.ln_2', 'decoder/layers_{i}/ffn_norm'),
    *_dense(f'{_GPT2_LAYER}.mlp.c_fc', 'decoder/layers_{i}/ffn/wi', CONV1D),
    *_dense(f'{_GPT2_LAYER}.mlp.c_proj', 'decoder/layers_{i}/ffn/wo', CONV1D),
    *_norm('transformer.ln_f', 'decoder/final_norm'),
    ('lm_head.weight', 'lm_head/kernel', LINEAR),  # untied only
)


def _t5_stack(s: str) -> list[Row]:
  """One T5 stack; the decoder has cross-attention as sub-layer 1, which moves its FFN to sub-layer 2."""
  hf, ours = f'{s}.block.{{i}}.layer', f'{s}/layers_{{i}}'
  qkvo = ('q', 'k', 'v', 'o')
  ffn = 2 if s == 'decoder' else 1
  rows = [
      # Only block 0 holds the bias table; every layer of the stack uses it (our one per-stack table).
      (f'{s}.block.0.layer.0.SelfAttention.relative_attention_bias.weight', f'{s}/relpos_bias', EMBED),
      *_attention(f'{hf}.0.SelfAttention', f'{ours}/self_attn', qkvo),
      (f'{hf}.0.layer_norm.weight', f'{ours}/self_attn_norm/scale', VECTOR),
  ]
  if s == 'decoder':
    rows += [*_attention(f'{hf}.1.EncDecAttention', f'{ours}/cross_attn', qkvo),
             (f'{hf}.1.layer_norm.weight', f'{ours}/cross_attn_norm/scale', VECTOR)]
  rows += [(f'{hf}.{ffn}.DenseReluDense.{n}.weight', f'{ours}/ffn/{n}/kernel', LINEAR) for n in ('wi', 'wi_0', 'wi_1')]
  rows += [(f'{hf}.{ffn}.DenseReluDense.wo.weight', f'{ours}/ffn/wo/kernel', LINEAR),
           (f'{hf}.{ffn}.layer_norm.weight', f'{ours}/ffn_norm/scale', VECTOR),
           (f'{s}.final_layer_norm.weight', f'{s}/final_norm/scale', VECTOR)]
  return rows


T5_TABLE: tuple[Row, ...] = (
    ('shared.weight', 'token_embed/embedding', EMBED),
    *_t5_stack('encoder'),
    *_t5_stack('decoder'),
    ('lm_head.weight', 'lm_head/kernel', LINEAR),  # untied only (T5 v1.1)
)

# HF activation names; the export uses the first name of each of ours.
_ACTIVATIONS = {'gelu': Activation.GELU, 'gelu_new': Activation.GELU_TANH, 'relu': Activation.RELU,
                'silu': Activation.SILU, 'gelu_pytorch_tanh': Activation.GELU_TANH, 'swish': Activation.SILU}
_ACTIVATION_NAMES = {a: n for n, a in reversed(_ACTIVATIONS.items())}


def _activation(name: str) -> Activation:
  if name not in _ACTIVATIONS:
    raise CheckpointError(f'unsupported HF activation {name!r}; supported: {sorted(_ACTIVATIONS)}')
  return _ACTIVATIONS[name]


def _get(hf: Mapping[str, Any], key: str) -> Any:
  if key not in hf:
    raise CheckpointError(f'config.json has no {key!r}, which this model type needs')
  return hf[key]


def _unsupported(hf: Mapping[str, Any], **bad: Any) -> None:
  """Errors for config flags that change the computation in ways ModelConfig cannot express."""
  for key, value in bad.items():
    if key in hf and hf[key] != value:
      raise CheckpointError(f'config.json sets {key}={hf[key]!r}; only {value!r} is supported')


def _bert_fields(hf: Mapping[str, Any], head: Head, tied: bool) -> dict[str, Any]:
  _unsupported(hf, position_embedding_type='absolute', is_decoder=False, add_cross_attention=False)
  return dict(
      family=Family.ENCODER, vocab_size=_get(hf, 'vocab_size'), d_model=_get(hf, 'hidden_size'),
      num_heads=_get(hf, 'num_attention_heads'), d_ff=_get(hf, 'intermediate_size'),
      num_layers=_get(hf, 'num_hidden_layers'), max_len=hf.get('max_position_embeddings', 512),
      num_token_types=hf.get('type_vocab_size', 2), norm=Norm.LAYER, norm_placement=NormPlacement.POST,
      norm_eps=hf.get('layer_norm_eps', 1e-12), embed_norm=True, activation=_activation(hf.get('hidden_act', 'gelu')),
      dropout_rate=hf.get('hidden_dropout_prob', 0.1),
      attention_dropout_rate=hf.get('attention_probs_dropout_prob', 0.1),
      ffn_dropout_rate=0.0, init_std=hf.get('initializer_range', 0.02), head=head, pooler=head is not Head.LM,
      tie_embeddings=tied, lm_head_bias=head is Head.LM,
      # HF's classifier_dropout (if set) only changes training; ours uses dropout_rate there.
      num_labels=len(hf.get('id2label') or {0: 0, 1: 1}) if head is Head.CLASSIFIER else 0)


def _bert_config(cfg: ModelConfig) -> dict[str, Any]:
  out = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_attention_heads=cfg.num_heads,
             intermediate_size=cfg.d_ff, num_hidden_layers=cfg.num_layers, max_position_embeddings=cfg.max_len,
             type_vocab_size=cfg.num_token_types, layer_norm_eps=cfg.norm_eps,
             hidden_act=_ACTIVATION_NAMES[cfg.activation], hidden_dropout_prob=cfg.dropout_rate,
             attention_probs_dropout_prob=cfg.attention_dropout_rate, initializer_range=cfg.init_std,
             tie_word_embeddings=cfg.tie_embeddings, pad_token_id=0)
  if cfg.head is Head.CLASSIFIER:
    out['id2label'] = {str(i): f'LABEL_{i}' for i in range(cfg.num_labels)}
    out['label2id'] = {f'LABEL_{i}': i for i in range(cfg.num_labels)}
    if cfg.num_labels == 1:
      out['problem_type'] = 'regression'
  return out


def _gpt2_fields(hf: Mapping[str, Any], head: Head, tied: bool) -> dict[str, Any]:
  _unsupported(hf, scale_attn_by_inverse_layer_idx=False, add_cross_attention=False)
  d_model, dropout = _get(hf, 'n_embd'), hf.get('resid_pdrop', 0.1)
  if hf.get('embd_pdrop', dropout) != dropout:  # only training differs: we have one rate for both
    warnings.warn(f'GPT-2 embd_pdrop={hf["embd_pdrop"]} != resid_pdrop={dropout}: using {dropout} for both')
  return dict(
      family=Family.DECODER, vocab_size=_get(hf, 'vocab_size'), d_model=d_model, num_heads=_get(hf, 'n_head'),
      d_ff=hf.get('n_inner') or 4 * d_model, num_layers=_get(hf, 'n_layer'), max_len=_get(hf, 'n_positions'),
      norm=Norm.LAYER, norm_placement=NormPlacement.PRE, norm_eps=hf.get('layer_norm_epsilon', 1e-5),
      activation=_activation(hf.get('activation_function', 'gelu_new')),
      scale_attention=hf.get('scale_attn_weights', True), dropout_rate=dropout,
      attention_dropout_rate=hf.get('attn_pdrop', 0.1), ffn_dropout_rate=0.0,
      init_std=hf.get('initializer_range', 0.02), head=head, tie_embeddings=tied)


def _gpt2_config(cfg: ModelConfig) -> dict[str, Any]:
  return dict(vocab_size=cfg.vocab_size, n_embd=cfg.d_model, n_head=cfg.num_heads, n_inner=cfg.d_ff,
              n_layer=cfg.num_layers, n_positions=cfg.max_len, layer_norm_epsilon=cfg.norm_eps,
              activation_function=_ACTIVATION_NAMES[cfg.activation], scale_attn_weights=cfg.scale_attention,
              resid_pdrop=cfg.dropout_rate, embd_pdrop=cfg.dropout_rate, attn_pdrop=cfg.attention_dropout_rate,
              initializer_range=cfg.init_std, tie_word_embeddings=cfg.tie_embeddings)


def _t5_fields(hf: Mapping[str, Any], head: Head, tied: bool) -> dict[str, Any]:
  proj = hf.get('feed_forward_proj', 'relu')
  gated, act = proj.startswith('gated-'), proj.split('-')[-1]
  if proj == 'gated-gelu':  # HF's historical alias: T5 v1.1's gated-gelu is the tanh approximation.
    act = 'gelu_new'
  # Tied models scale the decoder output by d_model**-0.5 (T5 v1.0). transformers 5 stores that as
  # `scale_decoder_outputs` (and always says tie_word_embeddings=True); before, tie_word_embeddings=False
  # (T5 v1.1) meant both untied and unscaled.
  scale = hf.get('scale_decoder_outputs', hf.get('tie_word_embeddings', True) is not False)
  if scale and not tied:
    raise CheckpointError('this T5 checkpoint has an untied lm_head.weight but scales the decoder output by '
                          'd_model**-0.5, which only a tied head does here (scale_tied_logits)')
  rate = hf.get('dropout_rate', 0.1)  # T5 uses one rate for embeddings, sub-layers, attention and the FFN.
  layers = _get(hf, 'num_layers')
  return dict(
      family=Family.ENCODER_DECODER, vocab_size=_get(hf, 'vocab_size'), d_model=_get(hf, 'd_model'),
      num_heads=_get(hf, 'num_heads'), head_dim=_get(hf, 'd_kv'), d_ff=_get(hf, 'd_ff'), num_layers=layers,
      num_decoder_layers=hf.get('num_decoder_layers') or layers, position=Position.RELATIVE,
      relative_buckets=hf.get('relative_attention_num_buckets', 32),
      relative_max_distance=hf.get('relative_attention_max_distance', 128), norm=Norm.RMS,
      norm_placement=NormPlacement.PRE, norm_eps=hf.get('layer_norm_epsilon', 1e-6), use_bias=False,
      scale_attention=False, activation=_activation(act), gated_ffn=gated, dropout_rate=rate,
      attention_dropout_rate=rate, ffn_dropout_rate=rate, final_dropout=True, head=head, tie_embeddings=tied,
      scale_tied_logits=tied and scale)


def _t5_config(cfg: ModelConfig) -> dict[str, Any]:
  proj = _ACTIVATION_NAMES[cfg.activation]
  if cfg.gated_ffn:  # 'gated-gelu' always means the tanh GELU, so a gated exact GELU fails the round trip.
    proj = 'gated-gelu' if cfg.activation is Activation.GELU_TANH else f'gated-{proj}'
  return dict(vocab_size=cfg.vocab_size, d_model=cfg.d_model, num_heads=cfg.num_heads, d_kv=cfg.kv_dim,
              d_ff=cfg.d_ff, num_layers=cfg.num_layers, num_decoder_layers=cfg.decoder_layers,
              relative_attention_num_buckets=cfg.relative_buckets,
              relative_attention_max_distance=cfg.relative_max_distance, layer_norm_epsilon=cfg.norm_eps,
              feed_forward_proj=proj, dropout_rate=cfg.dropout_rate, tie_word_embeddings=cfg.tie_embeddings,
              scale_decoder_outputs=cfg.scale_tied_logits, is_encoder_decoder=True)


def _is_arange(x: np.ndarray) -> bool:
  return np.array_equal(x.reshape(-1), np.arange(x.size))


def _is_causal(x: np.ndarray) -> bool:
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

  def arch(self, head: Head) -> str:
    return next(name for name, h in self.classes.items() if h is head)


SPECS = (
    FamilySpec(
        model_type='bert', family=Family.ENCODER,
        classes={'BertModel': Head.NONE, 'BertForMaskedLM': Head.LM, 'BertForSequenceClassification': Head.CLASSIFIER},
        prefix='bert.', head_prefixes=('cls.', 'classifier.'), table=BERT_TABLE, to_fields=_bert_fields,
        to_config=_bert_config,
        aliases=(('cls.predictions.decoder.weight', 'bert.embeddings.word_embeddings.weight'),),
        buffers=((r'bert\.embeddings\.position_ids', _is_arange),)),
    FamilySpec(
        model_type='gpt2', family=Family.DECODER, classes={'GPT2Model': Head.NONE, 'GPT2LMHeadModel': Head.LM},
        prefix='transformer.', head_prefixes=('lm_head.',), table=GPT2_TABLE, to_fields=_gpt2_fields,
        to_config=_gpt2_config,
        aliases=(('lm_head.weight', 'transformer.wte.weight'),),
        # Old checkpoints saved the causal mask and its fill value as buffers.
        buffers=((r'transformer\.h\.\d+\.attn\.bias', _is_causal),
                 (r'transformer\.h\.\d+\.attn\.masked_bias', lambda x: x.size == 1))),
    FamilySpec(
        model_type='t5', family=Family.ENCODER_DECODER,
        classes={'T5ForConditionalGeneration': Head.LM, 'T5WithLMHeadModel': Head.LM},  # the latter: old name
        prefix='', head_prefixes=(), table=T5_TABLE, to_fields=_t5_fields, to_config=_t5_config,
        aliases=(('lm_head.weight', 'shared.weight'), ('encoder.embed_tokens.weight', 'shared.weight'),
                 ('decoder.embed_tokens.weight', 'shared.weight')),
        # Some old checkpoints carry a cross-attention bias table that HF itself never reads.
        buffers=((r'decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight',
                  lambda x: True),)),
)
_SUPPORTED = ', '.join(f'{s.model_type}: {"/".join(s.classes)}' for s in SPECS)


class Entry(NamedTuple):
  """One table row for one layer."""

  hf: str
  ours: tuple[str, ...]
  kind: Kind


def _entries(table: Sequence[Row], cfg: ModelConfig, target: Mapping[str, tuple[int, ...]]) -> list[Entry]:
  """The rows expanded over layers, keeping those whose parameters exist for `cfg`."""
  out = []
  for hf, ours, kind in table:
    ours = (ours,) if isinstance(ours, str) else ours
    layers = cfg.decoder_layers if ours[0].startswith('decoder/') else cfg.num_layers
    for i in range(layers) if '{i}' in hf else (0,):
      entry = Entry(hf.format(i=i), tuple(o.format(i=i) for o in ours), kind)
      if all(o in target for o in entry.ours):
        out.append(entry)
  return out


def _hf_shape(kind: Kind, shape: tuple[int, ...]) -> tuple[int, ...]:
  """HF's shape for `kind.fused` of our arrays of `shape`."""
  if kind.in_axes == 0:
    mat = (math.prod(shape) * kind.fused,)
  else:
    mat = (math.prod(shape[:kind.in_axes]), math.prod(shape[kind.in_axes:]) * kind.fused)
  return mat[::-1] if kind.transpose else mat


def _to_hf(kind: Kind, arrays: Sequence[np.ndarray]) -> np.ndarray:
  parts = [a.reshape(-1) if kind.in_axes == 0 else a.reshape(math.prod(a.shape[:kind.in_axes]), -1) for a in arrays]
  x = np.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
  return x.T if kind.transpose else x


def _to_ours(kind: Kind, x: np.ndarray, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
  x = x.T if kind.transpose else x
  parts = np.split(x, kind.fused, axis=-1) if kind.fused > 1 else [x]
  return [p.reshape(s) for p, s in zip(parts, shapes)]


def _target_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
  """Our unscanned parameter shapes by '/'-joined path, from shapes alone (nothing allocated)."""
  tree = jax.eval_shape(lambda: init_params(build(cfg.replace(scan_layers=False)), jax.random.key(0)))
  return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(tree, sep='/').items()}


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
  head, embedding = spec.aliases[0]  # tied unless the file holds a different head matrix (as HF 5 decides)
  tied = (bool(hf_config.get('tie_word_embeddings', True)) if head not in tensors
          else embedding in tensors and np.array_equal(tensors[head], tensors[embedding]))
  head = Head(overrides.get('head', spec.classes[arch]))  # e.g. head='none': the backbone of a task model
  cfg = ModelConfig.from_dict({**spec.to_fields(hf_config, head, tied), **overrides})
  target = _target_shapes(cfg)
  groups: dict[tuple[str, ...], list[Entry]] = {}
  for e in _entries(spec.table, cfg, target):
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
    x, want = tensors[e.hf], _hf_shape(e.kind, target[ours[0]])
    if x.shape != want:
      raise CheckpointError(f'{path}: {file_names[e.hf]} has shape {x.shape}; {arch} with this config needs {want}')
    flat.update(zip(ours, _to_ours(e.kind, x, [target[o] for o in ours])))

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


def save_pretrained(cfg: ModelConfig, params: Params, path: str | os.PathLike[str]) -> None:
  """Writes config.json and model.safetensors that HF's class for `cfg` loads with no missing or unexpected
  keys and the same outputs. `params` may be scanned or not. A config HF cannot express is an error."""
  spec = next((s for s in SPECS if s.family is cfg.family), None)
  if spec is None or cfg.head not in spec.classes.values():
    raise CheckpointError(f'no HF class for family={cfg.family.value}, head={cfg.head.value}; supported: {_SUPPORTED}')
  if (cfg.target_mean, cfg.target_scale) != (0.0, 1.0):  # HF's regression head has no such affine: fold it in
    head = params['classifier']
    params = params | {'classifier': {'kernel': head['kernel'] * cfg.target_scale,
                                      'bias': head['bias'] * cfg.target_scale + cfg.target_mean}}
    cfg = cfg.replace(target_mean=0.0, target_scale=1.0)
  arch = spec.arch(cfg.head)
  hf_config = {'model_type': spec.model_type, 'architectures': [arch], **spec.to_config(cfg)}
  _check_expressible(cfg, ModelConfig.from_dict(spec.to_fields(hf_config, cfg.head, cfg.tie_embeddings)), arch)

  flat = {k: np.asarray(jax.device_get(v), np.float32)
          for k, v in traverse_util.flatten_dict(unstack_layers(params), sep='/').items()}
  target = _target_shapes(cfg)
  wrong = {k: v.shape for k, v in flat.items() if k in target and v.shape != target[k]}
  if flat.keys() != target.keys() or wrong:
    raise CheckpointError(f'params do not match the config: missing {_names(target.keys() - flat.keys())}; '
                          f'extra {_names(flat.keys() - target.keys())}; wrong shapes {wrong}')
  tensors, written = {}, set()
  for e in _entries(spec.table, cfg, target):
    name = e.hf.removeprefix(spec.prefix) if cfg.head is Head.NONE else e.hf  # headless classes: no prefix
    tensors[name] = np.ascontiguousarray(_to_hf(e.kind, [flat[o] for o in e.ours]), np.float32)
    written.update(e.ours)
  if unwritten := target.keys() - written:  # a parameter the table does not know: a bug here, not the user's
    raise CheckpointError(f'no {spec.model_type} tensor for parameter(s) {_names(unwritten)}')

  path = user_path(path)
  path.mkdir(parents=True, exist_ok=True)
  safetensors.numpy.save_file(tensors, path / 'model.safetensors', metadata={'format': 'pt'})
  (path / 'config.json').write_text(json.dumps(hf_config, indent=2, sort_keys=True) + '\n')


# Fields that do not change what a checkpoint computes: runtime choices and initialisation.
_RUNTIME_FIELDS = ('dtype', 'param_dtype', 'attention_impl', 'scan_layers', 'remat', 'init_std')
_DROPOUT_FIELDS = ('dropout_rate', 'attention_dropout_rate', 'ffn_dropout_rate', 'final_dropout')


def _architecture(cfg: ModelConfig) -> dict[str, Any]:
  """The fields that decide the function a checkpoint computes, with defaults resolved."""
  out = cfg.to_dict()
  out.update(head_dim=cfg.kv_dim,
             num_decoder_layers=cfg.decoder_layers if cfg.family is Family.ENCODER_DECODER else None)
  irrelevant = list(_RUNTIME_FIELDS + _DROPOUT_FIELDS)
  if cfg.position is not Position.RELATIVE:
    irrelevant += ['relative_buckets', 'relative_max_distance']
  if cfg.position is not Position.ROPE:
    irrelevant.append('rope_base')
  if cfg.position not in (Position.LEARNED, Position.SINUSOIDAL):
    irrelevant.append('max_len')
  return {k: v for k, v in out.items() if k not in irrelevant}


def _check_expressible(cfg: ModelConfig, back: ModelConfig, arch: str) -> None:
  """`back` is `cfg` read back from the config.json we would write: any difference is something HF's
  class cannot express. Dropout differences only change training, so they warn."""
  ours, theirs = _architecture(cfg), _architecture(back)
  if diff := [f'{k}={ours[k]!r} (HF gives {theirs.get(k)!r})' for k in ours if ours[k] != theirs.get(k)]:
    raise CheckpointError(f'{arch} cannot express this config: {", ".join(diff)}')
  if drops := [f'{k}={getattr(cfg, k)} (HF: {getattr(back, k)})' for k in _DROPOUT_FIELDS
               if getattr(cfg, k) != getattr(back, k)]:
    warnings.warn(f'{arch} has other dropout rates; inference is unaffected: {", ".join(drops)}')
