"""Generation for decoder-only and encoder-decoder models: greedy, sampling and beam search on the KV cache.

  cfg = decoding.GenerateConfig(strategy='beam', num_beams=4, length_penalty=0.6, max_new_tokens=64)
  out = decoding.generate(module, params, {'input_ids': ids, 'attention_mask': mask}, cfg, rng)
  out['tokens']  # (B, 64) int32, pad after EOS; out['lengths'] (B,), out['scores'] (B,)

The decoding cores are pure functions of a `step_fn(tokens (B,), state) -> (logits (B, V), state)`
(`sample_loop`, `beam_search`), so they can be driven by any model, or by a hand-made one in tests.
"""

from decoding.beam import beam_search, length_penalty
from decoding.config import GenerateConfig, Strategy
from decoding.generate import cache_batch_axes, generate
from decoding.sampling import StepFn, sample_loop, sample_token, truncate_logits

__all__ = [
    'GenerateConfig', 'StepFn', 'Strategy', 'beam_search', 'cache_batch_axes', 'generate', 'length_penalty',
    'sample_loop', 'sample_token', 'truncate_logits',
]
