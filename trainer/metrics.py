"""Metrics of a training run: TensorBoard event files, a JSON-lines log, a console progress line, and the
throughput arithmetic behind it (tokens/s, MFU, ETA).

  writer = MetricWriter(workdir, resume_step=start)         # process 0 writes, the others only convert
  meter = Throughput(config.train.num_steps, tokens_per_step=B * T,
                     flops_per_token=flops_per_token(cfg, T), peak_flops=total_peak_flops())
  for step in range(start + 1, num_steps + 1):
    state, m = train_step(state, batch, rng)
    if step == start + 1 or step % log_every == 0:
      values = writer.write(step, Split.TRAIN, m)           # waits for the step: one device_get of the scalars
      meter.tick(step)                                      # the first tick, after compiling, is the baseline
      if step % log_every == 0:
        writer.print_progress(step, num_steps, values, meter.rates())
    if step % eval_every == 0:
      with meter.paused():                                  # evaluation time is not training throughput
        writer.write(step, Split.EVAL, evaluate(state))

Files, all under `workdir`, written by process 0 only:
  tb/train/, tb/eval/   TensorBoard event files (tensorboardX's writer and protos; no TensorFlow). One event
                        per `write` holding every scalar; tags are the metric names, so train and eval curves
                        of a metric overlay in TensorBoard as two runs.
  metrics.jsonl         one JSON object per `write`: {"step": 120, "split": "train", "wall_time": <unix s>,
                        "loss": 5.21, ...}; split "startup" (one row per launch, not in TensorBoard): the
                        seconds of each start-up phase before the first step (core/timing.py). Strict JSON:
                        NaN and +-inf are written as the strings "NaN",
                        "Infinity", "-Infinity" (which float() parses back; `read_metrics` does it), so no
                        information is lost and every JSON parser reads the file.

Resume: `MetricWriter(workdir, resume_step=s)` keeps the JSON lines of steps <= s and drops those a crashed
run wrote after its last checkpoint (and any torn last line), then appends; each new event file starts with
TensorBoard's purge marker (a SessionLog START at step s + 1), so TensorBoard hides the crashed run's
events of steps > s. A run that starts from scratch passes s = 0: a run killed before its first checkpoint
then leaves no steps behind that the new one writes again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TextIO

import jax
import numpy as np

from model.config import SENTENCE_ORDER_CLASSES, Family, Head, Inputs, ModelConfig, Pooling

JSONL_NAME = 'metrics.jsonl'
TB_DIR = 'tb'
_RESERVED = ('step', 'split', 'wall_time')  # the JSON line's own fields; no metric may take these names
_NON_FINITE = {'NaN': math.nan, 'Infinity': math.inf, '-Infinity': -math.inf}


class Split(enum.Enum):
  TRAIN = 'train'
  EVAL = 'eval'
  # One row per launch, at the step it starts from: seconds per start-up phase (core/timing.py). Not a curve:
  # kept out of TensorBoard, and readers of metrics.jsonl select train or eval rows.
  STARTUP = 'startup'


# Model FLOPs and peak FLOP/s.


def flops_per_token(cfg: ModelConfig, seq_len: int, decoder_seq_len: int | None = None) -> float:
  """Training FLOPs (forward + backward) per token, for MFU: 6 x the multiply-adds of one example's forward
  pass (`forward_macs`), divided by its tokens (`tokens_per_example`)."""
  if cfg.family is not Family.ENCODER_DECODER and decoder_seq_len is not None:
    raise ValueError(f'decoder_seq_len only applies to family=encoder_decoder, not {cfg.family.value}')
  return 6 * forward_macs(cfg, seq_len, decoder_seq_len) / tokens_per_example(cfg, seq_len, decoder_seq_len)


def forward_macs(cfg: ModelConfig, seq_len: int, decoder_seq_len: int | None = None) -> int:
  """Multiply-adds of the matmuls of one example's forward pass, from the architecture.

  Each weight matrix counts where it runs: per token of its stack (and of the span head), per example for a
  classifier's pooler and head, and once per application of a layer (`num_layers` applications, also when layers share
  parameters, as ALBERT's do). Attention adds 2·T·H·Q per query and layer (scores and values over all T
  keys, also under a causal mask, as PaLM counts them); cross-attention's keys and values are projected once
  per encoder token. A classifier's last layer computes [CLS] alone (the model's head_only): queries, output and
  feed-forward for one position, keys and values for all. Not counted: embedding and bias-table lookups,
  norms, activations, biases, softmax (PaLM appendix B; x2 FLOPs per multiply-add, x3 for the backward
  pass in `flops_per_token`). Tied or untied, an LM head is one V x E matmul per predicted token, E the
  embedding width (d_model unless factorised: ALBERT's E-wide embeddings add an E x d projection per token).

  Images (model.inputs=patches): seq_len is the sequence the encoder runs, [CLS] + the patches (197 for 224x224
  images in 16x16 patches), and each patch adds its projection, C·p·p x E. With pooling=mean the classifier
  reads every position, so the last layer runs in full.
  """
  d, e, hq, vocab = cfg.d_model, cfg.embed_width, cfg.num_heads * cfg.kv_dim, cfg.vocab_size
  ffn = (3 if cfg.gated_ffn else 2) * d * cfg.d_ff  # wi (wi_0, wi_1 when gated) and wo
  qo, kv = 2 * d * hq, 2 * d * hq  # query and output projections; key and value projections

  def stack(layers: int, t: int, cross_t: int = 0) -> int:
    """A stack of `layers` self-attention layers over t tokens (+ cross-attention to cross_t tokens)."""
    per_layer = t * (qo + kv + ffn) + 2 * hq * t * t
    if cross_t:
      per_layer += t * qo + cross_t * kv + 2 * hq * t * cross_t
    return layers * per_layer

  t = seq_len
  match cfg.family:
    case Family.ENCODER_DECODER:
      t_dec = seq_len if decoder_seq_len is None else decoder_seq_len
      macs = stack(cfg.num_layers, t) + stack(cfg.decoder_layers, t_dec, cross_t=t)
      t = t_dec  # the head runs on the decoder's tokens
    case Family.ENCODER if cfg.head is Head.CLASSIFIER and cfg.pooling is Pooling.CLS:  # [CLS] only (head_only)
      last = t * kv + (qo + ffn) + 2 * hq * t
      macs = stack(cfg.num_layers - 1, t) + last
    case _:
      macs = stack(cfg.num_layers, t)
  if cfg.embedding_size is not None:
    macs += seq_len * e * d  # the encoder's embedding projection
  if cfg.inputs is Inputs.PATCHES:
    if seq_len < 2:
      raise ValueError(f'seq_len={seq_len}: an image sequence is [CLS] + at least one patch')
    macs += (seq_len - 1) * cfg.num_channels * cfg.patch_size ** 2 * e  # the patch projection
  if cfg.pooler:
    macs += d * d
  match cfg.head:
    case Head.LM | Head.PRETRAINING:
      macs += t * (vocab * e + (d * e if cfg.family is Family.ENCODER else 0))  # + BERT's MLM transform, d -> E
      if cfg.head is Head.PRETRAINING:
        macs += d * SENTENCE_ORDER_CLASSES  # the sentence-order classifier, once per example
    case Head.CLASSIFIER:
      macs += d * cfg.num_labels
    case Head.SPAN:
      macs += t * d * 2  # start and end scores of every token
    case Head.NONE:
      pass
  return macs


def tokens_per_example(cfg: ModelConfig, seq_len: int, decoder_seq_len: int | None = None) -> int:
  """The tokens `flops_per_token` divides by: seq_len, plus the decoder's length for an encoder-decoder. Images: the
  sequence the encoder runs, [CLS] + the patches (data.seq_len), so an image run's tokens/s are its patches/s plus
  one [CLS] per image."""
  if cfg.family is not Family.ENCODER_DECODER:
    return seq_len
  return seq_len + (seq_len if decoder_seq_len is None else decoder_seq_len)


# Dense bf16 peak FLOP/s per chip (vendor datasheets, without 2:4 sparsity), matched as a case-insensitive
# substring of `jax.Device.device_kind`, first match first (so 'H100 PCIe' precedes 'H100', 'v5 lite'
# precedes 'v5'). bf16 only: a float32 run on GPU computes at the TF32 or FP32 rate (H100: ~495 / 67
# TFLOP/s), so its MFU against these peaks reads low; pass your own peak_flops to Throughput for that.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ('H100 PCIe', 756e12),
    ('H100 NVL', 835e12),
    ('H100', 989e12),  # SXM: 'NVIDIA H100 80GB HBM3'
    ('H200', 989e12),  # the H100's compute with more memory: 'NVIDIA H200', GH200
    ('A100', 312e12),
    ('TPU v4', 275e12),
    ('TPU v5 lite', 197e12), ('TPU v5e', 197e12),  # jax names the v5e 'TPU v5 lite'
    ('TPU v5', 459e12),  # v5p
    ('TPU v6 lite', 918e12), ('TPU v6e', 918e12),  # v6e (Trillium)
)


def peak_flops_per_device(device_kind: str) -> float | None:
  """Dense bf16 peak FLOP/s of one device of this kind; None for a CPU or an unknown kind (no MFU then)."""
  kind = device_kind.lower()
  return next((peak for pattern, peak in PEAK_BF16_FLOPS if pattern.lower() in kind), None)


def total_peak_flops(devices: Sequence[jax.Device] | None = None) -> float | None:
  """Peak FLOP/s of all the devices (default: every device of the run, all processes); None if any is unknown."""
  devices = jax.devices() if devices is None else devices
  peaks = [peak_flops_per_device(d.device_kind) for d in devices]
  return None if not peaks or None in peaks else float(sum(peaks))


# Throughput, ETA and the progress line.


@dataclasses.dataclass(frozen=True)
class Rates:
  steps_per_sec: float  # training steps per second of training time (paused time excluded)
  tokens_per_sec: float  # global: all processes' tokens
  eta_sec: float  # to total_steps, at the average wall-clock pace (pauses included: they recur)
  mfu: float | None  # model FLOPs utilisation in [0, 1]; None when the FLOPs or the peak are unknown

  def as_metrics(self) -> dict[str, float]:
    """The rates as scalars for `MetricWriter.write` (MFU only when known)."""
    out = {'steps_per_sec': self.steps_per_sec, 'tokens_per_sec': self.tokens_per_sec}
    return out if self.mfu is None else out | {'mfu': self.mfu}


@dataclasses.dataclass(frozen=True)
class _Mark:
  step: int
  wall: float  # time_fn() when the step was ticked
  paused: float  # total paused seconds by then


class Throughput:
  """Tokens/s, MFU and ETA from the host clock.

  `tick(step)` once step `step` is done: JAX dispatches asynchronously, so tick where the host has waited
  for the step (after `MetricWriter.write` fetched its metrics), or the clock reads the dispatch speed, not
  the device's. The first tick is the baseline: tick the first step of the run (after a resume too, which
  compiles again), and compilation never counts; steps count from there, so a resumed run needs no start
  step. `rates()` gives tokens/s over the steps since the previous `rates()` (recent speed, not a run
  average) and the ETA from the average pace since the baseline. Time spent in `with meter.paused():`
  (evaluation, checkpoint saves) is left out of tokens/s but not out of the ETA.
  """

  def __init__(self, total_steps: int, tokens_per_step: int, *, flops_per_token: float | None = None,
               peak_flops: float | None = None, time_fn: Callable[[], float] = time.perf_counter) -> None:
    """`peak_flops` is the total over all devices (`total_peak_flops()`); `time_fn` is injectable for tests."""
    self.total_steps = total_steps
    self.tokens_per_step = tokens_per_step
    self.flops_per_token = flops_per_token
    self.peak_flops = peak_flops
    self._time = time_fn
    self._paused = 0.0
    self._base: _Mark | None = None
    self._window: _Mark | None = None  # where the current rates() window starts
    self._last: _Mark | None = None

  def tick(self, step: int) -> None:
    """Step `step` has finished."""
    mark = _Mark(step, self._time(), self._paused)
    if self._base is None:
      self._base = self._window = mark
    self._last = mark

  @contextlib.contextmanager
  def paused(self) -> Iterator[None]:
    """Time inside is not training time."""
    start = self._time()
    try:
      yield
    finally:
      self._paused += self._time() - start

  def rates(self) -> Rates | None:
    """None until a step after the baseline has been ticked."""
    base, window, last = self._base, self._window, self._last
    if base is None or last is None or last.step <= base.step:
      return None
    if last.step <= window.step:  # no step since the previous report: fall back to the whole run
      window = base
    busy = (last.wall - window.wall) - (last.paused - window.paused)
    steps_per_sec = (last.step - window.step) / busy if busy > 0 else math.inf
    tokens_per_sec = steps_per_sec * self.tokens_per_step
    sec_per_step = (last.wall - base.wall) / (last.step - base.step)
    mfu = None
    if self.flops_per_token is not None and self.peak_flops:
      mfu = tokens_per_sec * self.flops_per_token / self.peak_flops
    self._window = last
    return Rates(steps_per_sec, tokens_per_sec, max(self.total_steps - last.step, 0) * sec_per_step, mfu)


def format_duration(seconds: float) -> str:
  """'45s', '3m12s', '2h05m', '3d04h': the two largest units, for an ETA."""
  s = int(round(seconds))
  if s < 60:
    return f'{s}s'
  if s < 3600:
    return f'{s // 60}m{s % 60:02d}s'
  if s < 86400:
    return f'{s // 3600}h{s % 3600 // 60:02d}m'
  return f'{s // 86400}d{s % 86400 // 3600:02d}h'


# (metric name, label, format) of the progress line, in order; a metric that is absent is left out.
_PROGRESS_FIELDS = (('loss', 'loss', '{:.3f}'), ('learning_rate', 'lr', '{:.1e}'), ('grad_norm', 'gnorm', '{:.3g}'))


def format_progress(step: int, total_steps: int, values: Mapping[str, float], rates: Rates | None = None) -> str:
  """`step 120/1000  loss 5.213  lr 3.0e-04  gnorm 1.02  12,345 tok/s  MFU 41.2%  ETA 3m12s`."""
  parts = [f'step {step}/{total_steps}']
  parts += [f'{label} {fmt.format(float(values[name]))}' for name, label, fmt in _PROGRESS_FIELDS if name in values]
  if rates is not None:
    parts.append(f'{rates.tokens_per_sec:,.0f} tok/s')
    if rates.mfu is not None:
      parts.append(f'MFU {100 * rates.mfu:.1f}%')
    parts.append(f'ETA {format_duration(rates.eta_sec)}')
  return '  '.join(parts)


# The writer.


def _to_json(value: float) -> float | str:
  """A float, or for NaN / +-inf the string that float() reads back (bare NaN is not JSON)."""
  if math.isfinite(value):
    return value
  return 'NaN' if math.isnan(value) else ('Infinity' if value > 0 else '-Infinity')


def read_metrics(path: str | os.PathLike, split: Split | None = None) -> list[dict[str, Any]]:
  """The lines of a metrics.jsonl (optionally of one split), non-finite strings back as floats."""
  rows = []
  with open(path) as f:
    for line in f:
      row = json.loads(line)
      if split is None or row['split'] == split.value:
        rows.append({k: (_NON_FINITE.get(v, v) if isinstance(v, str) and k not in _RESERVED else v)
                     for k, v in row.items()})
  return rows


def _repair_jsonl(path: str, keep_until: int | None) -> None:
  """Drops a torn last line (a crash mid-write) and, on resume, the lines of steps > keep_until.

  Rewritten through a temporary file and an atomic rename, so a crash here leaves the old file whole."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  kept = []
  for line in lines:
    try:
      row = json.loads(line) if line.endswith('\n') else None
    except json.JSONDecodeError:
      row = None
    if isinstance(row, dict) and isinstance(row.get('step'), int) and (keep_until is None or row['step'] <= keep_until):
      kept.append(line)
  if len(kept) != len(lines):
    logging.info('%s: dropped %d line(s), torn or of steps after the restored step %s', path,
                 len(lines) - len(kept), keep_until)
    with open(path + '.tmp', 'w') as f:
      f.writelines(kept)
    os.replace(path + '.tmp', path)


class MetricWriter:
  """Scalars to TensorBoard and metrics.jsonl, and the console progress line; see the module docstring.

  Only process 0 (`process_index`, default `jax.process_index()`) touches files or prints; every process
  converts the values, so `write` returns the same floats everywhere (a decision taken on them, such as
  stopping on a NaN loss, is then taken by all processes alike). A context manager; `close` flushes.
  """

  def __init__(self, workdir: str | os.PathLike, *, resume_step: int | None = None, process_index: int | None = None,
               flush_every_secs: float = 10.0, echo: Callable[[str], None] | None = None) -> None:
    """`resume_step`: the step the run starts after, 0 from scratch (lines of later steps are dropped; None:
    keep every line and append). Event files are flushed (with fsync) at most every `flush_every_secs` and on `close`;
    the JSON lines after every `write`. `echo` prints the progress line (default: print, flushed)."""
    self.workdir = os.fspath(workdir)
    self.resume_step = resume_step
    self.is_writer = (jax.process_index() if process_index is None else process_index) == 0
    self._flush_every = flush_every_secs
    self._echo = echo or (lambda line: print(line, flush=True))
    self._events: dict[Split, Any] = {}  # Split -> tensorboardX EventsWriter, opened at the split's first write
    self._last_flush = time.monotonic()
    self._jsonl: TextIO | None = None
    self._closed = False
    if self.is_writer:
      os.makedirs(self.workdir, exist_ok=True)
      path = os.path.join(self.workdir, JSONL_NAME)
      _repair_jsonl(path, resume_step)
      self._jsonl = open(path, 'a')
      # Purge the crashed run's later events of every split now rather than at the split's next write: an
      # eval step that the resumed run does not reach again would otherwise stay visible in TensorBoard.
      for split in (Split.TRAIN, Split.EVAL):
        if resume_step is not None and os.path.isdir(os.path.join(self.workdir, TB_DIR, split.value)):
          self._events_for(split)

  def write(self, step: int, split: Split, metrics: Mapping[str, Any]) -> dict[str, float]:
    """Writes scalar metrics (floats, numpy or jax scalars) of `step`; returns them as floats.

    One `jax.device_get` for the whole mapping: a single device-to-host transfer, and the one place the
    host waits for the step. Call it at logging intervals, not every step."""
    if self._closed:
      raise ValueError('MetricWriter.write after close()')
    split = Split(split)
    values = {}
    for name, value in jax.device_get(dict(metrics)).items():
      array = np.asarray(value)
      if array.size != 1:
        raise ValueError(f'metric {name!r} is not a scalar: shape {array.shape}')
      if name in _RESERVED:
        raise ValueError(f'metric name {name!r} is reserved for the JSON line\'s own field; rename it')
      values[name] = float(array.reshape(()))
    if self.is_writer:
      wall_time = time.time()
      row = {'step': int(step), 'split': split.value, 'wall_time': wall_time}
      row |= {name: _to_json(v) for name, v in values.items()}
      self._jsonl.write(json.dumps(row, allow_nan=False) + '\n')
      self._jsonl.flush()  # to the OS: a process crash loses nothing; no fsync (slow on network disks)
      if split is not Split.STARTUP:
        self._write_event(split, int(step), wall_time, values)
      if time.monotonic() - self._last_flush >= self._flush_every:
        self.flush()
    return values

  def print_progress(self, step: int, total_steps: int, values: Mapping[str, float],
                     rates: Rates | None = None) -> str:
    """Prints `format_progress(...)` on process 0; returns the line on every process."""
    line = format_progress(step, total_steps, values, rates)
    if self.is_writer:
      self._echo(line)
    return line

  def flush(self) -> None:
    if self.is_writer and not self._closed:
      self._jsonl.flush()
      for events in self._events.values():
        events.flush()
      self._last_flush = time.monotonic()

  def close(self) -> None:
    """Flushes and closes every file; a second call does nothing."""
    if self._closed:
      return
    self.flush()
    for events in self._events.values():
      events.close()
    if self._jsonl is not None:
      self._jsonl.close()
    self._closed = True

  def __enter__(self) -> MetricWriter:
    return self

  def __exit__(self, *exc_info: object) -> None:
    self.close()

  def _events_for(self, split: Split) -> Any:
    """The split's tensorboardX EventsWriter, opened on first use: a new event file in tb/<split>."""
    if split not in self._events:
      # Imported here, on process 0 only: tensorboardX imports torch when torch is installed (seconds).
      from tensorboardX.event_file_writer import EventsWriter
      from tensorboardX.proto.event_pb2 import Event, SessionLog

      # tensorboardX's synchronous writer (its SummaryWriter adds a queue thread that `flush` does not drain).
      # File names hold the second they were opened in; the nanosecond suffix keeps two opens within one
      # second apart, in order (TensorBoard reads the files of a run in name order, which purging needs).
      directory = os.path.join(self.workdir, TB_DIR, split.value)
      os.makedirs(directory, exist_ok=True)
      events = EventsWriter(os.path.join(directory, 'events'), filename_suffix=f'.{time.time_ns()}')
      if self.resume_step is not None:  # TensorBoard then hides older events of steps >= resume_step + 1
        events.write_event(Event(wall_time=time.time(), step=self.resume_step + 1,
                                 session_log=SessionLog(status=SessionLog.START)))
      self._events[split] = events
    return self._events[split]

  def _write_event(self, split: Split, step: int, wall_time: float, values: Mapping[str, float]) -> None:
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.summary_pb2 import Summary

    summary = Summary(value=[Summary.Value(tag=name, simple_value=v) for name, v in values.items()])
    self._events_for(split).write_event(Event(wall_time=wall_time, step=step, summary=summary))
