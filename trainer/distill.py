"""Knowledge distillation (Hinton et al. 2015) with DistilBERT's loss (Sanh et al. 2019): `config.distill`.

The student trains on a weighted sum of three losses against a teacher that runs in the same jitted step
(deterministic, no gradient, its parameters an input of the step that is never updated nor checkpointed):

  loss = alpha_kl   * T^2 KL(softmax(teacher / T) || softmax(student / T))   mean over the weighted positions
       + alpha_hard * the objective's own loss (cross-entropy, z-loss)          mean over the weighted positions
       + alpha_cos  * (1 - cos(student hidden, teacher hidden))                 mean over the real tokens

The weighted positions are the objective's: a classifier's labelled examples (its class logits), the masked
positions of MLM or every target of a language model (vocabulary logits). The hidden states are the last
layer's, compared at every real token (attention mask / packed segments), as DistilBERT does.

  config.distill.teacher = 'runs/movie_binary'          # one of our workdirs, or an HF checkpoint directory
  config.distill.init_student = 'alternate_layers'      # student layer i <- teacher layer 2i; embeddings copied

Loading the teacher (our checkpoint or HF) onto the mesh is the run's (trainer/runner.py); this module holds
the config, the checks, the loss and the student's initialisation from the teacher's layers.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util

import model
from core.config import ConfigError, known_fields, parse_enum
from model.config import Family, Head, ModelConfig
from objectives import LossKind
from trainer import losses

Params = Any
Sums = losses.Sums


class InitStudent(enum.Enum):
  """Where the student's first parameters come from."""
  OWN = 'own'  # its own initialisation (or train.init_from)
  # DistilBERT: student layer i is teacher layer 2i (0, 2, 4, ...); embeddings, norms and same-shaped heads copied.
  ALTERNATE_LAYERS = 'alternate_layers'


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistillConfig:
  """`config.distill`, typed. Off while `teacher` is empty. The defaults are DistilBERT's (its train.py:
  temperature 2, alpha_ce 5, alpha_mlm 2, alpha_cos 1)."""

  teacher: str = ''  # one of our workdirs or an HF checkpoint directory; '' = no distillation
  temperature: float = 2.0  # T: both models' logits divided by T in the KL, which is then multiplied by T^2
  alpha_kl: float = 5.0  # weight of the soft-target KL
  alpha_hard: float = 2.0  # weight of the objective's own loss on the labels (or MLM targets)
  alpha_cos: float = 1.0  # weight of the cosine loss between last hidden states (needs the same d_model)
  init_student: InitStudent = InitStudent.OWN

  def __post_init__(self) -> None:
    object.__setattr__(self, 'init_student', parse_enum(InitStudent, self.init_student, field='distill.init_student',
                                                        what='student initialisation'))
    if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature) and self.temperature > 0):
      raise ConfigError(f'distill.temperature={self.temperature!r}: must be a number > 0 (the logits are divided by '
                        'it); DistilBERT uses 2.0')
    for name in ('alpha_kl', 'alpha_hard', 'alpha_cos'):
      value = getattr(self, name)
      if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ConfigError(f'distill.{name}={value!r}: a loss weight must be a number >= 0 (0 = that loss off)')
    if not (self.alpha_kl or self.alpha_hard or self.alpha_cos):
      raise ConfigError('distill.alpha_kl, distill.alpha_hard and distill.alpha_cos are all 0: nothing would train '
                        'the student; set at least one > 0 (DistilBERT: 5, 2, 1)')
    if self.init_student is not InitStudent.OWN and not self.teacher:
      raise ConfigError(f'distill.init_student={self.init_student.value} copies the teacher\'s layers, but '
                        'distill.teacher is empty: set --config.distill.teacher=<workdir or HF directory>')

  @classmethod
  def from_dict(cls, values: Mapping[str, Any] | None) -> DistillConfig:
    """From `config.distill` (absent: off); unknown keys are an error naming the closest valid ones."""
    return cls(**known_fields(cls, values, section='distill'))

  @property
  def enabled(self) -> bool:
    return bool(self.teacher)


@dataclasses.dataclass(frozen=True)
class Teacher:
  """The loaded teacher: its module (static in the step) and parameters (an input of the step, placed with
  the logical-axis shardings a student of its config would have)."""

  path: str  # distill.teacher as given
  module: model.Transformer
  params: Params


# --- checks, before anything compiles -------------------------------------------------------------------------

def check_teacher(cfg: DistillConfig, student: ModelConfig, teacher: ModelConfig) -> None:
  """Errors naming the field and the fix for a teacher this student cannot learn from (or be initialised from)."""
  where = f'distill.teacher={cfg.teacher!r}'
  if teacher.vocab_size != student.vocab_size:
    raise ConfigError(f'{where} has model.vocab_size={teacher.vocab_size} but the student has model.vocab_size='
                      f'{student.vocab_size}: teacher and student must share one tokenizer (the teacher reads the '
                      "student's ids, the KL compares their logits entry by entry); use the teacher's tokenizer and "
                      f'--config.model.vocab_size={teacher.vocab_size}, or a teacher of this vocabulary')
  if (teacher.family, teacher.head) != (student.family, student.head):
    raise ConfigError(f'{where} is a family={teacher.family.value} model with head={teacher.head.value}, the student '
                      f'family={student.family.value} with head={student.head.value}: the KL compares the same '
                      'head\'s logits; distil a classifier from a fine-tuned classifier (a configs/glue.py run), an '
                      'LM from an LM of the same family')
  if student.head is Head.CLASSIFIER and teacher.num_labels != student.num_labels:
    raise ConfigError(f'{where} predicts model.num_labels={teacher.num_labels} classes, the student '
                      f'{student.num_labels}: set --config.model.num_labels={teacher.num_labels}, or distil from a '
                      'teacher of this task')
  if cfg.alpha_cos and teacher.d_model != student.d_model:
    raise ConfigError(f'distill.alpha_cos={cfg.alpha_cos}: the cosine loss compares hidden states, but the '
                      f'teacher\'s model.d_model={teacher.d_model} and the student\'s {student.d_model}: set '
                      '--config.distill.alpha_cos=0, or a student of the teacher\'s width')
  if cfg.init_student is InitStudent.ALTERNATE_LAYERS:
    _check_alternate_layers(student, teacher)


def _check_alternate_layers(student: ModelConfig, teacher: ModelConfig) -> None:
  what = 'distill.init_student=alternate_layers'
  for name in ('d_model', 'embed_width', 'num_heads', 'kv_dim', 'd_ff'):
    s, t = getattr(student, name), getattr(teacher, name)
    if s != t:
      field = {'embed_width': 'embedding_size', 'kv_dim': 'head_dim'}.get(name, name)
      raise ConfigError(f'{what} copies the teacher\'s layers, which needs the teacher\'s width, but the teacher '
                        f'has model.{field}={t} and the student {s}: set --config.model.{field}={t}, or '
                        'distill.init_student=own')
  if teacher.layer_groups != teacher.num_layers or student.layer_groups != student.num_layers:
    raise ConfigError(f'{what}: a model with shared layers (model.num_layer_groups, ALBERT) has no every-other '
                      'layer to take; set distill.init_student=own')
  stacks = [('num_layers', student.num_layers, teacher.num_layers)]
  if student.family is Family.ENCODER_DECODER:
    stacks.append(('num_decoder_layers', student.decoder_layers, teacher.decoder_layers))
  for field, s, t in stacks:
    if 2 * s - 1 > t:
      raise ConfigError(f'{what}: the student\'s model.{field}={s} takes teacher layers '
                        f'{", ".join(str(2 * i) for i in range(s))}, but the teacher has {t}: set '
                        f'--config.model.{field}={(t + 1) // 2} (or fewer)')


# --- the loss -------------------------------------------------------------------------------------------------

def hidden_validity(family: Family, batch: Mapping[str, jax.Array]) -> jax.Array:
  """(B, T) float32, 1 at the real tokens of the stack whose hidden states the model returns ('hidden': the
  decoder's for an encoder-decoder), where the cosine loss is taken."""
  if family is Family.ENCODER_DECODER:
    mask, segments, ids = batch.get('decoder_attention_mask'), None, batch['decoder_input_ids']
  else:
    mask, segments, ids = batch.get('attention_mask'), batch.get('segment_ids'), batch['input_ids']
  valid = jnp.ones(ids.shape, bool)
  if mask is not None:
    valid &= mask.astype(bool)
  if segments is not None:
    valid &= segments > 0
  return valid.astype(jnp.float32)


def kl_divergence(student_logits: jax.Array, teacher_logits: jax.Array, temperature: float) -> jax.Array:
  """(..., V) logits -> (...) float32: T^2 KL(softmax(teacher / T) || softmax(student / T)). The T^2 keeps the
  gradient's scale independent of T (Hinton et al. 2015)."""
  log_s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
  log_t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
  return temperature ** 2 * jnp.sum(jnp.exp(log_t) * (log_t - log_s), axis=-1)


def cosine_distance(student_hidden: jax.Array, teacher_hidden: jax.Array) -> jax.Array:
  """(..., D) -> (...) float32: 1 - cosine similarity (torch's CosineEmbeddingLoss with target 1; eps 1e-8)."""
  s, t = student_hidden.astype(jnp.float32), teacher_hidden.astype(jnp.float32)
  norms = jnp.maximum(jnp.linalg.norm(s, axis=-1) * jnp.linalg.norm(t, axis=-1), 1e-8)
  return 1.0 - jnp.sum(s * t, axis=-1) / norms


def distillation_sums(cfg: DistillConfig, kind: LossKind, student: Mapping[str, jax.Array],
                      teacher: Mapping[str, jax.Array], batch: Mapping[str, jax.Array], hidden_valid: jax.Array,
                      z_loss: float = 0.0) -> Sums:
  """Sums over the batch of each part of the loss, so that microbatches, devices and means add up exactly.

  student / teacher: the models' outputs, 'logits' ((B, C) class or (B, T, V) vocabulary logits, at the same
  positions) and, when cfg.alpha_cos, 'hidden' (B, T, D) at every position. hidden_valid: (B, T) (see
  `hidden_validity`). Returns 'hard' (the objective's loss, z-loss included), 'z_loss', 'correct' and 'weight'
  as `losses.loss_sums` gives them, 'kl' (weighted like 'hard'), 'cos' and 'tokens' (the sum of hidden_valid).
  """
  if kind in (LossKind.REGRESSION, LossKind.SPAN):
    raise ValueError(f'distillation needs class or vocabulary logits, not a {kind.value} output')
  sums = losses.loss_sums(kind, student['logits'], batch, z_loss)
  sums['hard'] = sums.pop('loss')
  weights = losses.position_weights(kind, batch)
  sums['kl'] = jnp.sum(kl_divergence(student['logits'], teacher['logits'], cfg.temperature) * weights)
  sums['tokens'] = jnp.sum(hidden_valid)
  if cfg.alpha_cos:
    sums['cos'] = jnp.sum(cosine_distance(student['hidden'], teacher['hidden']) * hidden_valid)
  else:
    sums['cos'] = jnp.zeros((), jnp.float32)
  return sums


def distillation_loss(cfg: DistillConfig, sums: Sums, weight: jax.Array, tokens: jax.Array) -> jax.Array:
  """The training loss from `distillation_sums` of the (micro)batch and the *whole* batch's denominators:
  weight (weighted positions, never 0) for the KL and the hard loss, tokens (real tokens, never 0) for the
  cosine."""
  return (cfg.alpha_kl * sums['kl'] + cfg.alpha_hard * sums['hard']) / weight + cfg.alpha_cos * sums['cos'] / tokens


# --- the student from every other layer of the teacher ------------------------------------------------------------

_LAYER = re.compile(r'(^|/)layers_(\d+)(/|$)')
# Parameters of the heads: copied when the shapes match, else the student's own (a new classifier, say).
_HEADS = ('pooler', 'classifier', 'mlm_dense', 'mlm_norm', 'lm_head', 'lm_bias')


def alternate_layers(teacher: Params, teacher_cfg: ModelConfig, student: Params,
                     student_cfg: ModelConfig) -> tuple[Params, str]:
  """The student's parameters from the teacher's: student layer i of each stack <- teacher layer 2i, every other
  parameter (embeddings, norms, relative-position tables) copied, heads copied where their shapes match. Returns
  the tree in the student's structure, dtypes and shardings, and a line saying what was copied."""
  _check_alternate_layers(student_cfg, teacher_cfg)
  flat_teacher = traverse_util.flatten_dict(model.unstack_layers(teacher), sep='/')
  flat_student = traverse_util.flatten_dict(model.unstack_layers(student), sep='/')
  out, fresh, taken = {}, [], set()
  for name, value in flat_student.items():
    source_name = _LAYER.sub(lambda m: f'{m.group(1)}layers_{2 * int(m.group(2))}{m.group(3)}', name)
    source = flat_teacher.get(source_name)
    head = name.split('/')[0] in _HEADS
    if source is None or tuple(source.shape) != tuple(value.shape):
      if head:
        out[name] = value
        fresh.append(name)
        continue
      there = 'missing' if source is None else f'of shape {tuple(source.shape)}'
      raise ConfigError(f'distill.init_student=alternate_layers: the teacher\'s {source_name} is {there}, the '
                        f'student\'s {name} has shape {tuple(value.shape)}: the architectures differ; set '
                        'distill.init_student=own')
    out[name] = source
    taken.add(source_name)
  params = traverse_util.unflatten_dict(out, sep='/')
  if student_cfg.scan_layers:
    params = model.stack_layers(params)
  # Copies, never the teacher's buffers: the train step donates the student's state while it reads the teacher.
  params = jax.tree.map(lambda x, ref: jax.device_put(jnp.array(x, ref.dtype, copy=True), ref.sharding), params,
                        student)
  layers = sorted({int(m.group(2)) for n in taken if (m := _LAYER.search(n))})
  return params, (f'teacher layers {layers} copied into student layers {list(range(len(layers)))}; '
                  f'{len(out) - len(fresh)} tensors copied; newly initialised: {fresh or "none"}')
