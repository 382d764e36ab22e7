"""Generation in eval.py: BLEU / ROUGE of a sequence-to-sequence task, samples from a language model.

  cfg = generate_config(eval_cfg, tokenizer, data)       # config.eval.generate's set fields over the task's defaults
  hyps, refs = translate_split(run, params, task, cfg, batch_size, limit)   # texts, in source order
  samples = lm_samples(run, params, task, cfg, count, prompt_len, rng)      # (prompt, continuation) texts

Decoding is decoding.generate (KV cache, one jitted while loop), on the run's mesh: batches are global
arrays with the batch sharding, and the generated ids are gathered to every process before detokenising.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

import decoding
import objectives
from core.config import parse_enum
from data import tasks
from data.tokenization import Tokenizer
from evaluation import predict
from evaluation.config import EvalConfig

# The task's defaults of config.eval.generate's unset fields: beam search as in Vaswani et al. (4 beams, alpha 0.6)
# for seq2seq, top-k sampling for samples of a language model. The settings of the task's strategy apply only while
# it is the strategy, so that eval.generate.strategy=greedy alone asks for greedy decoding on any task. Any other
# field: GenerateConfig's.
SEQ2SEQ_DEFAULTS = {'strategy': 'beam'}
BEAM_DEFAULTS = {'num_beams': 4, 'length_penalty': 0.6}
LM_DEFAULTS = {'strategy': 'sample', 'max_new_tokens': 32}
SAMPLE_DEFAULTS = {'temperature': 0.8, 'top_k': 40}


def generate_config(eval_cfg: EvalConfig, tokenizer: Tokenizer, data: tasks.DataConfig) -> decoding.GenerateConfig:
  """The fields `config.eval.generate` sets, over the task's defaults and the tokenizer's special ids, over
  GenerateConfig's own defaults."""
  seq2seq = objectives.spec(data.objective).generation is objectives.Generation.TRANSLATION
  defaults: dict[str, Any] = dict(SEQ2SEQ_DEFAULTS if seq2seq else LM_DEFAULTS)
  if seq2seq:
    defaults['max_new_tokens'] = data.targets_len
  strategy = parse_enum(decoding.Strategy, eval_cfg.generate.get('strategy', defaults['strategy']),
                        field='eval.generate.strategy', what='strategy')
  if strategy.value == defaults['strategy']:
    defaults |= BEAM_DEFAULTS if seq2seq else SAMPLE_DEFAULTS
  defaults |= {'eos_id': tokenizer.eos_id, 'pad_id': tokenizer.pad_id if tokenizer.pad_id is not None else 0,
               'decoder_start_id': tokenizer.pad_id if tokenizer.pad_id is not None else 0}
  return decoding.GenerateConfig.from_dict(defaults | dict(eval_cfg.generate))


def _generate(run: Any, params: Any, inputs: Mapping[str, np.ndarray], cfg: decoding.GenerateConfig,
              rng: jax.Array | None) -> np.ndarray:
  """decoding.generate on this process's rows of a global batch -> (G, N) ids of the whole batch."""
  batch = run.mesh.to_global(inputs)
  with run.mesh.active():
    out = decoding.generate(run.module, params, batch, cfg, rng)
  return np.asarray(multihost_utils.process_allgather(out['tokens'], tiled=True))


def _text(tokenizer: Tokenizer, ids: np.ndarray, eos_id: int | None) -> str:
  ids = [int(i) for i in ids]
  if eos_id is not None and eos_id in ids:
    ids = ids[:ids.index(eos_id)]
  return tokenizer.decode(ids)


def translate_split(run: Any, params: Any, task: tasks.Task, cfg: decoding.GenerateConfig, batch_size: int,
                    limit: int | None) -> tuple[list[str], list[str]]:
  """(hypotheses, references): the generated target text of every source (in order) and the source's own
  target text (read from the dataset, not from the truncated ids, so BLEU sees the real reference)."""
  hypotheses: list[str] = []
  target = task.info.target_feature
  for split_batch in predict.split_batches(task, batch_size, limit=limit):
    inputs = {k: split_batch.local[k] for k in ('input_ids', 'attention_mask')}
    tokens = _generate(run, params, inputs, cfg, None)[split_batch.valid]
    hypotheses += [_text(task.tokenizer, row, cfg.eos_id) for row in tokens]
  references = [task.source[i][target] for i in range(len(hypotheses))]
  return hypotheses, references


def lm_samples(run: Any, params: Any, task: tasks.Task, cfg: decoding.GenerateConfig, count: int,
               prompt_len: int, rng: jax.Array) -> list[tuple[str, str]]:
  """(prompt, continuation) for the first `count` rows of the split: each row's first `prompt_len` tokens
  continued by the model. Rows are padded to the data-parallel width (the mesh's batch devices)."""
  rows = [np.asarray(task.transform(i, task.source[i])['input_ids'][:prompt_len], np.int32)
          for i in range(min(count, len(task.source)))]
  width = max(1, len(rows))
  devices = run.mesh.batch_devices
  padded = rows + [rows[-1]] * (-width % devices)
  local = len(padded) // jax.process_count()
  mine = padded[jax.process_index() * local:(jax.process_index() + 1) * local]
  inputs = {'input_ids': np.stack(mine), 'attention_mask': np.ones((len(mine), prompt_len), np.int32)}
  tokens = _generate(run, params, inputs, cfg, rng)
  return [(task.tokenizer.decode(prompt), _text(task.tokenizer, out, cfg.eos_id))
          for prompt, out in zip(rows, tokens)]
