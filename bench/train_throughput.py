"""Train-step throughput of our step next to HF transformers (PyTorch) on the same model, weights and
batch, in one run.

  python bench/train_throughput.py --config gpt_tiny --steps 5          # bert_tiny, t5_tiny: the CPU set
  python bench/train_throughput.py --config gpt_tiny --dropout 0        # first-step losses must agree
  python bench/train_throughput.py --all_gpu                            # the issue's GPU set, bf16
        (a failing case does not stop the others; --case_timeout S, --gpu_cases t5_base,...; bench/gpu_session.sh)
  more: --batch_size, --seq_len, --decoder_seq_len (T5), --dtype float32|bfloat16, --mesh data,fsdp,tensor,
        --warmup, --no_hf, --json PATH, --model FIELD=VALUE (any ModelConfig field: attention_impl=cudnn, ...)
  taskset -c 1 python bench/train_throughput.py ...   # a shared CPU: pin both sides to the same free core(s);
                                                      # XLA's pool and torch's threads follow the affinity

Ours: trainer.step.compile_train_step (AOT, shardings on a mesh, 1 device by default, donated state) with
trainer.optim's AdamW and global-norm clipping. HF: the class `hf.save_pretrained` writes for the config
(GPT2LMHeadModel, BertForMaskedLM, T5ForConditionalGeneration) loaded from our initial parameters, train
mode, the same dropout, torch.optim.AdamW with the same lr, betas, eps, decay (and decay mask) and
clipping; on CUDA if torch sees it (bf16 autocast, fused AdamW), else on the CPU with every core. Both
train on one synthetic batch of random ids shaped like the objective's (causal LM; MLM, 15% targets; T5
inputs -> decoder inputs, labels). Per side: compile time (ours; HF is eager), median step time after
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
# The GPU set: (config, batch, seq_len, decoder_seq_len), all bf16.
GPU_CASES = (('gpt2_small', 16, 1024, None), ('bert_base', 32, 512, None), ('t5_base', 32, 512, 114))
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
  hf_model, info = getattr(transformers, arch).from_pretrained(directory, dtype=torch.float32, output_loading_info=True)
  if bad := {k: v for k, v in info.items() if k != 'error_msgs' and v}:  # the mapping must be exact
    raise RuntimeError(f'{arch} did not load our weights exactly: {bad}')
  hf_model.to(device).train()
  # trainer.optim decays kernels and embedding tables only (not biases, norms, T5's relative bias table).
  params = list(hf_model.named_parameters())
  decayed = lambda name, p: p.ndim >= 2 and 'relative_attention_bias' not in name
  groups = [{'params': [p for n, p in params if decayed(n, p)], 'weight_decay': job['weight_decay']},
            {'params': [p for n, p in params if not decayed(n, p)], 'weight_decay': 0.0}]
  # fused=True on CUDA is what HF's Trainer uses there (adamw_torch_fused); the CPU keeps torch's default.
  optimizer = torch.optim.AdamW(groups, lr=job['learning_rate'], betas=(job['b1'], job['b2']), eps=job['eps'],
                                fused=cuda or None)
  arrays = dict(np.load(directory / 'batch.npz'))
  labels = torch.from_numpy(arrays.pop('labels')).long().to(device)
  inputs = {k: torch.from_numpy(v).long().to(device) for k, v in arrays.items()}
  sync = torch.cuda.synchronize if cuda else (lambda: None)

  times, first_loss = [], None
  for _ in range(job['warmup'] + job['steps']):
    sync()
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=job['dtype'] == 'bfloat16'):
      logits = hf_model(**inputs).logits
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
  result = {'step_times': times, 'first_loss': first_loss, 'peak_bytes': peak[0], 'peak_kind': peak[1],
            'device': torch.cuda.get_device_name() if cuda else 'cpu', 'platform': device,
            'params': sum(p.numel() for p in hf_model.parameters()), 'threads': torch.get_num_threads(),
            'attention': getattr(hf_model.config, '_attn_implementation', '?'),  # HF's pick (sdpa, eager, ...)
            'versions': f'torch {torch.__version__}, transformers {transformers.__version__}'}
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
  return Case(cfg, config.data.objective, args.batch_size or config.train.batch_size, seq_len, decoder_len,
              StepConfig.of(dataclasses.replace(DataConfig.from_dict(config.data), seq_len=seq_len), train))


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
  if not args.no_hf:
    with tempfile.TemporaryDirectory(prefix='train_throughput_') as tmp:
      hf.save_pretrained(case.cfg, state.params, tmp)  # before our first step, which donates the state
      np.savez(Path(tmp) / 'batch.npz', **hf_batch(batch_np))
      job = OPTIM | {'threads': cpu_count(), 'dtype': case.cfg.dtype, 'warmup': args.warmup, 'steps': args.steps}
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
  theirs = None
  if hf_result is not None:
    hf_peak = peak_flops_per_device(hf_result['device']) if hf_result['platform'] == 'cuda' else None
    theirs = summarise(hf_result.pop('step_times'), *per_token, hf_peak, compile_s=None, **hf_result)
  return {'config': args.config, 'family': case.cfg.family.value, 'objective': case.objective,
          'batch_size': case.batch_size, 'seq_len': case.seq_len, 'decoder_seq_len': case.decoder_len,
          'tokens_per_step': tokens, 'dtype': case.cfg.dtype, 'dropout': case.cfg.dropout_rate, 'logits_chunk': case.step.logits_chunk,
          'params': model.count_params(case.cfg), 'mesh': mesh_cfg.shape(len(devices)), 'steps': args.steps,
          'ours': ours, 'hf': theirs}


def print_result(r: dict[str, Any]) -> None:
  length = f'{r["seq_len"]} -> {r["decoder_seq_len"]}' if r['decoder_seq_len'] else f'{r["seq_len"]}'
  ours, theirs = r['ours'], r['hf']
  print(f'\n{r["config"]} ({r["family"]}, {r["objective"]}): batch {r["batch_size"]} x {length} tokens, {r["dtype"]}, '
        f'dropout {r["dropout"]}, {r["params"]:,} parameters'
        + (f' (HF counts {theirs["params"]:,})' if theirs else ''))
  print(f'  ours: {ours["versions"]} on {ours["device"]}, mesh (data, fsdp, tensor) = {r["mesh"]}')
  if theirs:
    print(f'  HF:   {theirs["versions"]} on {theirs["device"]}, threads {theirs["threads"]}, '
          f'attention {theirs["attention"]}')
  print(f'  {"":<11}{"compile s":>10}{"1st step s":>11}{"step ms":>9}{"(min)":>9}{"tokens/s":>10}{"MFU":>7}  '
        f'{"peak memory":<36}{"1st loss":>9}')
  for label, s in (('ours (jax)', ours), ('HF (torch)', theirs)):
    if s is None:
      continue  # --no_hf
    compile_s = f'{s["compile_s"]:.2f}' if s['compile_s'] is not None else '-'
    mfu = f'{100 * s["mfu"]:.1f}%' if s['mfu'] is not None else '-'
    memory = f'{s["peak_bytes"] / 2**20:,.0f} MiB ({s["peak_kind"]})'
    fastest = f'({1e3 * s["min_step_s"]:.1f})'
    print(f'  {label:<11}{compile_s:>10}{s["first_step_s"]:>11.2f}{1e3 * s["step_s"]:>9.1f}{fastest:>9}'
          f'{s["tokens_per_s"]:>10,.0f}{mfu:>7}  {memory:<36}{s["first_loss"]:>9.4f}')
  print(f'  step ms: median (and min) of {r["steps"]} steps after warm-up, each synchronised; tokens/s from the median')
  if theirs:
    gap = abs(ours['first_loss'] - theirs['first_loss'])
    why = '' if r['dropout'] == 0 else ' (dropout on: the masks differ, so a gap is expected; --dropout 0 checks)'
    print(f'  ours / HF tokens/s: {ours["tokens_per_s"] / theirs["tokens_per_s"]:.2f}x; '
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


def run_all_gpu(args: argparse.Namespace) -> int:
  """The issue's GPU set, each config in its own process (so no library's memory pool outlives its case).
  A case that fails or outlasts --case_timeout is reported and the others still run; --json is rewritten
  after every case, so a run stopped from outside keeps the finished ones. Returns 1 if any case failed."""
  cases = [c for c in GPU_CASES if not args.gpu_cases or c[0] in args.gpu_cases.split(',')]
  if unknown := set(args.gpu_cases.split(',') if args.gpu_cases else ()) - {c[0] for c in GPU_CASES}:
    raise SystemExit(f'--gpu_cases: unknown {sorted(unknown)}; the set is {[c[0] for c in GPU_CASES]}')
  results = []
  for name, batch, seq_len, decoder_len in cases:
    with tempfile.NamedTemporaryFile(suffix='.json') as out:
      command = [sys.executable, __file__, '--config', name, '--batch_size', str(batch), '--seq_len', str(seq_len),
                 '--dtype', 'bfloat16', '--steps', str(args.steps), '--warmup', str(args.warmup), '--mesh', args.mesh,
                 '--json', out.name] + [f'--model={kv}' for kv in args.model] + [f'--train={kv}' for kv in args.train]
      command += ['--decoder_seq_len', str(decoder_len)] if decoder_len else []
      command += ['--dropout', str(args.dropout)] if args.dropout is not None else []
      command += ['--no_hf'] if args.no_hf else []
      start = time.perf_counter()
      error = run_case(command, args.case_timeout)
      if error is None:
        results.append(json.loads(Path(out.name).read_text()) | {'wall_s': time.perf_counter() - start})
      else:
        print(f'\n{name}: FAILED ({error}); going on with the other cases', flush=True)
        results.append({'config': name, 'error': error, 'wall_s': time.perf_counter() - start})
    if args.json:
      Path(args.json).write_text(json.dumps(results, indent=1))
  print(f'\n{"config":<12}{"tokens/step":>12}{"ours tok/s":>12}{"MFU":>7}{"HF tok/s":>12}{"MFU":>7}{"ours/HF":>9}'
        f'{"wall s":>8}')
  for r in results:
    if 'error' in r:
      print(f'{r["config"]:<12}  FAILED: {r["error"]}')
      continue
    ours, theirs = r['ours'], r['hf'] or {}
    mfu = lambda s: f'{100 * s["mfu"]:.1f}%' if s.get('mfu') is not None else '-'
    hf_tps = f'{theirs["tokens_per_s"]:,.0f}' if theirs else '-'
    ratio = f'{ours["tokens_per_s"] / theirs["tokens_per_s"]:.2f}x' if theirs else '-'
    print(f'{r["config"]:<12}{r["tokens_per_step"]:>12,}{ours["tokens_per_s"]:>12,.0f}{mfu(ours):>7}'
          f'{hf_tps:>12}{mfu(theirs):>7}{ratio:>9}{r["wall_s"]:>8.0f}')
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
  parser.add_argument('--no_hf', action='store_true', help='time our step only')
  parser.add_argument('--all_gpu', action='store_true', help='GPT-2 16x1024, BERT-base 32x512, T5-base 32x512->114')
  parser.add_argument('--gpu_cases', help='with --all_gpu: only these configs (comma-separated, e.g. t5_base)')
  parser.add_argument('--case_timeout', type=float, help='with --all_gpu: seconds a case may take before it is killed')
  parser.add_argument('--json', help='also write the figures here')
  parser.add_argument('--hf_worker', type=Path, help=argparse.SUPPRESS)  # the child process of the HF side
  args = parser.parse_args()
  if args.steps < 1 or args.warmup < 1:
    parser.error('--steps and --warmup must be >= 1 (the first step pays one-off costs)')
  if len(args.mesh.split(',')) != 3:
    parser.error(f'--mesh {args.mesh!r}: expected three sizes, data,fsdp,tensor')
  if args.hf_worker:
    hf_worker(args.hf_worker)
  elif args.all_gpu:
    sys.exit(run_all_gpu(args))
  else:
    result = benchmark(args)
    print_result(result)
    if args.json:
      Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == '__main__':
  main()
