"""Input pipeline throughput for each objective, next to the train step's on the same machine.

  python bench/input_pipeline.py [--batches 30] [--workers 0]

For the tiny configs (and BERT-tiny fine-tuning on movie sentiment) it prints the pipeline's examples/s and
tokens/s, the tokens/s of a jitted train step (forward, backward, AdamW) of that config, and their ratio:
above 1 the pipeline keeps up with the step. Built-in datasets are built on first use; the SentencePiece
vocabulary is trained once into bench/.cache. The step is the training run's (trainer/step.py), on the
default mesh of every device.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import model  # noqa: E402
from data import tasks  # noqa: E402
from data.pipeline import InputIterator, PipelineConfig, make_dataset  # noqa: E402
from trainer.mesh import MeshConfig  # noqa: E402
from trainer.optim import OptimConfig, make_optimizer  # noqa: E402
from trainer.step import StepConfig, abstract_train_state, compile_train_step, init_train_state  # noqa: E402

CACHE = Path(__file__).resolve().parent / '.cache'


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  config: str  # a configs/ module
  data: dict  # overrides of config.data
  model: dict  # overrides of config.model


CASES = (
    Case('causal_lm (gpt_tiny)', 'gpt_tiny', {}, {}),
    Case('causal_lm packed (gpt_tiny)', 'gpt_tiny', {'packing': True}, {}),
    Case('mlm (bert_tiny)', 'bert_tiny', {}, {}),
    Case('span_corruption (t5_tiny)', 't5_tiny', {}, {}),
    Case('classification (bert_tiny)', 'bert_tiny',
         {'source': 'builtin:movie_sentiment/binary', 'objective': 'classification', 'seq_len': 64},
         {'head': 'classifier', 'num_labels': 2, 'pooler': True, 'lm_head_bias': False}),
)


def time_pipeline(task: tasks.Task, batch_size: int, batches: int, workers: int) -> tuple[float, dict]:
  it = InputIterator(make_dataset(task.source, task.transform,
                                  PipelineConfig(global_batch_size=batch_size, worker_count=workers)))
  first = next(it)  # start-up (and worker spawn) is not throughput
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  seconds = time.perf_counter() - start
  it.close()
  return batches * batch_size / seconds, first


def time_step(cfg: model.ModelConfig, step_cfg: StepConfig, batch: dict, steps: int) -> float:
  """Steps per second of the training run's own step (trainer/step.py: loss, AdamW, clipping, the config's
  train settings) on `batch`."""
  mesh = MeshConfig().context()  # train.py's default mesh: data parallel over every device
  module = model.build(cfg)
  tx, schedule = make_optimizer(OptimConfig(learning_rate=1e-4))
  abstract = abstract_train_state(module, tx, mesh)
  state = init_train_state(module, tx, jax.random.key(0), abstract)
  batch = mesh.to_global(batch)
  step = compile_train_step(module, tx, schedule, step_cfg, mesh, abstract, batch)
  rng = step_cfg.dropout_key(1)
  state, metrics = step(state, batch, rng)  # the first step, after compiling, is not timed
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = step(state, batch, rng)
  jax.block_until_ready(metrics)
  return steps / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batches', type=int, default=30, help='batches timed per pipeline')
  parser.add_argument('--steps', type=int, default=5, help='train steps timed per config')
  parser.add_argument('--workers', type=int, default=0, help='grain worker processes')
  args = parser.parse_args()
  print(f'backend {jax.default_backend()} ({jax.devices()[0].device_kind}), {jax.device_count()} device(s); '
        f'grain workers {args.workers}')
  print(f'{"objective":<30} {"pipeline ex/s":>14} {"pipeline tok/s":>15} {"step tok/s":>11} {"ratio":>7}')
  for case in CASES:
    config = importlib.import_module(f'configs.{case.config}').get_config()
    config.data.update(case.data)
    config.model.update(case.model)
    data_cfg = tasks.DataConfig.from_dict(config.data)
    task = tasks.build_task(data_cfg, 'train', seed=0, tokenizer_dir=CACHE)
    batch_size = config.train.batch_size
    examples_per_s, batch = time_pipeline(task, batch_size, args.batches, args.workers)
    tokens_per_example = sum(batch[k].shape[1] for k in ('input_ids', 'decoder_input_ids') if k in batch)
    cfg = model.ModelConfig.from_dict(config.model)
    steps_per_s = time_step(cfg, StepConfig.from_config(config), batch, args.steps)
    pipe_tokens, step_tokens = examples_per_s * tokens_per_example, steps_per_s * batch_size * tokens_per_example
    print(f'{case.name:<30} {examples_per_s:>14,.0f} {pipe_tokens:>15,.0f} {step_tokens:>11,.0f} '
          f'{pipe_tokens / step_tokens:>7.1f}')


if __name__ == '__main__':
  main()
