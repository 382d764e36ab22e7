"""Train-step throughput of our step next to HF transformers (PyTorch) on the same model, weights and
batch, in one run.

  python bench/train_throughput.py --config gpt_tiny --steps 5          # bert_tiny, t5_tiny: the CPU set
  python bench/train_throughput.py --config gpt_tiny --dropout 0        # first-step losses must agree
  python bench/train_throughput.py --table gpu                          # the GPU table (TABLES): bf16, each family
        as its recipe has it and with every lever, HF eager and torch.compile; bench/gpu_session.sh runs it
  python bench/train_throughput.py --table cpu                          # the CPU table: the tiny configs
        (a failing case does not stop the others; --case_timeout S, --cases 'gpt2_small,t5_base fast')
  more: --batch_size, --seq_len, --decoder_seq_len (T5), --dtype float32|bfloat16, --mesh data,fsdp,tensor,
        --warmup, --hf eager,compile|none (--no_hf), --json PATH, --model FIELD=VALUE (any ModelConfig field:
        attention_impl=cudnn, scan_layers=False, remat=dots, ...), --train FIELD=VALUE (logits_chunk=128, ...),
        --xla_flags='--xla_gpu_enable_triton_gemm=false ...' (our side's XLA flags)
  taskset -c 1 python bench/train_throughput.py ...   # a shared CPU: pin both sides to the same free core(s);
                                                      # XLA's pool and torch's threads follow the affinity

Ours: trainer.step.compile_train_step (AOT, shardings on a mesh, 1 device by default, donated state) with
trainer.optim's AdamW and global-norm clipping. HF: the class `hf.save_pretrained` writes for the config
(GPT2LMHeadModel, BertForMaskedLM, T5ForConditionalGeneration) loaded from our initial parameters, train
mode, the same dropout, torch.optim.AdamW with the same lr, betas, eps, decay (and decay mask) and
clipping; on CUDA if torch sees it (bf16 autocast, fused AdamW), else on the CPU with every core; eager,
and with --hf compile also under torch.compile (a fresh copy of the same weights). Both train on one
synthetic batch (data/synthetic.py: random ids with the objective's features; MLM: BERT's share of targets
per row). Per side: compile time (ours; HF compile: its first step), median step time after
warm-up (every step synchronised), tokens/s (T5: encoder + decoder tokens), MFU where trainer.metrics
knows the device's bf16 peak, peak memory (GPU: the allocator's peak; else the process's max RSS), and
the first step's loss (same weights and batch: equal when dropout is 0).

The HF side runs in a child process that never imports jax (this one never imports torch): each max RSS
is one framework's, and on a GPU each allocator has the memory to itself (the child runs after our state
is initialised and compiled, before our steps allocate activations).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
  import model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# jax is imported lazily (only by this process's own side) and must not grab 75% of the GPU up front, which
# would starve the HF child of memory.
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
os.environ.setdefault('HF_HUB_OFFLINE', '1')  # the HF model comes from a local directory; never a hub

# Optimizer of both sides: trainer.optim.OptimConfig fields (constant lr, decoupled decay, clip at norm 1).
OPTIM = dict(learning_rate=1e-4, schedule='constant', b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01, clip_norm=1.0)


@dataclasses.dataclass(frozen=True)
class TableCase:
  """One row of a table: a config at a batch shape, with the flags of its variant, and the HF modes to time."""

  name: str
  config: str
  batch: int
  seq_len: int
  decoder_len: int | None = None
  flags: tuple[str, ...] = ()  # more flags of this script (--dropout 0, --model=..., --train=...)
  hf: str = 'eager'
  dtype: str = 'bfloat16'


# Every lever of trainer/ and model/ on: no dropout on the attention probabilities (MosaicBERT, T5.1.1, MaxText;
# the residual dropout stays), so attention runs in cuDNN's fused kernel; unscanned layers (MaxText's GPU
# recipes). BERT's MLM head at the masked positions alone is not a flag: the MLM step always does it. (jax
# 0.10.2's cuDNN attention takes a dropout rate, but its seed is a static Python int, one mask pattern per
# compiled program: not used until a GPU run shows the masks change from step to step.)
_FAST = ('--model=attention_dropout_rate=0', '--model=attention_impl=cudnn', '--model=scan_layers=False')
_PLAIN = ('--step=max_targets=0', '--model=scan_layers=True', '--step=logits_chunk=0')
TABLES: dict[str, tuple[TableCase, ...]] = {
    # bf16 on one GPU; the recipe rows keep each config's dropout (0.1) and its defaults, against HF eager; the
    # fast rows against HF torch.compile of the same config (its attention dropout 0 too; HF's T5 has one rate).
    'gpu': (TableCase('gpt2_small', 'gpt2_small', 16, 1024),
            TableCase('gpt2_small fast', 'gpt2_small', 16, 1024, None, _FAST + ('--train=logits_chunk=256', '--profile'),
                      'compile'),
            TableCase('bert_base', 'bert_base', 32, 512),
            TableCase('bert_base fast', 'bert_base', 32, 512, None, _FAST + ('--profile',), 'compile'),
            TableCase('t5_base', 't5_base', 32, 512, 114),
            TableCase('t5_base fast', 't5_base', 32, 512, 114, _FAST + ('--profile',), 'compile'),
            # last, so that the overall limit of bench/gpu_session.sh cuts it first: is 64 rows GPT-2's best batch?
            TableCase('gpt2_small fast b64', 'gpt2_small', 64, 1024, None,
                      _FAST + ('--train=logits_chunk=256', '--model=remat=dots'), 'none'),
            # after it: XLA's Triton GEMMs off (cuBLAS for every product), which some GPT-2-sized runs report faster
            TableCase('gpt2_small fast no-triton', 'gpt2_small', 16, 1024, None,
                      _FAST + ('--train=logits_chunk=256', '--xla_flags=--xla_gpu_enable_triton_gemm=false'), 'none')),
    # float32 on this project's CPU, the tiny configs as they are (their CPU settings included), HF eager.
    'cpu': (TableCase('gpt_tiny', 'gpt_tiny', 32, 128, hf='eager', dtype='float32'),
            TableCase('bert_tiny', 'bert_tiny', 32, 128, hf='eager', dtype='float32'),
            TableCase('t5_tiny', 't5_tiny', 32, 128, hf='eager', dtype='float32')),
    # The CPU levers one at a time, ours only: each tiny config from the plain setup (scanned layers, whole
    # logits, BERT's MLM head at every position) to the configs' own settings.
    'cpu_levers': tuple(
        TableCase(f'{name} {label}', name, 32, 128, None, flags, 'none', 'float32')
        for name in ('gpt_tiny', 'bert_tiny', 't5_tiny')
        for label, flags in (('plain', _PLAIN), ('+ logits_chunk=8', _PLAIN[:2]),
                             ('+ unscanned', ('--step=max_targets=0',)), ('+ MLM head at targets', ()))
        if name == 'bert_tiny' or label != '+ MLM head at targets'),
}
HF_MODES = ('eager', 'compile')
MODEL_FEATURES = ('input_ids', 'attention_mask', 'token_type_ids', 'decoder_input_ids', 'decoder_attention_mask')


def cpu_count() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1


def max_rss() -> int:
  """Peak resident set size of this process in bytes (Linux reports KiB, macOS bytes)."""
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return rss if sys.platform == 'darwin' else rss * 1024


def hf_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Our features -> HF's: the model inputs keep their (HF) names; labels are the targets, -100 where unweighted."""
  out = {k: v for k, v in batch.items() if k in MODEL_FEATURES}
  return out | {'labels': np.where(batch['loss_weights'] > 0, batch['targets'], -100).astype(np.int32)}


# --- the HF side (child process: torch only) -------------------------------------------------------------

def hf_worker(directory: Path) -> None:
  """Trains the HF model saved in `directory` on its batch.npz as job.json says; writes hf.json."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  transformers.logging.set_verbosity_error()
  transformers.logging.disable_progress_bar()  # the 'Loading weights' bar
  job = json.loads((directory / 'job.json').read_text())
  torch.set_num_threads(job['threads'])
  cuda = torch.cuda.is_available()
  device = 'cuda' if cuda else 'cpu'
  if cuda:  # XLA computes float32 matmuls on GPU in TF32 by default; let torch do the same
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
  arch = json.loads((directory / 'config.json').read_text())['architectures'][0]
  arrays = dict(np.load(directory / 'batch.npz'))
  labels = torch.from_numpy(arrays.pop('labels')).long().to(device)
  inputs = {k: torch.from_numpy(v).long().to(device) for k, v in arrays.items()}
  sync = torch.cuda.synchronize if cuda else (lambda: None)
  result: dict[str, Any] = {'modes': {}}
  for mode in job['modes']:  # each from the same initial weights
    hf_model, info = getattr(transformers, arch).from_pretrained(directory, dtype=torch.float32,
                                                                 output_loading_info=True)
    if bad := {k: v for k, v in info.items() if k != 'error_msgs' and v}:  # the mapping must be exact
      raise RuntimeError(f'{arch} did not load our weights exactly: {bad}')
    hf_model.to(device).train()
    result['attention'] = getattr(hf_model.config, '_attn_implementation', '?')  # HF's pick (sdpa, eager, ...)
    result['params'] = sum(p.numel() for p in hf_model.parameters())
    # trainer.optim decays kernels and embedding tables only (not biases, norms, T5's relative bias table).
    params = list(hf_model.named_parameters())
    decayed = lambda name, p: p.ndim >= 2 and 'relative_attention_bias' not in name
    groups = [{'params': [p for n, p in params if decayed(n, p)], 'weight_decay': job['weight_decay']},
              {'params': [p for n, p in params if not decayed(n, p)], 'weight_decay': 0.0}]
    # fused=True on CUDA is what HF's Trainer uses there (adamw_torch_fused); the CPU keeps torch's default.
    optimizer = torch.optim.AdamW(groups, lr=job['learning_rate'], betas=(job['b1'], job['b2']), eps=job['eps'],
                                  fused=cuda or None)
    forward = torch.compile(hf_model) if mode == 'compile' else hf_model
    if cuda:
      torch.cuda.reset_peak_memory_stats()

    times, first_loss = [], None
    for _ in range(job['warmup'] + job['steps']):
      sync()
      start = time.perf_counter()
      optimizer.zero_grad(set_to_none=True)
      with torch.autocast(device, dtype=torch.bfloat16, enabled=job['dtype'] == 'bfloat16'):
        logits = forward(**inputs).logits
      # The loss outside the model: HF's GPT-2 shifts labels itself and would drop the last position; this is
      # the same mean cross-entropy over the weighted positions as ours, for all three.
      loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
      loss.backward()
      torch.nn.utils.clip_grad_norm_(hf_model.parameters(), job['clip_norm'])
      optimizer.step()
      sync()
      times.append(time.perf_counter() - start)
      first_loss = loss.item() if first_loss is None else first_loss
    peak = (torch.cuda.max_memory_allocated(), 'torch.cuda.max_memory_allocated') if cuda else (max_rss(), 'max RSS')
    result['modes'][mode] = {'step_times': times, 'first_loss': first_loss, 'peak_bytes': peak[0],
                             'peak_kind': peak[1]}
    del forward, hf_model, optimizer
  result |= {'device': torch.cuda.get_device_name() if cuda else 'cpu', 'platform': device,
             'threads': torch.get_num_threads(), 'versions': f'torch {torch.__version__}, transformers {transformers.__version__}'}
  (directory / 'hf.json').write_text(json.dumps(result))


# --- our side and the comparison (this process: jax only) ------------------------------------------------

def parse_value(text: str) -> Any:
  """'3' -> 3, 'False' -> False, 'cudnn' -> 'cudnn' (ModelConfig turns enum strings into enums)."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


@dataclasses.dataclass(frozen=True)
class Case:
  """What one benchmark runs: the model (with the command line's overrides) and the batch's shape."""

  cfg: model.ModelConfig
  objective: str
  batch_size: int
  seq_len: int
  decoder_len: int | None  # T5's targets; None for one stack
  step: Any  # trainer.step.StepConfig: the config's train section with the --train overrides


def load_case(args: argparse.Namespace) -> Case:
  """configs/<name>.py with --dtype, --dropout, --model overrides and the batch shape of the flags."""
  import model  # pylint: disable=import-outside-toplevel
  from data import examples  # pylint: disable=import-outside-toplevel

  name, _, arg = args.config.partition(':')
  config = importlib.import_module(f'configs.{name}').get_config(arg or None)
  overrides = {'dtype': args.dtype} | {k: parse_value(v) for k, v in (kv.split('=', 1) for kv in args.model)}
  if args.dropout is not None:  # every rate the config uses (T5 also drops inside the feed-forward)
    rates = ['dropout_rate', 'attention_dropout_rate'] + ['ffn_dropout_rate'] * bool(config.model.ffn_dropout_rate)
    overrides |= {rate: args.dropout for rate in rates}
  cfg = model.ModelConfig.from_dict(dict(config.model) | overrides)
  seq_len = args.seq_len or config.data.seq_len
  decoder_len = None
  if cfg.family is model.Family.ENCODER_DECODER:  # the config's length if its seq_len stands, else T5's rule
    decoder_len = args.decoder_seq_len or (config.data.decoder_seq_len if seq_len == config.data.seq_len else None)
    decoder_len = decoder_len or examples.random_spans_helper(seq_len)[1]
  if cfg.position in (model.Position.LEARNED, model.Position.SINUSOIDAL) and seq_len > cfg.max_len:
    raise ValueError(f'--seq_len {seq_len} exceeds model.max_len={cfg.max_len} (the position table)')
  from data.tasks import DataConfig  # pylint: disable=import-outside-toplevel
  from trainer.config import TrainConfig  # pylint: disable=import-outside-toplevel
  from trainer.step import StepConfig  # pylint: disable=import-outside-toplevel
  train = TrainConfig.from_dict(dict(config.train) | {k: parse_value(v) for k, v in (kv.split('=', 1) for kv in args.train)})
  step = StepConfig.of(dataclasses.replace(DataConfig.from_dict(config.data), seq_len=seq_len), train)
  step = dataclasses.replace(step, **{k: parse_value(v) for k, v in (kv.split('=', 1) for kv in args.step)})
  return Case(cfg, config.data.objective, args.batch_size or config.train.batch_size, seq_len, decoder_len, step)


# The parts of a step a profile's ops are summed into, by the jax operation's name (the HLO's op_name: the
# Flax module path and the named scopes of model/layers.py and trainer/step.py, such as
# 'jit(train_step)/transpose(jvp(Transformer))/.../layers_0/self_attn/dropout/mul'). The first part with a
# fragment in one of the name's components wins: dropout inside attention is dropout, the attention's
# pre-norm ('self_attn_norm') a norm, the MLM head's norm the LM head, the gradient clipping's norm the optimizer.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ('optimizer', ('optimizer',)),  # first: clipping's global norm is not a norm layer
    ('metrics', ('metrics',)),
    ('dropout', ('dropout', 'Dropout')),
    ('LM head + loss', ('loss', 'lm_logits', 'lm_projection', 'lm_head', 'mlm_', 'classifier', 'pooler', 'qa_outputs')),
    ('norms', ('norm',)),
    ('attention', ('self_attn', 'cross_attn')),
    ('feed-forward', ('ffn',)),
    ('embeddings', ('embed',)),
)
OTHER_PART = 'other (residual adds, layout copies)'


def op_part(op_name: str) -> str:
  """The part of the step (PARTS) an op named `op_name` belongs to."""
  components = [c for c in re.split(r'[/()]', op_name) if c]
  return next((part for part, fragments in PARTS if any(f in c for f in fragments for c in components)), OTHER_PART)


def profile_top_ops(step: Any, state: Any, batch: Any, rng: Any, steps: int = 3,
                    top: int = 15) -> tuple[Any, list, list]:
  """jax.profiler trace of `steps` more steps: the ops that took the most time per step, [(name, ms, share)],
  each named with the jax operation it comes from (the HLO's op_name), and every op's time summed by part of
  the step (PARTS), [(part, ms, share)]. On a GPU or TPU the device's 'XLA Ops' line; on the CPU the XLA thread
  pool's thunks. Loops and waits are left out: their ops are counted inside."""
  import collections  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from jax.profiler import ProfileData  # pylint: disable=import-outside-toplevel
  with tempfile.TemporaryDirectory(prefix='profile_') as tmp:
    with jax.profiler.trace(tmp):
      for _ in range(steps):
        state, metrics = step(state, batch, rng)
        jax.block_until_ready(metrics)
    data = ProfileData.from_file(str(next(Path(tmp).rglob('*.xplane.pb'))))
  totals: collections.Counter = collections.Counter()
  device_planes = [p for p in data.planes if p.name.startswith('/device:') and 'CPU' not in p.name]
  # A device's ops line by its name in the trace ('XLA Ops'); failing that, its streams' kernels. On the CPU the
  # thunks run on XLA's Eigen pool or, when the client runs a program inline, on its own thread.
  wanted = ((lambda name: name == 'XLA Ops'), (lambda name: name.startswith('Stream'))) if device_planes else (
      (lambda name: name.startswith(('tf_XLAEigen', 'tf_XLAPjRtCpuClient'))),)
  for chosen in wanted:
    for plane in device_planes or data.planes:
      for line in plane.lines:
        if chosen(line.name):
          for event in line.events:
            if not event.name.startswith(('ThunkExecutor', 'SlinkyThreadPool', 'while', 'conditional')):
              totals[event.name] += event.duration_ns
    if totals:
      break
  whole = sum(totals.values()) or 1
  hlo = step.as_text()

  def found(name: str) -> tuple[str, str]:
    match = re.search(r'^\s*(?:ROOT )?%' + re.escape(name) + r' = (\S+) .*?op_name="([^"]*)"', hlo, re.M)
    return (match.group(1), match.group(2)) if match else ('', '')

  parts: collections.Counter = collections.Counter()
  for name, ns in totals.items():
    parts[op_part(found(name)[1])] += ns
  ops = [(f'{name} {shape} {op_name[-100:]}' if op_name else name, ns / steps / 1e6, ns / whole)
         for name, ns in totals.most_common(top) for shape, op_name in [found(name)]]
  return state, ops, [(part, ns / steps / 1e6, ns / whole) for part, ns in parts.most_common()]


def summarise(step_times: list[float], warmup: int, tokens: int, flops_per_token: float,
              peak_flops: float | None, **extra: Any) -> dict[str, Any]:
  """One side's figures: median step time after warm-up (and the fastest, steadier on a shared machine),
  tokens/s, MFU (None without a known peak)."""
  timed = step_times[warmup:]
  median = statistics.median(timed)
  mfu = tokens / median * flops_per_token / peak_flops if peak_flops else None
  return {'step_s': median, 'min_step_s': min(timed), 'first_step_s': step_times[0], 'tokens_per_s': tokens / median,
          'mfu': mfu} | extra


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
  """Builds, compiles and times both sides for one config; returns the figures (see `print_result`)."""
  # pylint: disable=import-outside-toplevel
  import jax
  import model
  from data.synthetic import synthetic_batch
  from model import hf
  from trainer.mesh import MeshConfig
  from trainer.metrics import flops_per_token, peak_flops_per_device, tokens_per_example, total_peak_flops
  from trainer.optim import OptimConfig, make_optimizer
  from trainer.step import abstract_train_state, compile_train_step, init_train_state

  case = load_case(args)
  sizes = [int(x) for x in args.mesh.split(',')]
  mesh_cfg = MeshConfig(data=sizes[0], fsdp=sizes[1], tensor=sizes[2])
  devices = jax.devices() if -1 in sizes else jax.devices()[:int(np.prod(sizes))]
  mesh = mesh_cfg.context(devices)
  module, (tx, schedule) = model.build(case.cfg), make_optimizer(OptimConfig(**OPTIM))
  abstract = abstract_train_state(module, tx, mesh)
  state = init_train_state(module, tx, jax.random.key(0), abstract)
  batch_np = synthetic_batch(case.objective, case.batch_size, case.seq_len, case.decoder_len, case.cfg.vocab_size)
  batch = mesh.to_global(batch_np)
  start = time.perf_counter()
  step = compile_train_step(module, tx, schedule, case.step, mesh, abstract, batch)
  compile_s = time.perf_counter() - start

  hf_result = None
  if args.hf_modes:
    with tempfile.TemporaryDirectory(prefix='train_throughput_') as tmp:
      hf.save_pretrained(case.cfg, state.params, tmp)  # before our first step, which donates the state
      np.savez(Path(tmp) / 'batch.npz', **hf_batch(batch_np))
      job = OPTIM | {'threads': cpu_count(), 'dtype': case.cfg.dtype, 'warmup': args.warmup, 'steps': args.steps,
                     'modes': args.hf_modes}
      (Path(tmp) / 'job.json').write_text(json.dumps(job))
      subprocess.run([sys.executable, __file__, '--hf_worker', tmp], check=True)
      hf_result = json.loads((Path(tmp) / 'hf.json').read_text())

  times, first_loss, rng = [], None, case.step.dropout_key(0)
  for _ in range(args.warmup + args.steps):
    start = time.perf_counter()
    state, metrics = step(state, batch, rng)
    jax.block_until_ready(metrics)  # metrics need the whole update (param_norm is of the new parameters)
    times.append(time.perf_counter() - start)
    first_loss = float(metrics['loss']) if first_loss is None else first_loss
  top_ops = step_parts = None
  if args.profile:
    state, top_ops, step_parts = profile_top_ops(step, state, batch, rng)
  stats = [d.memory_stats() or {} for d in mesh.mesh.devices.flat]  # None on the CPU
  if all('peak_bytes_in_use' in s for s in stats):
    peak, peak_kind = max(s['peak_bytes_in_use'] for s in stats), 'peak_bytes_in_use, max over devices'
  else:
    peak, peak_kind = max_rss(), 'max RSS'

  tokens = case.batch_size * tokens_per_example(case.cfg, case.seq_len, case.decoder_len)
  per_token = (args.warmup, tokens, flops_per_token(case.cfg, case.seq_len, case.decoder_len))
  ours = summarise(times, *per_token, total_peak_flops(list(mesh.mesh.devices.flat)), compile_s=compile_s,
                   first_loss=first_loss, peak_bytes=peak, peak_kind=peak_kind, versions=f'jax {jax.__version__}',
                   device=f'{jax.default_backend()} ({devices[0].device_kind})')
  theirs = {}
  if hf_result is not None:
    hf_peak = peak_flops_per_device(hf_result['device']) if hf_result['platform'] == 'cuda' else None
    common = {k: v for k, v in hf_result.items() if k != 'modes'}
    for mode, figures in hf_result['modes'].items():
      theirs[mode] = summarise(figures.pop('step_times'), *per_token, hf_peak, compile_s=None, **figures, **common)
  return {'config': args.config, 'family': case.cfg.family.value, 'objective': case.objective,
          'batch_size': case.batch_size, 'seq_len': case.seq_len, 'decoder_seq_len': case.decoder_len,
          'tokens_per_step': tokens, 'dtype': case.cfg.dtype, 'dropout': case.cfg.dropout_rate, 'logits_chunk': case.step.logits_chunk,
          'params': model.count_params(case.cfg), 'mesh': mesh_cfg.shape(len(devices)), 'steps': args.steps,
          'model_overrides': args.model, 'train_overrides': args.train + args.step, 'xla_flags': args.xla_flags,
          'ours': ours, 'hf': theirs,
          'top_ops': top_ops, 'step_parts': step_parts}


def print_result(r: dict[str, Any]) -> None:
  length = f'{r["seq_len"]} -> {r["decoder_seq_len"]}' if r['decoder_seq_len'] else f'{r["seq_len"]}'
  ours, theirs = r['ours'], r['hf']
  first_hf = next(iter(theirs.values()), None)
  print(f'\n{r["config"]} ({r["family"]}, {r["objective"]}): batch {r["batch_size"]} x {length} tokens, {r["dtype"]}, '
        f'dropout {r["dropout"]}, {r["params"]:,} parameters'
        + (f' (HF counts {first_hf["params"]:,})' if first_hf else ''))
  overrides = ' '.join([f'model.{kv}' for kv in r['model_overrides']] + [f'train.{kv}' for kv in r['train_overrides']]
                       + ([f'XLA_FLAGS+={r["xla_flags"]}'] if r.get('xla_flags') else []))
  print(f'  ours: {ours["versions"]} on {ours["device"]}, mesh (data, fsdp, tensor) = {r["mesh"]}'
        + (f'; {overrides}' if overrides else ''))
  if first_hf:
    print(f'  HF:   {first_hf["versions"]} on {first_hf["device"]}, threads {first_hf["threads"]}, '
          f'attention {first_hf["attention"]}')
  print(f'  {"":<12}{"compile s":>10}{"1st step s":>11}{"step ms":>9}{"(min)":>9}{"tokens/s":>10}{"MFU":>7}  '
        f'{"peak memory":<36}{"1st loss":>9}')
  for label, side in [('ours (jax)', ours)] + [(f'HF {mode}', figures) for mode, figures in theirs.items()]:
    compile_s = f'{side["compile_s"]:.2f}' if side['compile_s'] is not None else '-'
    mfu = f'{100 * side["mfu"]:.1f}%' if side['mfu'] is not None else '-'
    memory = f'{side["peak_bytes"] / 2**20:,.0f} MiB ({side["peak_kind"]})'
    fastest = f'({1e3 * side["min_step_s"]:.1f})'
    print(f'  {label:<12}{compile_s:>10}{side["first_step_s"]:>11.2f}{1e3 * side["step_s"]:>9.1f}{fastest:>9}'
          f'{side["tokens_per_s"]:>10,.0f}{mfu:>7}  {memory:<36}{side["first_loss"]:>9.4f}')
  print(f'  step ms: median (and min) of {r["steps"]} steps after warm-up, each synchronised; tokens/s from the median')
  if r.get('top_ops'):
    print('  ours, top ops per step (jax.profiler; ms, share of the profiled op time):')
    for name, ms, share in r['top_ops']:
      print(f'    {ms:9.2f} ms {100 * share:5.1f}%  {name}')
    print('  ours, every op by part of the step (forward and backward together):')
    for part, ms, share in r['step_parts']:
      print(f'    {ms:9.2f} ms {100 * share:5.1f}%  {part}')
  for mode, figures in theirs.items():
    gap = abs(ours['first_loss'] - figures['first_loss'])
    why = '' if r['dropout'] == 0 else ' (dropout on: the masks differ, so a gap is expected; --dropout 0 checks)'
    print(f'  ours / HF {mode} tokens/s: {ours["tokens_per_s"] / figures["tokens_per_s"]:.2f}x; '
          f'|first-step loss difference| {gap:.2e}{why}')


def descendants(pid: int) -> list[int]:
  """The process ids below `pid` (children, grandchildren, ...), read from /proc; [] where there is none."""
  children: dict[int, list[int]] = {}
  for stat in Path('/proc').glob('[0-9]*/stat'):
    try:
      ppid = int(stat.read_text().rsplit(')', 1)[1].split()[1])  # the field after the state
    except (OSError, IndexError, ValueError):
      continue  # gone meanwhile
    children.setdefault(ppid, []).append(int(stat.parent.name))
  out, todo = [], [pid]
  while todo:
    out += (found := children.get(todo.pop(), []))
    todo += found
  return out


def run_case(command: list[str], timeout: float | None) -> str | None:
  """Runs one case's process; None if it succeeded, else why not. On a timeout (or Ctrl-C) the case and its
  HF child are killed, so nothing is left holding the GPU. They stay in this process's group, so a
  `timeout` command around the whole run reaches them too."""
  proc = subprocess.Popen(command)
  try:
    code = proc.wait(timeout=timeout)
  except BaseException as e:
    for pid in [proc.pid, *descendants(proc.pid)]:
      try:
        os.kill(pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
    proc.wait()
    if not isinstance(e, subprocess.TimeoutExpired):
      raise
    return f'timed out after {timeout:.0f} s'
  return None if code == 0 else f'exit status {code}'


def run_table(args: argparse.Namespace) -> int:
  """A table of TABLES, each case in its own process (so no library's memory pool outlives its case). A case
  that fails or outlasts --case_timeout is reported and the others still run; --json is rewritten after every
  case, so a run stopped from outside keeps the finished ones. Returns 1 if any case failed."""
  table = TABLES[args.table]
  wanted = [c.strip() for c in args.cases.split(',')] if args.cases else [c.name for c in table]
  if unknown := sorted(set(wanted) - {c.name for c in table}):
    raise SystemExit(f'--cases: unknown {unknown}; the {args.table} table has {[c.name for c in table]}')
  results = []
  for case in (c for c in table if c.name in wanted):
    with tempfile.NamedTemporaryFile(suffix='.json') as out:
      command = [sys.executable, __file__, '--config', case.config, '--batch_size', str(case.batch), '--seq_len',
                 str(case.seq_len), '--dtype', case.dtype, '--steps', str(args.steps), '--warmup', str(args.warmup),
                 '--mesh', args.mesh, '--json', out.name, '--hf', 'none' if args.no_hf else case.hf]
      command += ['--decoder_seq_len', str(case.decoder_len)] if case.decoder_len else []
      command += list(case.flags) + [f'--model={kv}' for kv in args.model] + [f'--train={kv}' for kv in args.train]
      command += [f'--step={kv}' for kv in args.step]
      command += ['--dropout', str(args.dropout)] if args.dropout is not None else []
      command += [f'--xla_flags={args.xla_flags}'] if args.xla_flags else []
      print(f'\n=== {case.name}: {" ".join(command[2:])}', flush=True)
      start = time.perf_counter()
      error = run_case(command, args.case_timeout)
      if error is None:
        results.append(json.loads(Path(out.name).read_text()) | {'case': case.name, 'wall_s': time.perf_counter() - start})
      else:
        print(f'\n{case.name}: FAILED ({error}); going on with the other cases', flush=True)
        results.append({'case': case.name, 'error': error, 'wall_s': time.perf_counter() - start})
    if args.json:
      Path(args.json).write_text(json.dumps(results, indent=1))
  mfu = lambda s: f'{100 * s["mfu"]:.1f}%' if s and s.get('mfu') is not None else '-'
  tps = lambda s: f'{s["tokens_per_s"]:,.0f}' if s else '-'
  print(f'\n{"case":<34}{"tokens/step":>12}{"ours tok/s":>12}{"MFU":>7}{"HF eager":>11}{"MFU":>7}{"HF compile":>12}'
        f'{"MFU":>7}{"ours/eager":>11}{"ours/compile":>13}{"wall s":>8}')
  for r in results:
    if 'error' in r:
      print(f'{r["case"]:<34}  FAILED: {r["error"]}')
      continue
    ours, eager, compiled = r['ours'], r['hf'].get('eager'), r['hf'].get('compile')
    ratio = lambda s: f'{ours["tokens_per_s"] / s["tokens_per_s"]:.2f}x' if s else '-'
    print(f'{r["case"]:<34}{r["tokens_per_step"]:>12,}{tps(ours):>12}{mfu(ours):>7}{tps(eager):>11}{mfu(eager):>7}'
          f'{tps(compiled):>12}{mfu(compiled):>7}{ratio(eager):>11}{ratio(compiled):>13}{r["wall_s"]:>8.0f}')
  return int(any('error' in r for r in results))


def main() -> None:
  parser = argparse.ArgumentParser(description=' '.join(__doc__.split('\n\n')[0].split()))
  parser.add_argument('--config', default='gpt_tiny', help='a configs/ module, optionally :arg (t5_base:v1.1)')
  parser.add_argument('--batch_size', type=int, help='default: config.train.batch_size')
  parser.add_argument('--seq_len', type=int, help='default: config.data.seq_len')
  parser.add_argument('--decoder_seq_len', type=int, help="T5 targets; default: the config's, or T5's rule")
  parser.add_argument('--steps', type=int, default=10, help='timed steps (the median is reported)')
  parser.add_argument('--warmup', type=int, default=2, help='untimed steps first')
  parser.add_argument('--dtype', choices=('float32', 'bfloat16'), default='float32',
                      help='compute dtype (master weights stay float32; HF: autocast)')
  parser.add_argument('--dropout', type=float, help="every dropout rate (default: the config's); 0 for loss parity")
  parser.add_argument('--mesh', default='1,1,1', help='data,fsdp,tensor sizes (-1: the rest of the devices)')
  parser.add_argument('--model', action='append', default=[], metavar='FIELD=VALUE', help='ModelConfig override')
  parser.add_argument('--train', action='append', default=[], metavar='FIELD=VALUE',
                      help='TrainConfig override (logits_chunk=8, ...)')
  parser.add_argument('--step', action='append', default=[], metavar='FIELD=VALUE',
                      help='trainer.step.StepConfig override after the config (max_targets=0: MLM head everywhere)')
  parser.add_argument('--hf', default='eager', help=f'HF modes to time, comma-separated: {",".join(HF_MODES)}, or none')
  parser.add_argument('--no_hf', action='store_true', help='time our step only (--hf none)')
  parser.add_argument('--table', choices=sorted(TABLES), help='run a table of cases (TABLES), each in its own process')
  parser.add_argument('--all_gpu', action='store_true', help='--table gpu')
  parser.add_argument('--cases', help="with --table: only these cases (comma-separated names, e.g. 't5_base fast')")
  parser.add_argument('--case_timeout', type=float, help='with --table: seconds a case may take before it is killed')
  parser.add_argument('--json', help='also write the figures here')
  parser.add_argument('--profile', action='store_true', help='also trace 3 of our steps and print the top ops')
  parser.add_argument('--xla_flags', default='', help="more XLA flags for our side, added to $XLA_FLAGS before jax "
                      "starts (e.g. '--xla_gpu_enable_triton_gemm=false')")
  parser.add_argument('--hf_worker', type=Path, help=argparse.SUPPRESS)  # the child process of the HF side
  args = parser.parse_args()
  if args.steps < 1 or args.warmup < 1:
    parser.error('--steps and --warmup must be >= 1 (the first step pays one-off costs)')
  if len(args.mesh.split(',')) != 3:
    parser.error(f'--mesh {args.mesh!r}: expected three sizes, data,fsdp,tensor')
  args.table = 'gpu' if args.all_gpu else args.table
  args.hf_modes = [] if args.no_hf or args.hf == 'none' else args.hf.split(',')
  if bad := sorted(set(args.hf_modes) - set(HF_MODES)):
    parser.error(f'--hf {args.hf!r}: unknown {bad}; give some of {",".join(HF_MODES)}, or none')
  if args.xla_flags and not args.table:  # read by jax's backend when it starts: nothing has imported jax yet
    os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} {args.xla_flags}'.strip()
  if args.hf_worker:
    hf_worker(args.hf_worker)
  elif args.table:
    sys.exit(run_table(args))
  else:
    result = benchmark(args)
    print_result(result)
    if args.json:
      Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == '__main__':
  main()
