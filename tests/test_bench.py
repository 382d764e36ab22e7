"""bench/train_throughput.py as its users run it: one process run that trains our step and HF's on the same
weights and batch. With dropout off the first-step losses must agree, which checks the benchmark, the HF
export and our chunked LM-head loss (gpt_tiny's train.logits_chunk) against PyTorch's cross-entropy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_train_throughput_runs_both_sides_and_their_first_losses_agree(tmp_path: Path):
  out = tmp_path / 'figures.json'
  command = [sys.executable, 'bench/train_throughput.py', '--config', 'gpt_tiny', '--batch_size', '4', '--seq_len', '16',
             '--steps', '1', '--warmup', '1', '--dropout', '0', '--json', str(out), '--profile',
             '--xla_flags=--xla_cpu_enable_fast_math=false']  # XLA's default; a flag it did not know would abort
  run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  figures = json.loads(out.read_text())
  ours, hf = figures['ours'], figures['hf']['eager']
  assert figures['logits_chunk'] == 8 and figures['tokens_per_step'] == 64
  assert figures['xla_flags'] == '--xla_cpu_enable_fast_math=false' and 'XLA_FLAGS+=' in run.stdout
  assert abs(ours['first_loss'] - hf['first_loss']) < 1e-4, (ours['first_loss'], hf['first_loss'])
  assert ours['tokens_per_s'] > 0 and hf['tokens_per_s'] > 0 and hf['params'] == figures['params']
  assert figures['top_ops'] and 'ours / HF eager tokens/s' in run.stdout and 'top ops per step' in run.stdout
  # every op of the profile summed by part of the step: the shares add up, and the named parts are found
  parts = {part: share for part, _, share in figures['step_parts']}
  assert abs(sum(parts.values()) - 1) < 1e-6 and 'by part of the step' in run.stdout
  assert {'LM head + loss', 'attention', 'feed-forward', 'optimizer'} <= set(parts), parts


def test_profile_parts_by_op_name():
  """bench/train_throughput.op_part: the first part with a fragment in a component of the jax op name."""
  from bench.train_throughput import OTHER_PART, op_part  # pylint: disable=import-outside-toplevel
  layer = 'jit(train_step)/transpose(jvp(Transformer))/Transformer.decode/decoder/decoder._layers/layers_0'
  assert op_part(f'{layer}/self_attn/dropout/jit(_where)/select_n') == 'dropout'
  assert op_part(f'{layer}/self_attn/query/dot_general') == 'attention'
  assert op_part(f'{layer}/self_attn_norm/mul') == 'norms'
  assert op_part(f'{layer}/ffn/wi/dot_general') == 'feed-forward'
  assert op_part('jit(train_step)/jvp(loss)/while/body/closed_call/bcd,vd->bcv/dot_general') == 'LM head + loss'
  assert op_part('jit(train_step)/jvp(Transformer)/Transformer.mlm_norm/mul') == 'LM head + loss'
  assert op_part('jit(train_step)/optimizer/jit(norm)/sqrt') == 'optimizer'
  assert op_part(f'{layer}/add') == op_part('') == OTHER_PART


def _sweep_results(workdir: Path, field: str, cells: dict[str, list[dict]]) -> None:
  """A results.json as sweep.py writes it: one variant per value of `field`, its seeds' final metrics."""
  variants = [{'variant': f'{field.split(".")[-1]}={value}', 'assignment': {field: value},
               'seeds': [{'seed': i, 'workdir': str(workdir / value / f'seed_{i}'), 'state': 'finished', 'step': 5,
                          'final': final} for i, final in enumerate(seeds)]}
              for value, seeds in cells.items()]
  workdir.mkdir(parents=True)
  (workdir / 'results.json').write_text(json.dumps({'variants': variants}))


def test_pretraining_transfer_picks_the_learning_rate_on_validation_and_reports_its_test(tmp_path, monkeypatch,
                                                                                         capsys):
  """bench/pretraining_transfer.py on made-up sweeps: the best mean validation accuracy picks the learning rate
  whose cells' test accuracy (eval.py's metrics.json, present: nothing is evaluated) is reported and drawn."""
  sys.path.insert(0, str(ROOT))
  import matplotlib.image  # pylint: disable=import-outside-toplevel
  from bench import finetune_vs_hf, pretraining_transfer  # pylint: disable=import-outside-toplevel
  _sweep_results(tmp_path / 'mlm', 'train.num_steps', {'300': [{'loss': 6.4, 'perplexity': 601.8}]})
  for budget, accuracies in (('0', {'1e-4': (0.60, 0.62), '1e-3': (0.75, 0.73)}),
                             ('300', {'1e-4': (0.80, 0.78), '1e-3': (0.70, 0.70)})):
    _sweep_results(tmp_path / budget, 'optim.learning_rate',
                   {lr: [{'accuracy': a, 'loss': 0.5} for a in pair] for lr, pair in accuracies.items()})
    for lr, pair in accuracies.items():
      for i, a in enumerate(pair):  # test accuracy = validation - 0.01, to tell the chosen cells apart
        metrics = tmp_path / budget / lr / f'seed_{i}' / 'eval' / 'step_5' / 'metrics.json'
        metrics.parent.mkdir(parents=True)
        metrics.write_text(json.dumps({'test': {'accuracy': a - 0.01}}))
  monkeypatch.setattr(finetune_vs_hf, 'run_tfidf', lambda args: {'test': {'accuracy': 0.797}})
  out = tmp_path / 'figure.png'
  monkeypatch.setattr(sys, 'argv', ['pretraining_transfer.py', '--pretraining', str(tmp_path / 'mlm'), '--finetunes',
                                    f'0={tmp_path / "0"},300={tmp_path / "300"}', '--out', str(out)])
  pretraining_transfer.main()
  printed = capsys.readouterr().out
  assert '| 300 | 6.400 | 601.800 |' in printed
  assert '| 0 | 1e-3 | 0.740 ± 0.014 | 0.730 ± 0.014 |' in printed and '| 0 | 1e-4 | 0.610 ± 0.014 |  |' in printed
  assert '| 300 | 1e-4 | 0.790 ± 0.014 | 0.780 ± 0.014 |' in printed and '| 300 | 1e-3 | 0.700 ± 0.000 |  |' in printed
  assert 'test accuracy 0.797' in printed
  assert matplotlib.image.imread(out).shape[:2] == (450, 700)
  monkeypatch.setattr(sys, 'argv', ['pretraining_transfer.py', '--pretraining', str(tmp_path / 'mlm'), '--finetunes',
                                    f'1000={tmp_path / "300"}'])
  with pytest.raises(SystemExit, match=r'--finetunes: 1000 steps is not a budget of --pretraining .*\[300\]'):
    pretraining_transfer.main()


def test_inference_speed_times_the_student_beside_its_teacher():
  """bench/inference_speed.py as the README runs it (smaller): one row per config, the first the 1.00x reference."""
  command = [sys.executable, 'bench/inference_speed.py', '--batch_size', '2', '--seq_len', '8', '--rounds', '1',
             '--batches', '1']
  run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  rows = [line for line in run.stdout.splitlines() if line.startswith('| glue:') or line.startswith('| distill:')]
  assert len(rows) == 2 and rows[0].endswith('| 1.00x |'), run.stdout
  assert '| 6 | 384 | 22,713,986 |' in rows[0] and '| 3 | 384 | 17,390,594 |' in rows[1]
