"""trainer/metrics.py: event files read back without TensorFlow, JSON lines and resume, process 0 only, the
progress line, FLOPs per token in closed form, throughput on a fake clock."""

from __future__ import annotations

import glob
import json
import math
import os
import struct
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.crc32c import crc32c
from tensorboardX.proto.event_pb2 import Event, SessionLog

from tests.tiny import TINY
from trainer import metrics
from trainer.metrics import MetricWriter, Rates, Split, Throughput


def _masked_crc(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_events(directory: str) -> list[Event]:
  """Every event of the event files of `directory`, in file-name order: TFRecord frames (u64 length, masked
  crc32c of it, data, masked crc32c of the data), checksums verified, parsed with tensorboardX's protos."""
  out = []
  for path in sorted(glob.glob(os.path.join(directory, 'events.out.tfevents.*'))):
    with open(path, 'rb') as f:
      data = f.read()
    pos = 0
    while pos < len(data):
      header = data[pos:pos + 8]
      (length,), (header_crc,) = struct.unpack('<Q', header), struct.unpack('<I', data[pos + 8:pos + 12])
      record = data[pos + 12:pos + 12 + length]
      (record_crc,) = struct.unpack('<I', data[pos + 12 + length:pos + 16 + length])
      assert header_crc == _masked_crc(header) and record_crc == _masked_crc(record)
      out.append(Event.FromString(record))
      pos += 16 + length
  return out


def scalars(directory: str) -> dict[tuple[int, str], float]:
  return {(e.step, v.tag): v.simple_value for e in read_events(directory) if e.HasField('summary')
          for v in e.summary.value}


def test_event_files_are_written_without_tensorflow_and_read_back(tmp_path):
  with MetricWriter(tmp_path, process_index=0) as writer:
    out = writer.write(1, Split.TRAIN, {'loss': jnp.float32(2.5), 'grad_norm': jnp.asarray([0.75])})
    writer.write(2, Split.TRAIN, {'loss': np.float32(2.25), 'grad_norm': 0.5})
    writer.write(2, Split.EVAL, {'loss': 3.0, 'accuracy': jnp.asarray(0.125)})
  assert out == {'loss': 2.5, 'grad_norm': 0.75}
  assert scalars(tmp_path / 'tb' / 'train') == {(1, 'loss'): 2.5, (1, 'grad_norm'): 0.75,
                                                (2, 'loss'): 2.25, (2, 'grad_norm'): 0.5}
  assert scalars(tmp_path / 'tb' / 'eval') == {(2, 'loss'): 3.0, (2, 'accuracy'): 0.125}
  assert read_events(tmp_path / 'tb' / 'train')[0].file_version == 'brain.Event:2'
  assert 'tensorflow' not in sys.modules


def test_jsonl_is_strict_json_with_non_finite_values_as_strings(tmp_path):
  with MetricWriter(tmp_path, process_index=0) as writer:
    writer.write(3, Split.TRAIN, {'loss': float('nan'), 'grad_norm': jnp.inf, 'z': -np.inf, 'lr': 1e-3})
  line = (tmp_path / 'metrics.jsonl').read_text().splitlines()[0]

  def reject(constant):
    raise ValueError(f'not strict JSON: {constant}')

  row = json.loads(line, parse_constant=reject)
  assert (row['step'], row['split'], row['loss'], row['grad_norm'], row['z'], row['lr']) == (
      3, 'train', 'NaN', 'Infinity', '-Infinity', 1e-3)
  assert isinstance(row['wall_time'], float)
  (back,) = metrics.read_metrics(tmp_path / 'metrics.jsonl')
  assert math.isnan(back['loss']) and back['grad_norm'] == math.inf and back['z'] == -math.inf


def test_resume_drops_lines_after_the_restored_step_and_a_torn_line_then_appends(tmp_path):
  with MetricWriter(tmp_path, process_index=0) as writer:
    for step in range(1, 11):
      writer.write(step, Split.TRAIN, {'loss': float(step)})
      if step % 5 == 0:
        writer.write(step, Split.EVAL, {'loss': step + 0.5})
  with open(tmp_path / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 11, "split": "tr')  # the crashed run died mid-line

  with MetricWriter(tmp_path, resume_step=6, process_index=0) as writer:
    writer.write(7, Split.TRAIN, {'loss': 70.0})
  rows = metrics.read_metrics(tmp_path / 'metrics.jsonl')
  assert [(r['step'], r['split'], r['loss']) for r in rows] == (
      [(s, 'train', float(s)) for s in range(1, 6)] + [(5, 'eval', 5.5), (6, 'train', 6.0), (7, 'train', 70.0)])
  assert [r['step'] for r in metrics.read_metrics(tmp_path / 'metrics.jsonl', Split.EVAL)] == [5]

  # TensorBoard: the resumed files start with the purge marker at step 7, eval's too (no eval write since).
  for split in ('train', 'eval'):
    events = read_events(tmp_path / 'tb' / split)
    marker = next(e for e in events if e.HasField('session_log'))
    assert (marker.step, marker.session_log.status) == (7, SessionLog.START)
    assert events.index(marker) > max(i for i, e in enumerate(events) if e.step == 10)  # files in order


def test_restart_from_scratch_drops_the_lines_of_a_run_killed_before_its_first_checkpoint(tmp_path):
  """train.py opens the writer with resume_step=0 when no checkpoint exists: steps 1-3 of the killed run are
  not kept beside the new run's steps 1-3, and TensorBoard is told to hide them."""
  with MetricWriter(tmp_path, resume_step=0, process_index=0) as writer:
    for step in (1, 2, 3):
      writer.write(step, Split.TRAIN, {'loss': 9.0})
  with MetricWriter(tmp_path, resume_step=0, process_index=0) as writer:
    for step in (1, 2):
      writer.write(step, Split.TRAIN, {'loss': 1.0})
  rows = metrics.read_metrics(tmp_path / 'metrics.jsonl')
  assert [(r['step'], r['loss']) for r in rows] == [(1, 1.0), (2, 1.0)]
  events = read_events(tmp_path / 'tb' / 'train')
  marker = next(e for e in reversed(events) if e.HasField('session_log'))
  assert marker.step == 1 and events.index(marker) > max(i for i, e in enumerate(events) if e.summary.value and
                                                          e.summary.value[0].simple_value == 9.0)


def test_fresh_open_appends_and_drops_only_a_torn_line(tmp_path):
  (tmp_path / 'metrics.jsonl').write_text('{"step": 1, "split": "train", "wall_time": 0.0, "loss": 1.0}\n{"st')
  with MetricWriter(tmp_path, process_index=0) as writer:
    writer.write(1, Split.TRAIN, {'loss': 2.0})
  assert [r['loss'] for r in metrics.read_metrics(tmp_path / 'metrics.jsonl')] == [1.0, 2.0]


def test_only_process_zero_writes_and_prints(tmp_path, capsys):
  with MetricWriter(tmp_path / 'run', process_index=1) as writer:
    assert writer.write(5, Split.TRAIN, {'loss': jnp.float32(1.5)}) == {'loss': 1.5}
    line = writer.print_progress(5, 10, {'loss': 1.5})
  assert line == 'step 5/10  loss 1.500'
  assert not (tmp_path / 'run').exists()
  assert capsys.readouterr().out == ''

  with MetricWriter(tmp_path / 'run', process_index=0) as writer:
    writer.print_progress(5, 10, {'loss': 1.5})
  assert capsys.readouterr().out == 'step 5/10  loss 1.500\n'


@pytest.mark.parametrize('bad, error', [({'loss': jnp.ones(3)}, 'not a scalar'), ({'step': 1.0}, 'reserved')])
def test_write_rejects_bad_metrics(tmp_path, bad, error):
  with MetricWriter(tmp_path, process_index=0) as writer, pytest.raises(ValueError, match=error):
    writer.write(1, Split.TRAIN, bad)


@pytest.mark.parametrize('rates, expected', [
    (Rates(steps_per_sec=2.0, tokens_per_sec=12345.4, eta_sec=192.0, mfu=0.4123),
     'step 120/1000  loss 5.213  lr 3.0e-04  gnorm 1.02  12,345 tok/s  MFU 41.2%  ETA 3m12s'),
    (Rates(steps_per_sec=2.0, tokens_per_sec=12345.4, eta_sec=192.0, mfu=None),
     'step 120/1000  loss 5.213  lr 3.0e-04  gnorm 1.02  12,345 tok/s  ETA 3m12s'),
    (None, 'step 120/1000  loss 5.213  lr 3.0e-04  gnorm 1.02'),
])
def test_progress_line(rates, expected):
  values = {'loss': 5.2134, 'learning_rate': 3e-4, 'grad_norm': 1.0213, 'param_norm': 40.0}
  assert metrics.format_progress(120, 1000, values, rates) == expected


@pytest.mark.parametrize('seconds, text', [(0.4, '0s'), (45, '45s'), (192, '3m12s'), (7500, '2h05m'),
                                           (3 * 86400 + 4 * 3600 + 59, '3d04h')])
def test_format_duration(seconds, text):
  assert metrics.format_duration(seconds) == text


def test_flops_per_token_gpt_closed_form():
  """Matmul multiply-adds per token, x6: 4 attention projections and the MLP per layer, the (tied) head, and
  2·T·d for the attention scores and values; lookups, norms and biases are not matmuls."""
  cfg = TINY['gpt2']  # d=32, H=4, head_dim 8, d_ff=64, L=2, V=101, biases, tied LM head
  d, ff, L, V, T = 32, 64, 2, 101, 16
  per_token = L * (4 * d * d + 2 * d * ff + 2 * d * T) + V * d
  assert per_token == 21664
  assert metrics.flops_per_token(cfg, T) == 6 * per_token
  assert metrics.tokens_per_example(cfg, T) == T
  with pytest.raises(ValueError, match='decoder_seq_len'):
    metrics.flops_per_token(cfg, T, decoder_seq_len=8)
  # Every application of a layer counts: twice the depth, twice the layers' share.
  deeper = metrics.flops_per_token(cfg.replace(num_layers=2 * L), T) / 6 - per_token
  assert deeper == L * (4 * d * d + 2 * d * ff + 2 * d * T)


def test_flops_per_token_t5_closed_form():
  """Each stack over its own length; cross-attention projects its keys and values once per encoder token."""
  cfg = TINY['t5']  # d=32, H=4, head_dim 12 (H·Q = 48 != d), d_ff=64, 2+2 layers, no biases, tied head
  d, hq, ff, L, V, te, td = 32, 48, 64, 2, 101, 16, 6
  encoder = L * (te * (4 * d * hq + 2 * d * ff) + 2 * hq * te * te)
  decoder = L * (td * (4 * d * hq + 2 * d * ff) + 2 * hq * td * td  # self-attention and MLP
                 + td * 2 * d * hq + te * 2 * d * hq + 2 * hq * td * te)  # cross: q, o per decoder token; k, v
  per_example = encoder + decoder + td * V * d
  assert metrics.forward_macs(cfg, te, td) == per_example
  assert metrics.flops_per_token(cfg, te, td) == pytest.approx(6 * per_example / (te + td), rel=1e-12)
  assert metrics.tokens_per_example(cfg, te, td) == te + td


def test_flops_per_token_of_a_classifier_and_an_mlm_head():
  """BERT: the MLM transform and the vocabulary matmul per token; a classifier's last layer for [CLS] alone
  (keys and values of every position), then the pooler and the classifier once per example."""
  d, ff, L, V, T, C = 32, 64, 2, 101, 16, 3
  layer = T * (4 * d * d + 2 * d * ff) + 2 * d * T * T
  mlm = TINY['bert']  # tied MLM head with its dense transform, no pooler
  assert metrics.forward_macs(mlm, T) == L * layer + T * (d * d + V * d)
  classifier = TINY['bert'].replace(head='classifier', num_labels=C, pooler=True, tie_embeddings=False,
                                    lm_head_bias=False)
  last = T * 2 * d * d + (2 * d * d + 2 * d * ff) + 2 * d * T
  assert metrics.forward_macs(classifier, T) == (L - 1) * layer + last + d * d + d * C


@pytest.mark.parametrize('kind, peak', [
    ('NVIDIA H100 80GB HBM3', 989e12), ('NVIDIA H100 PCIe', 756e12), ('NVIDIA H200', 989e12),
    ('NVIDIA A100-SXM4-40GB', 312e12), ('TPU v4', 275e12), ('TPU v5 lite', 197e12), ('TPU v5', 459e12),
    ('TPU v5p', 459e12), ('TPU v6 lite', 918e12), ('cpu', None), ('Some Future Chip', None)])
def test_peak_flops(kind, peak):
  assert metrics.peak_flops_per_device(kind) == peak


def test_total_peak_flops_is_unknown_on_cpu():
  assert metrics.total_peak_flops() is None


class FakeClock:

  def __init__(self) -> None:
    self.now = 1000.0

  def __call__(self) -> float:
    return self.now


def test_throughput_excludes_the_compile_step_and_pauses():
  clock = FakeClock()
  meter = Throughput(total_steps=100, tokens_per_step=1000, flops_per_token=6e6, peak_flops=1e11, time_fn=clock)
  assert meter.rates() is None
  clock.now += 60.0  # step 1 compiles for a minute
  meter.tick(1)
  assert meter.rates() is None  # nothing measured after the baseline yet
  for step in range(2, 11):  # 0.5 s per step
    clock.now += 0.5
    meter.tick(step)
  rates = meter.rates()
  assert rates == Rates(steps_per_sec=2.0, tokens_per_sec=2000.0, eta_sec=90 * 0.5, mfu=2000 * 6e6 / 1e11)

  with meter.paused():  # a 5 s evaluation: out of tokens/s, into the ETA's average pace
    clock.now += 5.0
  for step in range(11, 21):  # now 0.25 s per step
    clock.now += 0.25
    meter.tick(step)
  rates = meter.rates()
  assert rates.tokens_per_sec == pytest.approx(4000.0)  # this window only: 10 steps in 2.5 s of training
  assert rates.eta_sec == pytest.approx(80 * (4.5 + 5.0 + 2.5) / 19)  # wall time since the baseline
  assert meter.rates().tokens_per_sec == pytest.approx(19 / 7.0 * 1000)  # no new step: whole-run average


def test_throughput_after_resume_counts_from_the_restored_step():
  clock = FakeClock()
  meter = Throughput(total_steps=1000, tokens_per_step=10, time_fn=clock)
  clock.now += 30.0
  meter.tick(501)  # first step after restoring step 500: compiles again
  for step in range(502, 601):
    clock.now += 2.0
    meter.tick(step)
  rates = meter.rates()
  assert (rates.steps_per_sec, rates.tokens_per_sec, rates.eta_sec, rates.mfu) == (0.5, 5.0, 400 * 2.0, None)
  assert rates.as_metrics() == {'steps_per_sec': 0.5, 'tokens_per_sec': 5.0}
