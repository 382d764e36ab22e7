"""`train.py --dry_run` (trainer/plan.py): the step compiled for a mesh it does not run on, its memory per device
from the shardings, and the command line as a user types it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax

import model
from configs import bert_tiny, gpt_tiny
from model import hf
from trainer import plan

ROOT = Path(__file__).resolve().parents[1]


def _plan(**mesh: int) -> plan.Plan:
  config = gpt_tiny.get_config()
  config.mesh.data = 1
  for name, size in mesh.items():
    setattr(config.mesh, name, size)
  return plan.plan(config)


def test_parameters_and_optimizer_state_shrink_as_one_over_fsdp():
  """gpt_tiny has 1,453,568 float32 parameters; AdamW keeps two moments of each. Replicated over data=8 every
  device holds all of them; fsdp=8 splits each kernel's embed axis (128) in eight."""
  replicated, sharded = _plan(data=8), _plan(fsdp=8)
  assert replicated.mesh == (8, 1, 1) and sharded.mesh == (1, 8, 1) and replicated.devices == 8
  params = 1_453_568 * 4
  assert replicated.param_bytes == params and replicated.opt_bytes >= 2 * params
  assert sharded.param_bytes < params / 7 and sharded.opt_bytes < replicated.opt_bytes / 7
  assert replicated.batch_bytes == 5 * 4 * 128 * 32 // 8  # ids, targets, weights, segments, positions; 8 ways
  assert replicated.temp_bytes > 0 and replicated.model_flops == sharded.model_flops > 0
  assert 'fits in 1 GB per device' in plan.report(sharded, memory_gb=1.0)
  assert 'does NOT fit in 0.001 GB' in plan.report(sharded, memory_gb=0.001)


def test_dry_run_command_line():
  """As a user types it: no workdir, mesh sizes on the command line, devices simulated in the child."""
  command = [sys.executable, 'train.py', '--config', 'configs/gpt_tiny.py', '--dry_run', '--config.mesh.data=2',
             '--config.mesh.fsdp=2', '--dry_run_memory_gb=1']
  out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True).stdout
  assert 'compiled for 4 simulated devices, mesh (data, fsdp, tensor) = (2, 2, 1)' in out, out
  assert 'fits in 1 GB per device' in out and 'FLOPs per step: 3.644e+10' in out, out
  bad = subprocess.run(command[:-3] + ['--config.mesh.fsdp=0'], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
  assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [bad.stderr.strip()], bad.stderr  # one line
  assert bad.stderr.startswith('train.py: error: mesh.fsdp=0'), bad.stderr
  assert len(jax.devices()) == 8  # this process's devices are untouched


def test_a_distillation_teacher_is_planned_from_its_config_alone(tmp_path: Path):
  """distill.teacher (here an HF directory holding config.json and no weights): its parameters, in the
  shardings a run gives them, are part of every device's memory, and its forward pass of the FLOPs."""
  import transformers  # pylint: disable=import-outside-toplevel
  transformers.BertConfig(vocab_size=8000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                          intermediate_size=1024, max_position_embeddings=128,
                          architectures=['BertForMaskedLM']).save_pretrained(tmp_path)
  config = bert_tiny.get_config()
  config.mesh.data = 8
  config.train.logits_chunk = 0  # distillation's KL takes the student's whole logits
  student = plan.plan(config)
  config.distill.update(teacher=str(tmp_path), alpha_cos=0.0)
  taught = plan.plan(config)
  teacher_params = model.count_params(hf.config_from_pretrained(tmp_path))
  assert student.teacher_bytes == 0 and taught.teacher_params == teacher_params > 3 * student.params
  assert taught.teacher_bytes == 4 * teacher_params  # float32, replicated over data=8
  assert taught.total_bytes >= student.total_bytes + taught.teacher_bytes - student.temp_bytes
  assert taught.model_flops > student.model_flops
  assert 'teacher parameters' in plan.report(taught) and '2 x the teacher' in plan.report(taught)
