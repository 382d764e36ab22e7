"""bench/train_throughput.py as its users run it: one process run that trains our step and HF's on the same
weights and batch. With dropout off the first-step losses must agree, which checks the benchmark, the HF
export and our chunked LM-head loss (gpt_tiny's train.logits_chunk) against PyTorch's cross-entropy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_train_throughput_runs_both_sides_and_their_first_losses_agree(tmp_path: Path):
  out = tmp_path / 'figures.json'
  command = [sys.executable, 'bench/train_throughput.py', '--config', 'gpt_tiny', '--batch_size', '4', '--seq_len', '16',
             '--steps', '1', '--warmup', '1', '--dropout', '0', '--json', str(out), '--profile']
  run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  figures = json.loads(out.read_text())
  ours, hf = figures['ours'], figures['hf']['eager']
  assert figures['logits_chunk'] == 8 and figures['tokens_per_step'] == 64
  assert abs(ours['first_loss'] - hf['first_loss']) < 1e-4, (ours['first_loss'], hf['first_loss'])
  assert ours['tokens_per_s'] > 0 and hf['tokens_per_s'] > 0 and hf['params'] == figures['params']
  assert figures['top_ops'] and 'ours / HF eager tokens/s' in run.stdout and 'top ops per step' in run.stdout
