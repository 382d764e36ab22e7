"""The train state, its sharded initialisation, and the pure train / eval steps, jitted once with shardings.

  abstract = abstract_train_state(module, tx, ctx)            # shapes + NamedShardings, nothing allocated
  state = init_train_state(module, tx, rng, abstract)         # float32 params and opt state, sharded
  step = compile_train_step(module, tx, schedule, step_cfg, ctx, abstract, batch_shapes)
  state, metrics = step(state, batch, rng)                    # state donated; batch from MeshContext.to_global

Sharding: every parameter carries logical axis names (model/); `nn.get_partition_spec` of the boxed init
gives them, the rules table maps them onto the mesh, and each optimizer-state leaf takes the sharding of
the parameter it mirrors (`optax.tree_map_params`), so Adam's moments are split exactly like the weights
(ZeRO-3 with fsdp > 1). The logical-axis rules are activated together with the
mesh (`MeshContext.active`) around tracing, which is when `nn.with_logical_constraint` reads them.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.sharding import PartitionSpec

import model
from data import batch as batch_schema
from data import tasks
from data.tasks import Objective, to_objective
from model import partitioning as P
from trainer import distill, losses
from trainer.config import PrngImpl, TrainConfig
from trainer.distill import DistillConfig
from trainer.mesh import MeshContext

Params = Any
Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]
CompilerOptions = Mapping[str, Any]  # XLA DebugOptions for one compile, e.g. {'xla_backend_optimization_level': 0}


@flax.struct.dataclass
class TrainState:
  """Everything a step changes. The module and optimizer are static (bound with functools.partial), so
  the state is a plain pytree: checkpointable, shardable and donatable as it is."""

  step: jax.Array  # () int32, number of updates applied so far
  params: Params  # float32 master weights, the module's 'params' collection (unboxed)
  opt_state: optax.OptState


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepConfig:
  """What the step computes besides the model: the objective's loss, z-loss and microbatching."""

  objective: Objective
  microbatches: int = 1  # gradient accumulation: the batch is split into this many scanned microbatches.
  z_loss: float = 0.0  # coefficient of log(Z)^2 per weighted token (0 = off).
  logits_chunk: int = 0  # token objectives: logits this many positions per row at a time (0 = all at once).
  # At most this many positions of a row carry a loss weight (MLM, data.tasks.max_targets): the LM head runs at
  # those alone, gathered by weight. 0 = every position.
  max_targets: int = 0
  prng_impl: PrngImpl = PrngImpl.THREEFRY  # of the dropout key the step takes (`dropout_key`)
  # Distillation from a teacher (trainer/distill.py); the step then takes the teacher's parameters.
  distill: DistillConfig = DistillConfig()

  def __post_init__(self) -> None:
    object.__setattr__(self, 'objective', to_objective(self.objective))
    object.__setattr__(self, 'prng_impl', PrngImpl(self.prng_impl))
    if self.distill.enabled and self.loss_kind is losses.LossKind.REGRESSION:
      raise ValueError(f'distill.teacher={self.distill.teacher!r}: data.objective={self.objective.value} predicts a '
                       'number, which has no distribution to distil; distil a classification or token objective, '
                       "or set --config.distill.teacher=''")
    if self.distill.enabled and self.loss_kind is losses.LossKind.PRETRAINING:
      raise ValueError(f'distill.teacher={self.distill.teacher!r}: data.objective={self.objective.value} trains two '
                       'heads (MLM and sentence order), which distillation does not compare; distil an mlm or a '
                       "classification objective, or set --config.distill.teacher=''")
    if self.distill.enabled and self.loss_kind is losses.LossKind.SPAN:
      raise ValueError(f'distill.teacher={self.distill.teacher!r}: data.objective={self.objective.value} scores '
                       'answer spans (a start and an end distribution over the tokens), which distillation does not '
                       "compare; distil a classification or token objective, or set --config.distill.teacher=''")
    if self.distill.enabled and self.chunked_logits:
      raise ValueError(f'train.logits_chunk={self.logits_chunk}: distillation (distill.teacher) needs the student\'s '
                       'whole logits for the KL; set --config.train.logits_chunk=0 (with data.max_targets the '
                       'MLM logits are only those of the masked positions)')
    if not isinstance(self.microbatches, int) or self.microbatches < 1:
      raise ValueError(f'train.microbatches={self.microbatches!r}: must be a positive integer')
    if self.z_loss < 0:
      raise ValueError(f'train.z_loss={self.z_loss!r}: must be >= 0 (0 = off)')
    if not isinstance(self.logits_chunk, int) or self.logits_chunk < 0:
      raise ValueError(f'train.logits_chunk={self.logits_chunk!r}: must be an integer >= 0 (0 = all at once)')
    if self.max_targets < 0 or (self.max_targets and not self.loss_kind.tokens):
      raise ValueError(f'max_targets={self.max_targets}: a bound on the weighted positions of a token objective')

  @classmethod
  def of(cls, data: tasks.DataConfig, train: TrainConfig,
         distill_cfg: DistillConfig = DistillConfig()) -> StepConfig:
    return cls(objective=data.objective, microbatches=train.microbatches, z_loss=train.z_loss,
               logits_chunk=train.logits_chunk, max_targets=tasks.max_targets(data), prng_impl=train.prng_impl,
               distill=distill_cfg)

  @classmethod
  def from_config(cls, config: Any) -> StepConfig:
    """From the config tree's data, train and distill sections."""
    return cls.of(tasks.DataConfig.from_dict(config.data), TrainConfig.from_dict(config.train),
                  DistillConfig.from_dict(config.get('distill')))

  def dropout_key(self, seed: int) -> jax.Array:
    """The key a run passes to every step (the step folds in its number), of this config's PRNG."""
    return jax.random.key(seed, impl=self.prng_impl.value)

  @property
  def chunked_logits(self) -> bool:
    return bool(self.logits_chunk) and self.loss_kind.tokens

  @property
  def loss_kind(self) -> losses.LossKind:
    return losses.loss_kind(self.objective)


# --- sharded initialisation ------------------------------------------------------------------------------

def _boxed_params(module: model.Transformer, rng: jax.Array) -> Params:
  """Parameters still wrapped in nn.Partitioned (their logical names)."""
  return module.init({'params': rng, 'dropout': rng}, **model.dummy_inputs(module.cfg))['params']


def _init_state(module: model.Transformer, tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
  params = nn.unbox(_boxed_params(module, rng))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def _mirrored_spec(leaf: jax.ShapeDtypeStruct, param: jax.ShapeDtypeStruct, spec: PartitionSpec) -> PartitionSpec:
  """Logical spec of an optimizer-state leaf that mirrors `param` (logical spec `spec`).

  Same shape (Adam's mu, nu; Adafactor's unfactored v): the parameter's spec. One axis fewer (Adafactor's
  factored row/column statistics): the spec without that axis, if the removed axis is unambiguous or every
  candidate gives the same spec. Anything else (Adafactor's (1,) placeholders): replicated.
  """
  names = tuple(spec) + (None,) * (len(param.shape) - len(spec))
  if tuple(leaf.shape) == tuple(param.shape):
    return PartitionSpec(*names)
  if len(leaf.shape) == len(param.shape) - 1:
    candidates = {names[:i] + names[i + 1:] for i in range(len(param.shape))
                  if param.shape[:i] + param.shape[i + 1:] == tuple(leaf.shape)}
    if len(candidates) == 1:
      return PartitionSpec(*candidates.pop())
  return PartitionSpec()


def abstract_train_state(module: model.Transformer, tx: optax.GradientTransformation,
                         ctx: MeshContext) -> TrainState:
  """The state's shapes and dtypes with their NamedShardings (`ShapeDtypeStruct.sharding`): what the
  sharded init produces, what the step is compiled for, and what a checkpoint restores onto."""
  if module.cfg.param_dtype != 'float32':
    raise ValueError(f'model.param_dtype={module.cfg.param_dtype!r}: training keeps float32 master weights; '
                     "set model.param_dtype='float32' and model.dtype='bfloat16' for bf16 compute")
  rng = jax.random.key(0)
  with nn.logical_axis_rules(()):  # no activation constraints while tracing init (batch 1 fits no mesh)
    param_specs = nn.get_partition_spec(jax.eval_shape(functools.partial(_boxed_params, module), rng))
    shapes = jax.eval_shape(functools.partial(_init_state, module, tx), rng)
  opt_specs = optax.tree_map_params(tx, _mirrored_spec, shapes.opt_state, shapes.params, param_specs,
                                    transform_non_params=lambda _: PartitionSpec(),
                                    is_leaf=lambda x: isinstance(x, PartitionSpec))
  specs = TrainState(step=PartitionSpec(), params=param_specs, opt_state=opt_specs)
  shardings = ctx.logical_shardings(specs, shapes)
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)


def shardings_of(tree: Any) -> Any:
  """The `.sharding` of every leaf (of an abstract or a concrete state)."""
  return jax.tree.map(lambda x: x.sharding, tree)


def init_train_state(module: model.Transformer, tx: optax.GradientTransformation, rng: jax.Array,
                     abstract: TrainState, compiler_options: CompilerOptions | None = None) -> TrainState:
  """Initialises directly into the shardings of `abstract`: no device ever holds the whole model."""
  init = jax.jit(functools.partial(_init_state, module, tx), out_shardings=shardings_of(abstract),
                 compiler_options=compiler_options)
  with nn.logical_axis_rules(()):
    return init(rng)


# --- the steps -------------------------------------------------------------------------------------------

def apply_model(module: model.Transformer, params: Params, batch: Batch, *, deterministic: bool,
                rng: jax.Array | None = None, head_only: bool = True, **head: Any) -> dict[str, Any]:
  """module.apply on the batch's model inputs (every feature but the targets): the model's outputs. The
  steps and predictions read the head alone, so the model may skip what its head does not read (head_only:
  a classifier's last layer computes [CLS] only; 'hidden' is then not every position; head_only=False for a
  loss that reads every hidden state). `head`: the head's options (logits=False, head_positions; see
  `model.Transformer`)."""
  inputs = batch_schema.model_inputs(batch)
  rngs = None if rng is None else {'dropout': rng}
  return module.apply({'params': params}, **inputs, deterministic=deterministic, rngs=rngs, head_only=head_only,
                      **head)


def _at_targets(batch: Batch, cfg: StepConfig) -> tuple[Batch, dict[str, Any]]:
  """With `cfg.max_targets`: the batch with its targets and weights at the weighted positions alone, and the
  head option that runs the LM head there. Else the batch as it is and no option."""
  if not cfg.max_targets:
    return batch, {}
  # The weighted positions first (top_k keeps the lower index among equal weights); a row with fewer
  # fills up with weight-0 positions. data.tasks.max_targets guarantees no row has more.
  positions = lax.top_k(batch['loss_weights'], cfg.max_targets)[1]
  batch = dict(batch) | {name: jnp.take_along_axis(batch[name], positions, axis=1)
                         for name in ('targets', 'loss_weights')}
  return batch, {'head_positions': positions}


def model_loss_sums(module: model.Transformer, params: Params, batch: Batch, cfg: StepConfig, *, deterministic: bool,
                    rng: jax.Array | None = None, z_loss: float = 0.0) -> losses.Sums:
  """The objective's loss sums of the model on `batch`, the same sums however they are computed: the LM head
  at the weighted positions alone (`cfg.max_targets`), and its logits chunk by chunk (`cfg.logits_chunk`); with
  the sentence order's sums (`losses.sentence_order_sums`) for mlm_sop."""
  batch, head = _at_targets(batch, cfg)
  out = apply_model(module, params, batch, deterministic=deterministic, rng=rng, logits=not cfg.chunked_logits,
                    **head)
  with jax.named_scope('loss'):  # names its ops in profiles (bench/train_throughput.py --profile)
    if cfg.chunked_logits:
      hidden, kernel, bias = out['lm_projection']
      sums = losses.projected_cross_entropy_sums(hidden, kernel, bias, batch['targets'], batch['loss_weights'],
                                                 z_loss, chunk=cfg.logits_chunk)
    else:
      sums = losses.loss_sums(cfg.loss_kind, out['logits'], batch, z_loss)
    if cfg.loss_kind is losses.LossKind.PRETRAINING:
      sums |= losses.sentence_order_sums(out['sop_logits'], batch['sentence_order_label'])
  return sums


def distillation_sums(module: model.Transformer, params: Params, batch: Batch, cfg: StepConfig,
                      teacher: tuple[model.Transformer, Params], rng: jax.Array) -> losses.Sums:
  """`distill.distillation_sums` of the student (dropout on) against the teacher (deterministic, constant to
  autodiff) on `batch`: both heads at the same positions, and every hidden state when the cosine loss is on."""
  batch, head = _at_targets(batch, cfg)
  head_only = not cfg.distill.alpha_cos  # the cosine reads every hidden state
  student = apply_model(module, params, batch, deterministic=False, rng=rng, head_only=head_only, **head)
  teacher_module, teacher_params = teacher
  taught = apply_model(teacher_module, lax.stop_gradient(teacher_params), batch, deterministic=True,
                       head_only=head_only, **head)
  valid = distill.hidden_validity(module.cfg.family, batch)
  return distill.distillation_sums(cfg.distill, cfg.loss_kind, student, lax.stop_gradient(taught), batch, valid,
                                   cfg.z_loss)


def _loss_fn(params: Params, batch: Batch, rng: jax.Array, *, module: model.Transformer, cfg: StepConfig,
             denominators: losses.Sums, teacher: tuple[model.Transformer, Params] | None = None,
             tokens: jax.Array | None = None) -> tuple[jax.Array, losses.Sums]:
  """Sum of this (micro)batch's losses over the *whole* batch's weights (`losses.total_weights`; and,
  distilling, its real tokens for the cosine): the gradients of the microbatches then add up to the gradient of
  the batch mean."""
  if teacher is not None:
    sums = distillation_sums(module, params, batch, cfg, teacher, rng)
    return distill.distillation_loss(cfg.distill, sums, denominators['weight'], tokens), sums
  sums = model_loss_sums(module, params, batch, cfg, deterministic=False, rng=rng, z_loss=cfg.z_loss)
  return losses.mean_loss(sums, denominators), sums


def split_microbatches(batch: Batch, k: int) -> Batch:
  """(k*b, ...) -> (k, b, ...), microbatch j = rows j, k+j, 2k+j, ...

  Strided rather than contiguous: the batch is sharded in contiguous row blocks, so each device's rows
  stay on it in every microbatch and the split needs no communication.
  """
  def split(x: jax.Array) -> jax.Array:
    if x.shape[0] % k:
      raise ValueError(f'train.microbatches={k} must divide the batch of {x.shape[0]} rows')
    x = jnp.swapaxes(x.reshape((x.shape[0] // k, k) + x.shape[1:]), 0, 1)
    return nn.with_logical_constraint(x, (None, P.BATCH) + (None,) * (x.ndim - 2))
  return {name: split(x) for name, x in batch.items()}


def accumulate_gradients(loss_fn: Any, params: Params, batch: Batch, rng: jax.Array,
                         microbatches: int) -> tuple[Params, losses.Sums]:
  """Gradients and loss sums of `loss_fn(params, batch, rng) -> (loss, sums)`, over `microbatches` scanned
  microbatches (summed: loss_fn must already be normalised by the whole batch). Microbatch j uses
  fold_in(rng, j) for dropout."""
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if microbatches == 1:
    (_, sums), grads = grad_fn(params, batch, rng)
    return grads, sums
  micro = split_microbatches(batch, microbatches)

  def body(carry: tuple[Params, losses.Sums], xs: tuple[Batch, jax.Array]) -> tuple[tuple[Params, losses.Sums], None]:
    microbatch, j = xs
    (_, sums), grads = grad_fn(params, microbatch, jax.random.fold_in(rng, j))
    return jax.tree.map(jnp.add, carry, (grads, sums)), None

  first = jax.tree.map(lambda x: x[0], micro)
  (_, sum_shapes), grad_shapes = jax.eval_shape(grad_fn, params, first, rng)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (grad_shapes, sum_shapes))
  (grads, sums), _ = lax.scan(body, zeros, (micro, jnp.arange(microbatches)))
  return grads, sums


def train_step(state: TrainState, batch: Batch, rng: jax.Array, teacher_params: Params | None = None, *,
               module: model.Transformer, tx: optax.GradientTransformation, schedule: optax.Schedule,
               cfg: StepConfig, teacher_module: model.Transformer | None = None) -> tuple[TrainState, Metrics]:
  """One optimizer update on `batch` (the features of `cfg.objective`, leading axis B).

  Dropout is on, with the key fold_in(rng, state.step). Metrics (float32 scalars): loss (mean over the
  weighted tokens or examples, z-loss included), z_loss (its part of loss), weight (number of weighted
  tokens / examples), accuracy (not for regression; span: both positions right), grad_norm (before clipping),
  param_norm (after the update), learning_rate (of this update). mlm_sop: loss is the MLM mean plus the sentence
  order's, mlm_loss and sop_loss are those parts, accuracy the MLM tokens', sop_accuracy the sentence order's.

  Distilling (`teacher_module` and its `teacher_params`, read and never updated): loss is the distillation
  loss (trainer/distill.py), and distill_kl, distill_hard, distill_cos are its parts, unweighted means.
  """
  rng = jax.random.fold_in(rng, state.step)
  weights = losses.total_weights(cfg.loss_kind, batch)
  # an all-padding batch gives loss 0, not nan
  denominators = {name: jnp.where(w > 0, w, 1.0) for name, w in weights.items()}
  weight, denominator = weights['weight'], denominators['weight']
  loss_fn = functools.partial(_loss_fn, module=module, cfg=cfg, denominators=denominators)
  if teacher_module is not None:
    tokens = jnp.sum(distill.hidden_validity(module.cfg.family, batch))
    tokens = jnp.where(tokens > 0, tokens, 1.0)
    loss_fn = functools.partial(loss_fn, teacher=(teacher_module, teacher_params), tokens=tokens)
  grads, sums = accumulate_gradients(loss_fn, state.params, batch, rng, cfg.microbatches)
  with jax.named_scope('optimizer'):  # clipping, AdamW and the update, by name in profiles
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
  if teacher_module is not None:
    metrics = {'loss': distill.distillation_loss(cfg.distill, sums, denominator, tokens),
               'z_loss': sums['z_loss'] / denominator, 'distill_kl': sums['kl'] / denominator,
               'distill_hard': sums['hard'] / denominator, 'distill_cos': sums['cos'] / tokens}
  else:
    metrics = {'loss': losses.mean_loss(sums, denominators), 'z_loss': sums['z_loss'] / denominator}
  if 'sop_loss' in sums:  # mlm_sop: the two parts of its loss, and how often the order is right
    metrics |= {'mlm_loss': sums['loss'] / denominator, 'sop_loss': sums['sop_loss'] / denominators['sop_weight'],
                'sop_accuracy': sums['sop_correct'] / denominators['sop_weight']}
  if 'correct' in sums:
    metrics['accuracy'] = sums['correct'] / denominator
  with jax.named_scope('metrics'):
    metrics |= {'weight': weight, 'grad_norm': optax.tree.norm(grads), 'param_norm': optax.tree.norm(params),
                'learning_rate': jnp.asarray(schedule(state.step), jnp.float32)}
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(params: Params, batch: Batch, *, module: model.Transformer, cfg: StepConfig) -> losses.Sums:
  """Deterministic forward pass -> sums over the batch ('loss': plain cross-entropy or squared error, no
  z-loss, so runs compare; 'weight'; 'correct' except for regression; mlm_sop: 'sop_loss', 'sop_correct',
  'sop_weight' too). Divide after adding up batches."""
  sums = model_loss_sums(module, params, batch, cfg, deterministic=True)
  del sums['z_loss']
  return sums


# --- compiling once, with shardings ----------------------------------------------------------------------

def compile_train_step(module: model.Transformer, tx: optax.GradientTransformation, schedule: optax.Schedule,
                       cfg: StepConfig, ctx: MeshContext, abstract_state: TrainState,
                       batch_shapes: Mapping[str, Any], compiler_options: CompilerOptions | None = None,
                       teacher: distill.Teacher | None = None) -> jax.stages.Compiled:
  """`train_step` compiled ahead of time for these shapes: in/out shardings explicit, the state donated.

  batch_shapes: feature -> anything with .shape and .dtype (a ShapeDtypeStruct or the first batch). Call
  the result as step(state, batch, rng) with `rng` a new-style key (cfg.dropout_key) that is replicated
  or uncommitted; arrays placed otherwise are an error rather than a silent reshard. With a `teacher`
  (cfg.distill): step(state, batch, rng, teacher.params), the teacher's parameters in their own shardings and
  not donated: the same arrays serve every step.
  """
  if (teacher is not None) != cfg.distill.enabled:
    raise ValueError(f'distill.teacher={cfg.distill.teacher!r} but compile_train_step was given '
                     f'{"a" if teacher is not None else "no"} teacher: load it with the run (trainer/runner.py)')
  state_shardings = shardings_of(abstract_state)
  in_batch = ctx.batch_shardings(batch_shapes, cfg.microbatches)
  step = functools.partial(train_step, module=module, tx=tx, schedule=schedule, cfg=cfg)
  in_shardings = (state_shardings, in_batch, ctx.replicated)
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=in_batch[k]) for k, v in batch_shapes.items()}
  args = (abstract_state, batch, jax.eval_shape(lambda: cfg.dropout_key(0)))
  if teacher is not None:
    step = functools.partial(step, teacher_module=teacher.module)
    in_shardings += (shardings_of(teacher.params),)
    args += (jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), teacher.params),)
  jitted = jax.jit(step, in_shardings=in_shardings, out_shardings=(state_shardings, ctx.replicated),
                   donate_argnums=0)
  # Tracing happens in lower(): this is where with_logical_constraint sees the mesh and the rules.
  with ctx.active():
    return jitted.lower(*args).compile(compiler_options)


def compile_eval_step(module: model.Transformer, cfg: StepConfig, ctx: MeshContext, abstract_params: Params,
                      batch_shapes: Mapping[str, Any],
                      compiler_options: CompilerOptions | None = None) -> jax.stages.Compiled:
  """`eval_step` compiled ahead of time; abstract_params: `abstract_train_state(...).params`."""
  step = functools.partial(eval_step, module=module, cfg=cfg)
  return compile_forward(step, ctx, abstract_params, batch_shapes, compiler_options)


def compile_forward(fn: Callable[[Params, Batch], Any], ctx: MeshContext, abstract_params: Params,
                    batch_shapes: Mapping[str, Any],
                    compiler_options: CompilerOptions | None = None) -> jax.stages.Compiled:
  """`fn(params, batch)` (no update: the loop's eval_step, eval.py's predictions) compiled ahead of time:
  params in their shardings, the batch sharded along its rows, the outputs replicated on every device."""
  in_batch = ctx.batch_shardings(batch_shapes)
  jitted = jax.jit(fn, in_shardings=(shardings_of(abstract_params), in_batch), out_shardings=ctx.replicated)
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=in_batch[k]) for k, v in batch_shapes.items()}
  with ctx.active():
    return jitted.lower(abstract_params, batch).compile(compiler_options)
