"""Memory and FLOPs of a run's train step on a mesh of any size, before paying for the devices (`train.py --dry_run`).

  python train.py --config configs/gpt2_small.py --dry_run --config.mesh.fsdp=8 [--dry_run_memory_gb=80]

The step is compiled exactly as training compiles it (same model, optimizer, shardings and batch shapes), for
simulated CPU devices (`jax_num_cpu_devices`), and never run: nothing is allocated and no data is read (the
batch is `data.synthetic`'s, shaped like the objective's). Per device it reports the parameters, the optimizer
state and the batch (from the shardings: exact) and XLA's temporary buffers (activations, gradients and the
update's intermediates, from the CPU compiler's buffer assignment: an estimate of a GPU's or TPU's, whose
compilers fuse and schedule differently), and the FLOPs of one step (the architecture's count,
trainer.metrics.forward_macs; XLA's CPU cost analysis counts a loop body once, so it is not quoted).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import optax

import model
from data import tasks
from data.synthetic import synthetic_batch
from trainer import distill, runner
from trainer.config import UNKNOWN_STEPS, TrainConfig
from trainer.mesh import MeshConfig
from trainer.metrics import forward_macs
from trainer.optim import OptimConfig, make_optimizer
from trainer.step import StepConfig, abstract_train_state, compile_train_step

MIB = 2 ** 20


def simulated_devices(config: ml_collections.ConfigDict, devices: int | None) -> int:
  """How many CPU devices to simulate: `devices`, else the product of config.mesh's sizes (an axis of -1, the
  rest of the devices, then has size 1)."""
  if devices:
    return devices
  mesh = MeshConfig.from_dict(config.get('mesh'))
  return math.prod(max(1, getattr(mesh, name)) for name in ('data', 'fsdp', 'tensor'))


def use_simulated_devices(count: int) -> None:
  """Makes jax's backend `count` CPU devices; must run before anything touches a device."""
  jax.config.update('jax_platforms', 'cpu')
  jax.config.update('jax_num_cpu_devices', count)


@dataclasses.dataclass(frozen=True)
class Plan:
  devices: int
  mesh: tuple[int, int, int]
  params: int  # parameters, all devices together
  batch_shapes: dict[str, tuple[int, ...]]
  param_bytes: int  # per device, the largest over devices (shards may differ by a row)
  opt_bytes: int
  batch_bytes: int
  temp_bytes: int  # XLA's temporary buffers of the step
  model_flops: float  # per step, all devices: 6 x the forward multiply-adds (trainer.metrics.forward_macs)
  compile_s: float
  teacher_bytes: int = 0  # per device: a distillation teacher's parameters (distill.teacher), read every step
  teacher_params: int = 0

  @property
  def total_bytes(self) -> int:
    return self.param_bytes + self.opt_bytes + self.batch_bytes + self.temp_bytes + self.teacher_bytes


def _bytes_per_device(tree: Any) -> int:
  """Bytes of the largest shard set of one device: the sum over leaves of each leaf's shard."""
  per_device: dict[Any, int] = {}
  for leaf in jax.tree.leaves(tree):
    for device, index in leaf.sharding.devices_indices_map(leaf.shape).items():
      shape = [len(range(*s.indices(n))) for s, n in zip(index, leaf.shape)]
      per_device[device] = per_device.get(device, 0) + math.prod(shape) * np.dtype(leaf.dtype).itemsize
  return max(per_device.values(), default=0)


def plan(config: ml_collections.ConfigDict) -> Plan:
  """Compiles the train step of `config` for the devices jax has (see `use_simulated_devices`)."""
  train = TrainConfig.from_dict(config.train)
  optim_cfg, _ = OptimConfig.for_run(config.optim, train.num_steps or UNKNOWN_STEPS)
  model_cfg = model.ModelConfig.from_dict(config.model)
  data = tasks.DataConfig.from_dict(config.data)
  mesh_cfg = MeshConfig.from_dict(config.mesh)
  ctx = mesh_cfg.context()
  tx, schedule = make_optimizer(optim_cfg)
  module = model.build(model_cfg)
  abstract = abstract_train_state(module, tx, ctx)
  distill_cfg = distill.DistillConfig.from_dict(config.get('distill'))
  step_cfg = StepConfig.of(data, train, distill_cfg)
  teacher = teacher_cfg = None
  if distill_cfg.enabled:  # its config alone (no weights): its parameters in the shardings a run gives them
    teacher_cfg = runner.teacher_config(distill_cfg, model_cfg)
    teacher_module = model.build(teacher_cfg)
    teacher = distill.Teacher(distill_cfg.teacher, teacher_module,
                              abstract_train_state(teacher_module, optax.identity(), ctx).params)
  encoder_decoder = model_cfg.family is model.Family.ENCODER_DECODER
  decoder_len = data.targets_len if encoder_decoder else None
  image = (None if model_cfg.inputs is not model.Inputs.PATCHES else
           (model_cfg.num_channels, model_cfg.image_size, model_cfg.image_size))
  example = synthetic_batch(data.objective, 1, data.seq_len, decoder_len, model_cfg.vocab_size,
                            num_labels=max(model_cfg.num_labels, 1), image_shape=image)
  shapes = {k: jax.ShapeDtypeStruct((train.batch_size,) + v.shape[1:], v.dtype) for k, v in example.items()}
  start = time.perf_counter()
  compiled = compile_train_step(module, tx, schedule, step_cfg, ctx, abstract, shapes, teacher=teacher)
  compile_s = time.perf_counter() - start
  memory = compiled.memory_analysis()
  batch_shardings = ctx.batch_shardings(shapes, step_cfg.microbatches)
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_shardings[k]) for k, v in shapes.items()}
  # Training: 6 x the forward multiply-adds; a teacher only runs forward: 2 x its own.
  flops = 6.0 * forward_macs(model_cfg, data.seq_len, decoder_len)
  if teacher_cfg is not None:
    flops += 2.0 * forward_macs(teacher_cfg, data.seq_len, decoder_len)
  return Plan(devices=len(jax.devices()), mesh=mesh_cfg.shape(len(jax.devices())), params=model.count_params(model_cfg),
              batch_shapes={k: v.shape for k, v in shapes.items()}, param_bytes=_bytes_per_device(abstract.params),
              opt_bytes=_bytes_per_device(abstract.opt_state), batch_bytes=_bytes_per_device(batch),
              temp_bytes=int(memory.temp_size_in_bytes) if memory is not None else 0,
              model_flops=flops * train.batch_size, compile_s=compile_s,
              teacher_bytes=_bytes_per_device(teacher.params) if teacher else 0,
              teacher_params=model.count_params(teacher_cfg) if teacher_cfg else 0)


def report(p: Plan, memory_gb: float | None = None) -> str:
  """The plan as lines of text; with `memory_gb` (one device's memory) whether the step fits."""
  shapes = ', '.join(f'{k} {v}' for k, v in p.batch_shapes.items())
  per_device_flops = p.model_flops / p.devices
  lines = [
      f'dry run: the train step compiled for {p.devices} simulated devices, mesh (data, fsdp, tensor) = {p.mesh}, '
      f'in {p.compile_s:.1f} s; nothing ran',
      f'  model: {p.params:,} parameters; global batch: {shapes}',
      '  per device (the largest shard):',
      f'    parameters (float32)        {p.param_bytes / MIB:12,.1f} MiB',
      f'    optimizer state             {p.opt_bytes / MIB:12,.1f} MiB',
      f'    batch                       {p.batch_bytes / MIB:12,.1f} MiB',
      f'    temporaries (XLA, CPU est.) {p.temp_bytes / MIB:12,.1f} MiB   activations, gradients, update',
  ] + ([f'    teacher parameters          {p.teacher_bytes / MIB:12,.1f} MiB   distill.teacher, '
        f'{p.teacher_params:,} parameters, read every step'] if p.teacher_params else []) + [
      f'    total                       {p.total_bytes / MIB:12,.1f} MiB',
      f'  FLOPs per step: {p.model_flops:.3e} all devices (6 x the forward multiply-adds'
      + (', + 2 x the teacher\'s' if p.teacher_params else '') + f'), {per_device_flops:.3e} per device',
  ]
  if memory_gb:
    need = p.total_bytes / 1e9
    verdict = 'fits' if need <= memory_gb else 'does NOT fit'
    lines.append(f'  {verdict} in {memory_gb:g} GB per device ({need:.1f} GB needed, {100 * need / memory_gb:.0f}%)'
                 + ('' if need <= memory_gb else ': raise mesh.fsdp, lower train.batch_size or raise '
                    'train.microbatches, or set model.remat=full'))
  return '\n'.join(lines)
