"""The run: `build_run(config, workdir)` (config -> checked parts, nothing compiled), `init_from`, and the loop
`train_and_evaluate(config, workdir)` that train.py calls.

The same config runs on one CPU, one GPU or a multi-host mesh (`--config.mesh.*`). Every input is checked
before anything compiles; a run resumes by itself from its workdir (state, data position, and the exact
next batch); SIGTERM saves a checkpoint and returns.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

import model
import objectives
from core import compile_cache, timing
from core.paths import user_path
from core.timing import Phase, phase
from data import bucketing, images, sources, tasks
from data.pipeline import InputIterator, PipelineConfig, make_dataset
from data.tokenization import TokenizerKind, TokenizerSpec, auto_model_path
from evaluation.config import EvalConfig
from model import hf
from trainer import checkpoint, distill, metrics
from trainer.config import UNKNOWN_STEPS, NanPolicy, TrainConfig, schema_defaults
from trainer.mesh import MeshConfig, MeshContext
from trainer.optim import OptimConfig, make_optimizer
from trainer.step import (StepConfig, TrainState, abstract_train_state, compile_eval_step, compile_train_step,
                          init_train_state)


class TrainingHalted(RuntimeError):
  """The loss stopped being finite; the message names the step and the last good checkpoint."""


def check_model_fits_data(cfg: model.ModelConfig, data: tasks.DataConfig, info: sources.TaskInfo,
                          vocab_size: int, token_types: int = 1) -> None:
  """Errors, before any compile, for a model that cannot train on this data (`token_types`: how many its
  examples use, `tasks.Task.token_types`)."""
  spec = objectives.spec(data.objective)
  family, head = spec.family, spec.head
  if (cfg.family, cfg.head) != (family, head):
    raise ValueError(f'data.objective={data.objective.value} trains family={family.value} with head={head.value}, '
                     f'but model.family={cfg.family.value}, model.head={cfg.head.value}: change one of them')
  if data.images or cfg.inputs is model.Inputs.PATCHES:
    _check_images(cfg, data, info)
    if info.image_feature is None:
      return  # an image objective on a text source: build_task names the mismatch of objective and source
  if spec.loss is objectives.LossKind.CLASSIFICATION and cfg.num_labels != info.num_classes:
    wanted, found = cfg.num_labels, info.num_classes
    if data.label_names or not info.label_stats:  # declared classes (by data.label_names or the dataset)
      named = 'data.label_names names' if data.label_names else f'data.source={data.source!r} has'
      raise ValueError(f'model.num_labels={wanted}, but {named} {found} classes: set '
                       f'--config.model.num_labels={found}')
    # A tsv: task's classes come from its training file: a stray label there is a row to fix, not a class.
    summary = (f'model.num_labels={wanted}, but the training split of data.source={data.source!r} has {found} '
               f'classes ({info.class_counts()})')
    present = [s for s in info.label_stats if s.count]
    strays = ([s for s in info.label_stats[wanted:] if s.count] if not info.label_names else
              sorted(present, key=lambda s: s.count)[:found - wanted])  # ids beyond num_labels, or the rarest names
    if found > wanted and sum(s.count for s in strays) * 20 <= sum(s.count for s in present):
      file = Path(info.labels_from).name
      where = '; '.join(f'{file} line {s.line}: label {repr(s.name) if info.label_names else s.name} occurs '
                        f'{"once" if s.count == 1 else f"{s.count} times"}' for s in strays[:3])
      expects = f'{wanted} classes' if info.label_names else f'0..{wanted - 1}'
      raise ValueError(f'{summary}\n{where}; model.num_labels={wanted} expects {expects}: fix the '
                       f'row{"s" if len(strays) > 1 else ""}, or set --config.model.num_labels={found} if {found} '
                       'classes are meant')
    raise ValueError(f'{summary}\nset --config.model.num_labels={found}, or declare every class in class-id order '
                     "with --config.data.label_names=\"('a','b',...)\" (a class absent from the training split is "
                     'never learnt)')
  if spec.loss is objectives.LossKind.REGRESSION and cfg.num_labels != 1:
    raise ValueError(f'model.num_labels={cfg.num_labels}: regression predicts one number; set model.num_labels=1')
  if cfg.inputs is model.Inputs.TOKENS and cfg.position in (model.Position.LEARNED, model.Position.SINUSOIDAL):
    for name, length in (('data.seq_len', data.seq_len), ('data.decoder_seq_len', data.targets_len)):
      if name == 'data.decoder_seq_len' and cfg.family is not model.Family.ENCODER_DECODER:
        continue
      if length > cfg.max_len:
        raise ValueError(f'{name}={length} exceeds model.max_len={cfg.max_len}, the size of the position '
                         f'table: shorten {name} or raise model.max_len')
  if vocab_size > cfg.vocab_size:
    raise ValueError(f'data.tokenizer has {vocab_size} ids but model.vocab_size={cfg.vocab_size}: set '
                     f'--config.model.vocab_size={vocab_size} (or larger)')
  # A type id beyond the table would be clamped to its last row by the lookup, silently: refuse it. (0 types:
  # the model has no table and reads none, as DistilBERT.)
  if 0 < cfg.num_token_types < token_types:
    raise ValueError(f'model.num_token_types={cfg.num_token_types}, but data.tokenizer ({data.tokenizer!r}) marks '
                     f'the second text of the pairs of data.source={data.source!r} as token type 1: set '
                     f'--config.model.num_token_types={token_types} (BERT) or 0 (none, as DistilBERT), or use a '
                     'tokenizer with one token type for pairs (RoBERTa\'s byte_bpe: <s> A </s></s> B </s>)')


def _check_images(cfg: model.ModelConfig, data: tasks.DataConfig, info: sources.TaskInfo) -> None:
  """An image model on image data: the same inputs, channels, image size and sequence length."""
  if not data.images:
    raise ValueError(f'model.inputs=patches reads images, but data.objective={data.objective.value} gives token ids: '
                     'use data.objective=image_classification on an image source, or a text model (inputs=tokens)')
  if cfg.inputs is not model.Inputs.PATCHES:
    raise ValueError(f'data.objective={data.objective.value} feeds images (pixel_values), but model.inputs='
                     f'{cfg.inputs.value} reads token ids: set model.inputs=patches with model.image_size, patch_size '
                     "and num_channels (configs/presets.py's vit(...))")
  if info.image_feature is None:
    return  # a text source: build_task names the mismatch of objective and source
  channels = info.image_shape[-1]
  if cfg.num_channels != channels:
    raise ValueError(f'model.num_channels={cfg.num_channels}, but data.source={data.source!r} has {channels}-channel '
                     f'images: set --config.model.num_channels={channels}')
  side = images.stored_side(info.image_shape, data.image_size, data.source)
  if cfg.image_size != side:
    how = 'as stored' if data.image_size is None else f'data.image_fit={data.image_fit.value}'
    raise ValueError(f'model.image_size={cfg.image_size}, but data.source={data.source!r} gives {side}x{side} images '
                     f'(data.image_size={data.image_size}: {how}): set --config.model.image_size={side}, or '
                     f'--config.data.image_size={cfg.image_size} to bring the images to the model\'s size')
  tokens = cfg.position_rows
  if data.seq_len != tokens:
    raise ValueError(f'data.seq_len={data.seq_len}, but the model runs [CLS] + {tokens - 1} patches = {tokens} tokens '
                     f'(model.image_size={cfg.image_size}, model.patch_size={cfg.patch_size}): set '
                     f'--config.data.seq_len={tokens}')


@dataclasses.dataclass
class Run:
  """Everything built from the config before the loop: checked, compiled once."""

  train: TrainConfig
  model_cfg: model.ModelConfig
  data: tasks.DataConfig
  task: tasks.Task
  eval_task: tasks.Task
  mesh: MeshContext  # the device mesh and the logical-axis rules
  abstract: TrainState
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  step_cfg: StepConfig
  module: model.Transformer
  workdir: Path
  distill: distill.DistillConfig = distill.DistillConfig()
  teacher: distill.Teacher | None = None  # loaded when distill.teacher is set and build_run is asked to
  # data.length_buckets: every training example's length and the buckets compiled (`train_buckets`).
  bucketing: tuple[np.ndarray, tuple[int, ...]] | None = None


def build_run(config: ml_collections.ConfigDict, workdir: Path, *, with_teacher: bool = False) -> Run:
  """The run of `config`, every input checked, nothing compiled. `with_teacher` (training): also load
  distill.teacher onto the mesh; evaluation scores the student alone and never reads the teacher."""
  train = TrainConfig.from_dict(config.train)
  # optim's errors before any tokenizer; a run measured in epochs knows its steps only once the data is read.
  optim_cfg, warmup_note = OptimConfig.for_run(config.optim, train.num_steps or UNKNOWN_STEPS)
  model_cfg = model.ModelConfig.from_dict(config.model)
  distill_cfg = distill.DistillConfig.from_dict(config.get('distill'))
  if distill_cfg.init_student is distill.InitStudent.ALTERNATE_LAYERS and train.init_from:
    raise ValueError(f'train.init_from={train.init_from!r} and distill.init_student=alternate_layers both set the '
                     "student's first weights: set --config.train.init_from='' or --config.distill.init_student=own")
  data = tasks.DataConfig.from_dict(config.data)
  if data.tokenizer == INIT_FROM:
    data = dataclasses.replace(data, tokenizer=tokenizer_of(train.init_from))
  eval_cfg = EvalConfig.from_config(config)
  mesh = MeshConfig.from_dict(config.mesh).context()  # a shape that does not fit the devices fails here
  # A source that cannot be read (a typo, a labelled part of a '+' mixture) fails before the tokenizer line.
  info = sources.task_info(data.source, data_dir=data.data_dir, seq2seq_features=data.seq2seq_features,
                           rules=data.read_rules)
  if data.images or model_cfg.inputs is model.Inputs.PATCHES:  # no tokenizer to wait for: checked before any data
    check_model_fits_data(model_cfg, data, info, vocab_size=0)
  _say_tokenizer_training(data, workdir / 'tokenizer')
  task = tasks.build_task(data, 'train', seed=train.seed, tokenizer_dir=workdir / 'tokenizer')
  if train.num_epochs:
    steps = max(1, math.ceil(train.num_epochs * len(task.source) / train.batch_size))
    say(f'train.num_epochs={train.num_epochs:g}: {steps} steps of {train.batch_size} over {len(task.source):,} '
        'training examples')
    train = dataclasses.replace(train, num_steps=steps, num_epochs=0.0)
    optim_cfg, warmup_note = OptimConfig.for_run(config.optim, train.num_steps)
  if warmup_note:
    say(warmup_note)
  eval_split = (eval_cfg.splits or ('validation',))[0]  # eval.py scores this task as its first split
  eval_task = tasks.build_task(data, eval_split, seed=train.seed, tokenizer=task.tokenizer, augment=False)
  inputs = (f'{model_cfg.num_channels}x{model_cfg.image_size}x{model_cfg.image_size} images' if data.images else
            f'tokenizer {task.tokenizer.vocab_size:,} ids')
  say(f'data: {data.source} ({data.objective.value}): {len(task.source):,} training rows, {len(eval_task.source):,} '
      f'{eval_split} rows; {inputs}')
  check_model_fits_data(model_cfg, data, task.info, task.tokenizer.vocab_size if task.tokenizer else 0,
                        task.token_types)
  if train.standardize_targets:
    model_cfg = _standardized(model_cfg, data, task)
  tx, schedule = make_optimizer(optim_cfg)
  if train.nan_policy is NanPolicy.SKIP:
    tx = optax.apply_if_finite(tx, max_consecutive_errors=1_000_000)
  module = model.build(model_cfg)
  abstract = abstract_train_state(module, tx, mesh)
  step_cfg = StepConfig.of(data, train, distill_cfg)
  run = Run(train, model_cfg, data, task, eval_task, mesh, abstract, tx, schedule, step_cfg, module, workdir,
            distill_cfg)
  if with_teacher and distill_cfg.enabled:
    with phase(Phase.TEACHER):
      run.teacher = load_teacher(run)
  return run


def teacher_config(distill_cfg: distill.DistillConfig, student: model.ModelConfig) -> model.ModelConfig:
  """The ModelConfig of distill.teacher (an HF directory's config.json, or the config saved in our workdir),
  checked against the student; no weights are read (train.py --dry_run plans the teacher with it)."""
  path = user_path(distill_cfg.teacher)
  if (path / 'config.json').is_file():
    teacher_cfg = hf.config_from_pretrained(path, scan_layers=student.scan_layers)
  else:
    teacher_cfg = model.ModelConfig.from_dict(_saved_config(distill_cfg.teacher, field='distill.teacher').model)
  distill.check_teacher(distill_cfg, student, teacher_cfg)
  return teacher_cfg


def load_teacher(run: Run) -> distill.Teacher:
  """distill.teacher (an HF directory or one of our workdirs), checked against the student and placed with the
  logical-axis shardings of a model of its config on this run's mesh."""
  name = run.distill.teacher
  path = user_path(name)
  if (path / 'config.json').is_file():
    teacher_cfg, params = hf.from_pretrained(path, scan_layers=run.model_cfg.scan_layers)
    distill.check_teacher(run.distill, run.model_cfg, teacher_cfg)
    module = model.build(teacher_cfg)
    target = abstract_train_state(module, optax.identity(), run.mesh).params
    params = jax.tree.map(lambda x, t: jax.device_put(x, t.sharding), params, target)
  else:
    teacher_cfg = teacher_config(run.distill, run.model_cfg)
    module = model.build(teacher_cfg)
    params = checkpoint.restore_params(path, abstract_train_state(module, optax.identity(), run.mesh).params)
  count = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
  say(f'distill.teacher {name}: {teacher_cfg.num_layers} layers, d_model {teacher_cfg.d_model}, {count:,} parameters; '
      f'loss {run.distill.alpha_kl:g} x KL (T={run.distill.temperature:g}) + {run.distill.alpha_hard:g} x hard + '
      f'{run.distill.alpha_cos:g} x cosine')
  return distill.Teacher(name, module, params)


def _standardized(cfg: model.ModelConfig, data: tasks.DataConfig, task: tasks.Task) -> model.ModelConfig:
  """`cfg` with target_mean / target_scale = the mean and std of the training split's labels (recomputed
  identically by eval.py, which builds the same run)."""
  if objectives.spec(data.objective).loss is not objectives.LossKind.REGRESSION:
    raise ValueError(f'train.standardize_targets=True: only for data.objective=regression, not '
                     f'{data.objective.value}; set it to False')
  labels = np.array([float(task.source[i][task.info.label_feature]) for i in range(len(task.source))], np.float64)
  mean, std = float(labels.mean()), float(labels.std())
  if not std > 0:
    where = task.info.labels_from or repr(data.source)  # a tsv: source's training file
    raise ValueError(f'train.standardize_targets=True: every training label of {where} is {mean}; set it to False')
  say(f'regression targets: mean {mean:.4f}, std {std:.4f} of {len(labels)} training labels')
  return cfg.replace(target_mean=mean, target_scale=std)


def _say_tokenizer_training(data: tasks.DataConfig, tokenizer_dir: Path) -> None:
  """A line before an 'auto' SentencePiece vocabulary or byte-level BPE is trained (the first run in a workdir;
  a minute on a large corpus), and nothing when it is already there."""
  if data.tokenizer == INIT_FROM or data.images:  # images have no tokenizer
    return
  spec = TokenizerSpec.parse(data.tokenizer)
  kinds = {TokenizerKind.SENTENCEPIECE: 'SentencePiece vocabulary', TokenizerKind.BYTE_BPE: 'byte-level BPE'}
  if spec.kind not in kinds or spec.vocab_size is None:
    return
  path = user_path(spec.path) if spec.path else auto_model_path(spec, tokenizer_dir)
  if not path.exists():
    say(f'training a {kinds[spec.kind]} of {spec.vocab_size:,} pieces on the training split of {data.source} '
        f'(once: kept as {path})')


INIT_FROM = 'init_from'  # data.tokenizer: the tokenizer of train.init_from's checkpoint


def _saved_config(path: str, field: str = 'train.init_from') -> ml_collections.ConfigDict:
  """The config saved with the latest checkpoint of our workdir `path` (not an HF directory), which config
  `field` names."""
  with checkpoint.Checkpointer(user_path(path), read_only=True) as reader:
    saved = reader.saved_config() if reader.latest_step() is not None else None
  if saved is None:
    raise ValueError(f'{field}={path!r} is neither an HF checkpoint directory (config.json) nor a workdir of ours '
                     f'with a checkpoint: set --config.{field} to a directory holding one of them')
  return saved


def tokenizer_of(init_from: str) -> str:
  """The `data.tokenizer` spec of the checkpoint a fine-tune starts from: an HF directory's vocabulary file,
  or the tokenizer our run trained (its 'auto' SentencePiece model lives in <workdir>/tokenizer)."""
  if not init_from:
    raise ValueError(f"data.tokenizer='{INIT_FROM}' takes the tokenizer of train.init_from, which is empty: "
                     'set --config.train.init_from=<workdir or HF directory>, or name a tokenizer')
  path = user_path(init_from)
  if (path / 'config.json').is_file():
    for name, kind in (('vocab.txt', 'wordpiece'), ('spiece.model', 'sentencepiece'), ('vocab.json', 'byte_bpe')):
      if (path / name).is_file():
        return f'{kind}:{path / name}'
    raise ValueError(f'train.init_from={init_from!r} has no vocab.txt, spiece.model or vocab.json: set '
                     'data.tokenizer to its tokenizer')
  saved = _saved_config(init_from)
  spec = TokenizerSpec.parse(saved.data.tokenizer)
  if spec.auto:
    return f'{spec.kind.value}:{auto_model_path(spec, path / "tokenizer")}'
  return saved.data.tokenizer


def _batches(run: Run, task: tasks.Task, *, shuffle: bool, num_epochs: int | None,
             bucketed: bool = False) -> InputIterator:
  """The task's batches; `bucketed` (training with data.length_buckets): of similar lengths, each cut to a
  bucket (data/bucketing.py), which needs every example's length (computed here, once)."""
  lengths, buckets = None, ()
  if bucketed and run.data.length_buckets:  # the training split's (run.task)
    lengths, buckets = train_buckets(run)
  config = PipelineConfig(global_batch_size=run.train.batch_size, seed=run.train.seed, shuffle=shuffle,
                          num_epochs=num_epochs, worker_count=run.data.worker_count, length_buckets=buckets,
                          bucket_window=run.data.bucket_window)
  with phase(Phase.PIPELINE):
    return InputIterator(make_dataset(task.source, task.transform, config, process_index=jax.process_index(),
                                      process_count=jax.process_count(), lengths=lengths))


def train_buckets(run: Run) -> tuple[np.ndarray, tuple[int, ...]]:
  """(every training example's length, the buckets of data.length_buckets worth a program: `bucketing.choose_buckets`),
  computed once per run (it tokenizes the split) and said in one line."""
  if run.bucketing is None:
    with phase(Phase.TOKENIZE):
      lengths = bucketing.example_lengths(run.task.source, run.task.transform)
    choice = bucketing.choose_buckets(lengths, run.data.length_buckets, run.train.batch_size)
    say(choice.line(run.data.length_buckets))
    run.bucketing = lengths, choice.buckets
  return run.bucketing


class TrainSteps:
  """The train step compiled once per batch shape: the one shape, or one per length bucket."""

  def __init__(self, run: Run, compiled: Mapping[tuple[Any, ...], jax.stages.Compiled]) -> None:
    self._run = run
    self._steps = dict(compiled)
    self.programs = len(self._steps)  # compiled up front

  @staticmethod
  def key(shapes: Mapping[str, Any]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return tuple(sorted((k, tuple(v.shape)) for k, v in shapes.items()))

  def __call__(self, state: TrainState, batch: Mapping[str, np.ndarray], rng: jax.Array) -> tuple[TrainState, Any]:
    run = self._run
    global_batch = run.mesh.to_global(batch)
    key = self.key(global_batch)
    if key not in self._steps:  # not a shape `train_batch_shapes` foresaw: compile it now rather than fail
      self._steps[key] = compile_train_step(run.module, run.tx, run.schedule, run.step_cfg, run.mesh, run.abstract,
                                            global_batch, teacher=run.teacher)
    teacher = () if run.teacher is None else (run.teacher.params,)
    return self._steps[key](state, global_batch, rng, *teacher)


def train_batch_shapes(run: Run) -> list[dict[str, jax.ShapeDtypeStruct]]:
  """Every global batch shape of the training stream: one, or one per bucket chosen of data.length_buckets."""
  shapes = _global_shapes(run)
  if not run.data.length_buckets:
    return [shapes]
  per_bucket = bucketing.bucket_shapes({k: v.shape for k, v in shapes.items()}, train_buckets(run)[1])
  return [{k: jax.ShapeDtypeStruct(shape, shapes[k].dtype) for k, shape in bucket.items()} for bucket in per_bucket]


def compile_steps(run: Run) -> tuple[TrainSteps, jax.stages.Compiled]:
  """The train step for every batch shape and the eval step, compiled up front and side by side (one thread
  per core): a program's compile keeps the cores only partly busy. The MiniLM fine-tune's five bucket steps
  and eval step: 45 s one after the other, 38 s side by side on 2 cores."""
  def train_step(shapes: Mapping[str, Any]) -> jax.stages.Compiled:
    return compile_train_step(run.module, run.tx, run.schedule, run.step_cfg, run.mesh, run.abstract, shapes,
                              teacher=run.teacher)

  train_shapes = train_batch_shapes(run)
  start = time.perf_counter()
  say(f'compiling {len(train_shapes) + 1} programs: the train step '
      f'{"for " + str(len(train_shapes)) + " length buckets " if len(train_shapes) > 1 else ""}and the eval step, '
      f'on {run.mesh.mesh.devices.size} {jax.devices()[0].platform.upper()} device(s)')
  # Tracing holds the GIL but the compiles release it; each thread sets its own mesh and axis-rule contexts.
  # Several processes compile one at a time, in the same order: a GPU cluster shares autotuning results
  # between the processes' compiles of the same program.
  workers = len(os.sched_getaffinity(0)) if jax.process_count() == 1 else 1
  with phase(Phase.COMPILE), concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
    # The eval batches are never cut: the last shape, data.seq_len (the last bucket, or the only shape).
    eval_future = pool.submit(compile_eval_step, run.module, run.step_cfg, run.mesh, run.abstract.params,
                              train_shapes[-1])
    train_compiled = list(pool.map(train_step, train_shapes))
    eval_step = eval_future.result()
  say(f'compiled in {time.perf_counter() - start:.1f} s')
  return TrainSteps(run, {TrainSteps.key(s): c for s, c in zip(train_shapes, train_compiled)}), eval_step


def _global_shapes(run: Run) -> dict[str, jax.ShapeDtypeStruct]:
  """The global batch's features: one example's (every feature has a fixed shape) under the batch axis."""
  example = run.task.transform(0, run.task.source[0])
  return {k: jax.ShapeDtypeStruct((run.train.batch_size,) + np.shape(v), np.asarray(v).dtype)
          for k, v in example.items()}


def evaluate(run: Run, eval_step: Callable, params: Any) -> dict[str, float]:
  """Mean loss over up to `train.eval_batches` validation batches (same batches every time); perplexity
  for language models, accuracy for classification; mlm_sop: loss is the sum of its MLM and sentence-order
  means (what it minimises), each also reported, perplexity that of the MLM part."""
  batches = _batches(run, run.eval_task, shuffle=False, num_epochs=1)
  totals = None
  for _, batch in zip(range(run.train.eval_batches), batches):
    sums = eval_step(params, run.mesh.to_global(batch))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  batches.close()
  if totals is None:
    raise ValueError(f'the validation split of data.source={run.data.source!r} has fewer examples than one batch '
                     f'of train.batch_size={run.train.batch_size}')
  totals = jax.device_get(totals)
  weight = max(float(totals['weight']), 1.0)
  loss = float(totals['loss']) / weight
  out = {'loss': loss}
  if 'sop_loss' in totals:
    sop_weight = max(float(totals['sop_weight']), 1.0)
    sop = float(totals['sop_loss']) / sop_weight
    out = {'loss': loss + sop, 'mlm_loss': loss, 'sop_loss': sop,
           'sop_accuracy': float(totals['sop_correct']) / sop_weight}
  if objectives.spec(run.data.objective).perplexity:
    out['perplexity'] = math.exp(min(loss, 700.0))
  if 'correct' in totals:  # every cross-entropy: token or class accuracy
    out['accuracy'] = float(totals['correct']) / weight
  return out


def _initial_params(run: Run, init_from: str, params: Any) -> Any:
  """Parameters of another run or an HF directory, onto this model: matching tensors are taken, heads that
  this model lacks are dropped and heads it adds keep their fresh initialisation (both listed in the log)."""
  path = user_path(init_from)
  source_standardized = False  # a regression head of the source predicts in label units unless it was standardized
  if (path / 'config.json').is_file():
    _, loaded = hf.from_pretrained(path, scan_layers=run.model_cfg.scan_layers)
  else:
    saved = _saved_config(init_from)
    saved_module = model.build(model.ModelConfig.from_dict(saved.model))
    target = abstract_train_state(saved_module, optax.identity(), run.mesh).params
    loaded = checkpoint.restore_params(path, target)
    if saved_module.cfg.scan_layers != run.model_cfg.scan_layers:  # e.g. a scanned pretraining -> configs/glue.py
      loaded = (model.stack_layers if run.model_cfg.scan_layers else model.unstack_layers)(loaded)
    source_standardized = bool(saved.train.get('standardize_targets', False))
  mean, scale = run.model_cfg.target_mean, run.model_cfg.target_scale
  if 'classifier' in loaded and (mean, scale) != (0.0, 1.0):
    if source_standardized:
      say(f'init_from {init_from}: its regression head is in its own run\'s standardized units; loaded as is')
    else:  # re-expressed in this run's standardized units, so it predicts the same values as in its source
      head = loaded['classifier']
      loaded = loaded | {'classifier': {'kernel': head['kernel'] / scale, 'bias': (head['bias'] - mean) / scale}}
  flat_init = dict(jax.tree_util.tree_flatten_with_path(params)[0])
  flat_loaded = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(loaded)[0]}
  kept, fresh = 0, []
  leaves = []
  for key, value in flat_init.items():
    name = jax.tree_util.keystr(key)
    if name in flat_loaded:
      source = flat_loaded.pop(name)
      if tuple(source.shape) != tuple(value.shape):
        raise ValueError(f'train.init_from: {name} has shape {tuple(source.shape)} there but {tuple(value.shape)} '
                         'here: the architectures differ')
      leaves.append(jax.device_put(jnp.asarray(source, value.dtype), value.sharding))
      kept += 1
    else:
      leaves.append(value)
      fresh.append(name)
  say(f'init_from {init_from}: {kept} tensors loaded; newly initialised: {fresh or "none"}; dropped: '
       f'{sorted(flat_loaded) or "none"}')
  return jax.tree.unflatten(jax.tree.structure(params), leaves)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, float]:
  """Trains `config` in `workdir` (resuming from its latest checkpoint) and returns the final eval metrics."""
  launched = time.perf_counter()
  clock = timing.Clock()  # the start-up breakdown, printed and logged before the first step
  workdir = user_path(workdir)
  # A workdir of another config is an error naming the fields, before any data is read (nothing is written
  # here). config.distributed is not pinned: it differs between the processes of one run (process_id) and
  # between launches (the coordinator's port).
  with phase(Phase.CHECKS):
    compile_cache.enable(TrainConfig.from_dict(config.train).compilation_cache)  # before anything compiles
    if checkpoint.checkpoint_dir(workdir).is_dir():
      with checkpoint.Checkpointer(workdir, read_only=True) as reader:
        reader.check_config(config, allowed=checkpoint.RUNTIME_FIELDS + ('distributed.*',),
                            defaults=schema_defaults())
    run = build_run(config, workdir, with_teacher=True)  # the teacher is never checkpointed: reloaded on resume
  ckpt = checkpoint.Checkpointer(workdir, config=config, save_every=run.train.checkpoint_every,
                                 keep=run.train.keep, best_metric='loss', best_mode='min')
  train_batches = _batches(run, run.task, shuffle=True, num_epochs=None, bucketed=True)
  train_step, eval_step = compile_steps(run)
  clock.notes[Phase.COMPILE] = f'{train_step.programs + 1} programs'

  # The latest step that reads; a damaged one is reported in one line, set aside (<step>.corrupt) and passed over.
  if ckpt.latest_step() is not None:
    say(f'restoring step {ckpt.latest_step()} from {ckpt.directory}')
  with phase(Phase.RESTORE):
    restored = ckpt.resume(run.abstract, report=say)
  if restored is not None:
    start, state = restored.step, restored.state
    train_batches.set_state(restored.data_iterator)
    say(f'resumed from step {start} in {workdir}')
  else:
    start = 0
    count = sum(math.prod(x.shape) for x in jax.tree.leaves(run.abstract.params))
    say(f'initialising {count:,} parameters (train.seed={run.train.seed})' +
        (f', then loading train.init_from={run.train.init_from}' if run.train.init_from else ''))
    with phase(Phase.INIT):
      state = _initial_state(run)

  stop = {'signal': None}
  previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.update(signal=signum))
  seq = run.data.seq_len
  dec = run.data.targets_len if run.model_cfg.family is model.Family.ENCODER_DECODER else None
  meter = metrics.Throughput(run.train.num_steps, run.train.batch_size * metrics.tokens_per_example(
      run.model_cfg, seq, dec), flops_per_token=metrics.flops_per_token(run.model_cfg, seq, dec),
      peak_flops=metrics.total_peak_flops())
  rng = run.step_cfg.dropout_key(run.train.seed)
  eval_metrics: dict[str, float] = {}
  pending: tuple[int, Any] | None = None  # the previous step's metrics, checked once the next step is queued
  with metrics.MetricWriter(workdir, resume_step=start) as writer:
    try:
      for step in range(start + 1, run.train.num_steps + 1):
        if step == start + 1:
          with phase(Phase.FIRST_BATCH):
            batch = next(train_batches)
          clock.stop()
          say(clock.line())
          writer.write(start, metrics.Split.STARTUP, clock.as_metrics())
        else:
          batch = next(train_batches)
        state, step_metrics = train_step(state, batch, rng)
        ckpt.check_for_errors()  # a background save that failed (disk full) stops the run now, not at the next save
        if pending is not None:
          _check_finite(run, ckpt, *pending)
        pending = (step, step_metrics)
        if step == start + 1 or step % run.train.log_every == 0:
          values = writer.write(step, metrics.Split.TRAIN, step_metrics)
          meter.tick(step)
          rates = None
          if step % run.train.log_every == 0:
            rates = meter.rates()
            if rates is not None:
              writer.write(step, metrics.Split.TRAIN, rates.as_metrics())
          # The first step's line too (its loss, no rates yet): a user sees the run train seconds after launch,
          # not log_every steps later.
          writer.print_progress(step, run.train.num_steps, values, rates)
        evaluated = None
        if step % run.train.eval_every == 0 or step == run.train.num_steps:
          with meter.paused():
            evaluated = eval_metrics = evaluate(run, eval_step, state.params)
            writer.write(step, metrics.Split.EVAL, evaluated)
            say(f'step {step} eval: ' + '  '.join(f'{k} {v:.4f}' for k, v in evaluated.items()))
        # Read the flag once: a signal landing between the save decision and the exit must not skip the save.
        stopping = stop['signal'] is not None
        if step == run.train.num_steps or stopping or ckpt.should_save(step):
          _check_finite(run, ckpt, *pending)  # never save a state whose loss went bad
          with meter.paused():
            ckpt.save(step, state, data_iterator=train_batches.get_state(), metrics=evaluated, force=True)
        if stopping:
          ckpt.wait_until_finished()
          say(f'signal {stop["signal"]}: saved step {ckpt.latest_step()} in {workdir}; exiting')
          break
    finally:
      signal.signal(signal.SIGTERM, previous)
      ckpt.close()  # waits for the write in flight
      train_batches.close()
  if stop['signal'] is None and not eval_metrics:  # resumed at the last step: evaluate what was restored
    eval_metrics = evaluate(run, eval_step, state.params)
  say(summary(run, eval_metrics, seconds=time.perf_counter() - launched,
              stopped_at=step if stop['signal'] is not None else None))
  return eval_metrics


def _initial_state(run: Run) -> TrainState:
  """A fresh state of train.seed, with train.init_from's weights or the teacher's alternate layers."""
  state = init_train_state(run.module, run.tx, jax.random.key(run.train.seed), run.abstract)
  if run.train.init_from:
    state = state.replace(params=_initial_params(run, run.train.init_from, state.params))
  elif run.distill.init_student is distill.InitStudent.ALTERNATE_LAYERS:
    params, note = distill.alternate_layers(run.teacher.params, run.teacher.module.cfg, state.params, run.model_cfg)
    state = state.replace(params=params)
    say(f'distill.init_student=alternate_layers: {note}')
  return state


def summary(run: Run, final: Mapping[str, float], *, seconds: float, stopped_at: int | None = None) -> str:
  """The end-of-run lines: how it ended, the final and best evaluation, and where everything is."""
  workdir = run.workdir
  history = metrics.read_metrics(workdir / metrics.JSONL_NAME, metrics.Split.EVAL) if jax.process_index() == 0 else []
  best = min((r for r in history if math.isfinite(float(r.get('loss', math.nan)))), key=lambda r: float(r['loss']),
             default=None)
  folder = checkpoint.checkpoint_dir(workdir)
  steps = sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.exists() else []
  figures = lambda values: '  '.join(f'{k} {v:.4f}' for k, v in values.items() if k != 'step')  # noqa: E731
  if stopped_at is not None:
    lines = [f'stopped at step {stopped_at} of {run.train.num_steps} after {metrics.format_duration(seconds)}: rerun '
             'the same command to resume']
  else:
    lines = [f'finished {run.train.num_steps} steps in {metrics.format_duration(seconds)} (this launch); final '
             f'evaluation: {figures(final)}']
  if best is not None:
    lines.append(f'  best evaluation: step {best["step"]}  ' + figures({k: float(best[k]) for k in final if k in best}))
  lines += [f'  checkpoints: {folder} (steps {", ".join(map(str, steps)) or "none"})',
            f'  metrics: {workdir / metrics.JSONL_NAME}; curves: tensorboard --logdir {workdir / metrics.TB_DIR}']
  return '\n'.join(lines)


def say(line: str) -> None:
  """Prints `line` once, on process 0."""
  if jax.process_index() == 0:
    print(line, flush=True)


def _check_finite(run: Run, ckpt: checkpoint.Checkpointer, step: int, step_metrics: Mapping[str, Any]) -> None:
  # The loss is that of the parameters before this step's update; param_norm is of those after it, which a
  # checkpoint of this step would hold (a non-finite gradient makes them NaN while the loss is still finite).
  loss, param_norm = float(step_metrics['loss']), float(step_metrics['param_norm'])
  if math.isfinite(loss) and math.isfinite(param_norm):
    return
  if run.train.nan_policy is NanPolicy.SKIP:
    logging.warning('step %d: loss %s, param_norm %s, update skipped (train.nan_policy=skip)', step, loss,
                    param_norm)
    return
  ckpt.wait_until_finished()
  what = f'loss is {loss}' if not math.isfinite(loss) else f'param_norm is {param_norm} after the update'
  raise TrainingHalted(f'{what} at step {step}; the last good checkpoint is step {ckpt.latest_step()} '
                       f'in {checkpoint.checkpoint_dir(run.workdir)}. Lower optim.learning_rate, or set train.nan_policy=skip to drop '
                       'such updates')
