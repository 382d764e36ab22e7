"""Inference speed of models side by side in one process: a distilled student against its teacher.

  python bench/inference_speed.py                                  # MiniLM (configs/glue.py) vs its 3-layer student
  python bench/inference_speed.py --configs glue:movie_binary,distill:movie_binary --batch_size 32 --rounds 5

Each config's model (its model section; weights do not change the time, so each is freshly initialised) runs the
forward pass a fine-tuned classifier runs in eval.py (`head_only`: logits only) on the same batch of random ids
of the config's data.seq_len (every position a real token: no padding, no length bucketing), jitted once.
The rounds alternate between the models (one timing of `--batches` batches each per round) so that the load of a
shared machine hits them alike; the median round is reported, as examples/s and as a ratio to the first config.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import model  # noqa: E402


def load(spec: str) -> tuple[str, model.ModelConfig, int]:
  """'glue:movie_binary' -> (spec, its ModelConfig, its data.seq_len)."""
  name, _, arg = spec.partition(':')
  config = importlib.import_module(f'configs.{name}').get_config(arg or None)
  return spec, model.ModelConfig.from_dict(config.model), int(config.data.seq_len)


def timed_forward(cfg: model.ModelConfig, batch: int, length: int, seed: int = 0):
  """A function that runs `batches` forward passes and returns their seconds, and the parameter count."""
  module = model.build(cfg)
  params = model.init_params(module, jax.random.key(seed))
  rng = np.random.default_rng(seed)
  ids = jnp.asarray(rng.integers(5, cfg.vocab_size, (batch, length)), jnp.int32)
  inputs = {'input_ids': ids, 'attention_mask': jnp.ones_like(ids)}
  if cfg.num_token_types:
    inputs['token_type_ids'] = jnp.zeros_like(ids)
  forward = jax.jit(lambda p, x: module.apply({'params': p}, **x, head_only=True)['logits'])
  compiled = forward.lower(params, inputs).compile()
  jax.block_until_ready(compiled(params, inputs))  # warm-up

  def run(batches: int) -> float:
    start = time.perf_counter()
    for _ in range(batches):
      out = compiled(params, inputs)
    jax.block_until_ready(out)
    return time.perf_counter() - start
  return run, sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--configs', default='glue:movie_binary,distill:movie_binary',
                      help='configs/<name>.py[:arg], comma-separated; the first is the reference')
  parser.add_argument('--batch_size', type=int, default=32)
  parser.add_argument('--seq_len', type=int, default=0, help='default: each config\'s data.seq_len')
  parser.add_argument('--batches', type=int, default=10, help='forward passes per timing')
  parser.add_argument('--rounds', type=int, default=5)
  args = parser.parse_args()
  models = [load(s) for s in args.configs.split(',')]
  runs = {}
  for spec, cfg, length in models:
    runs[spec] = timed_forward(cfg, args.batch_size, args.seq_len or length) + (args.seq_len or length, cfg)
  times: dict[str, list[float]] = {spec: [] for spec in runs}
  for _ in range(args.rounds):
    for spec, (run, *_rest) in runs.items():
      times[spec].append(run(args.batches))
  print(f'forward passes of batch {args.batch_size} on {jax.devices()[0].platform} ({args.rounds} rounds of '
        f'{args.batches} batches, median round):')
  print('| config | layers | d_model | parameters | ms per batch | examples/s | vs the first |')
  print('|---|---:|---:|---:|---:|---:|---:|')
  reference = None
  for spec, (run, count, length, cfg) in runs.items():
    seconds = statistics.median(times[spec]) / args.batches
    rate = args.batch_size / seconds
    reference = reference or rate
    print(f'| {spec} (length {length}) | {cfg.num_layers} | {cfg.d_model} | {count:,} | {seconds * 1e3:.1f} | '
          f'{rate:,.0f} | {rate / reference:.2f}x |')


if __name__ == '__main__':
  main()
