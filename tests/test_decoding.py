"""Generation: cached decoding against an uncached reference, beam search against brute force, EOS handling,
the sampling distributions, and config validation.

Compiles are the cost here, so every generate() call of a (model, config, shape) is made once and shared
(`_generate`), and the decoding cores are checked on hand-made step functions that compile in a blink.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import decoding
import model
from decoding import GenerateConfig, Strategy
from tests.tiny import TINY, random_ids

# A decoder-only model with T5's relative bias: left-padding must keep its slot differences right too.
CFGS = dict(TINY, gpt_relative=TINY['gpt2'].replace(position=model.Position.RELATIVE))
N = 8  # new tokens
PROMPT_MASK = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], np.int32)  # right-padded
GREEDY = GenerateConfig(max_new_tokens=N, eos_id=None, decoder_start_id=3)


@functools.cache
def params_of(name: str) -> dict:
  """As tiny.params_for (every leaf its init plus 0.1 noise; the 0.02-std init is dropped beside it, norm scales
  stay around 1), drawn with numpy: there jax.random compiles a threefry per leaf, tens of seconds on 2 cores."""
  shapes = jax.eval_shape(lambda: model.init_params(model.build(CFGS[name]), jax.random.key(0)))
  rng = np.random.default_rng(0)

  def draw(path, leaf: jax.ShapeDtypeStruct) -> jnp.ndarray:
    base = 1.0 if jax.tree_util.keystr(path[-1:]) == "['scale']" else 0.0
    return jnp.asarray(base + rng.normal(0.0, 0.1, leaf.shape), leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def batch_of(name: str) -> dict[str, np.ndarray]:
  """Three prompts (decoder-only) or sources (encoder-decoder) of lengths 3, 5 and 1, right-padded with junk
  ids that the mask hides."""
  return {'input_ids': np.asarray(random_ids(PROMPT_MASK.shape, seed=1)), 'attention_mask': PROMPT_MASK}


@functools.cache
def _generate(name: str, cfg: GenerateConfig, row: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
  """generate() on batch_of(name), or on its row `row` alone without padding."""
  batch = batch_of(name)
  if row is not None:
    real = PROMPT_MASK[row].astype(bool)
    batch = {k: v[row:row + 1, real] for k, v in batch.items()}
  out = decoding.generate(model.build(CFGS[name]), params_of(name), batch, cfg, jax.random.key(seed))
  return jax.tree.map(np.asarray, out)


@functools.cache
def _forward(name: str):
  module = model.build(CFGS[name])
  return jax.jit(lambda params, kw: jax.nn.log_softmax(module.apply({'params': params}, **kw)['logits']))


def uncached(name: str, forced: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """The reference: a full forward pass over the whole sequence so far at every step, each row starting at
  slot 0 as if alone (what follows it is masked, and causal anyway). Returns the greedy tokens (B, N), or the
  `forced` ones, and their per-step log-probabilities (B, N)."""
  cfg, batch = CFGS[name], batch_of(name)
  rows = np.arange(len(PROMPT_MASK))
  tokens, log_probs = np.zeros((len(rows), N), np.int32), np.zeros((len(rows), N), np.float32)
  if cfg.family is model.Family.DECODER:
    lengths = PROMPT_MASK.sum(1)
    seq = np.zeros((len(rows), PROMPT_MASK.shape[1] + N), np.int32)
    seq[:, :PROMPT_MASK.shape[1]] = batch['input_ids'] * PROMPT_MASK
  else:
    lengths = np.ones(len(rows), np.int64)
    seq = np.full((len(rows), N), GREEDY.decoder_start_id, np.int32)
  for t in range(N):
    last = lengths + t - 1  # the slot whose logits predict token t
    valid = (np.arange(seq.shape[1]) <= last[:, None]).astype(np.int32)
    if cfg.family is model.Family.DECODER:
      kw = {'input_ids': seq, 'attention_mask': valid}
    else:
      kw = dict(batch, decoder_input_ids=seq, decoder_attention_mask=valid)
    step = np.asarray(_forward(name)(params_of(name), kw))[rows, last]  # (B, V)
    tokens[:, t] = step.argmax(-1) if forced is None else forced[:, t]
    log_probs[:, t] = step[rows, tokens[:, t]]
    if t + 1 < N:
      seq[rows, last + 1] = tokens[:, t]
  return tokens, log_probs


# --- cached greedy decoding ------------------------------------------------------------------------------

@pytest.mark.parametrize('name', ['gpt2', 'gpt_rope', 'gpt_relative', 't5', 'vaswani'])
def test_cached_greedy_equals_uncached_greedy(name):
  """Right-padded prompts of lengths 3, 5, 1 (learned, rotary, relative positions) or sources (T5 relative,
  Vaswani sinusoidal): each row equals the reference that recomputes that row alone at every step."""
  out = _generate(name, GREEDY)
  want_tokens, want_log_probs = uncached(name)
  np.testing.assert_array_equal(out['tokens'], want_tokens)
  np.testing.assert_allclose(out['scores'], want_log_probs.sum(1), rtol=1e-5, atol=1e-4)
  np.testing.assert_array_equal(out['lengths'], N)
  assert out['steps'] == N


@pytest.mark.parametrize('name', ['gpt_rope', 't5'])
def test_a_padded_row_decodes_as_it_does_alone(name):
  """Row 0 (3 real tokens, 2 pads) through generate() alone, unpadded: the same tokens and score."""
  alone, batched = _generate(name, GREEDY, row=0), _generate(name, GREEDY)
  np.testing.assert_array_equal(alone['tokens'][0], batched['tokens'][0])
  np.testing.assert_allclose(alone['scores'][0], batched['scores'][0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('scan', [True, False])
def test_cache_batch_axes_follow_the_layer_stacking(scan):
  """Beam search reorders the cache along these axes: a scanned stack puts its layer axis first."""
  axes = decoding.cache_batch_axes(model.build(TINY['t5'].replace(scan_layers=scan)), 8, encoder_length=5)
  kv = 1 if scan else 0
  layers = {'layers': {'self_attn': {'cached_key': kv, 'cached_value': kv}}} if scan else {
      f'layers_{i}': {'self_attn': {'cached_key': kv, 'cached_value': kv}} for i in range(2)}
  assert axes == {'decoder': {'index': None, 'key_valid': 0, **layers}}


# --- EOS -------------------------------------------------------------------------------------------------

def test_generation_stops_at_eos_and_pads_after_it():
  """EOS = row 0's first greedy token: every row is the EOS-less greedy run cut after its first EOS and padded;
  lengths count the EOS; scores sum the reference log-probs up to it. (Early exit: see the step_fn tests.)"""
  free = _generate('gpt2', GREEDY)['tokens']
  eos = int(free[0, 0])
  out = _generate('gpt2', GREEDY.replace(eos_id=eos, pad_id=0))
  lengths = np.array([np.argmax(row == eos) + 1 if (row == eos).any() else N for row in free])
  assert lengths.min() == 1 and lengths.max() == N, 'the batch should hold a row that ends at once, one that never does'
  np.testing.assert_array_equal(out['tokens'], np.where(np.arange(N) < lengths[:, None], free, 0))
  np.testing.assert_array_equal(out['lengths'], lengths)
  _, log_probs = uncached('gpt2')
  np.testing.assert_allclose(out['scores'], [log_probs[i, :n].sum() for i, n in enumerate(lengths)], rtol=1e-5,
                             atol=1e-4)
  assert out['steps'] == N


# --- the decoding cores on hand-made step functions -------------------------------------------------------

PAD, EOS = 0, 1


def markov_step(table: jax.Array) -> decoding.StepFn:
  """A hand-made model: log p(next | step t, previous token) = table[t, previous]; state = the step (B,)."""
  return lambda tokens, t: (table[t, tokens], t + 1)


def random_table(seed: int, steps: int, vocab: int) -> np.ndarray:
  logits = np.random.default_rng(seed).normal(0.0, 1.5, (steps, vocab, vocab))
  return logits - np.log(np.exp(logits).sum(-1, keepdims=True))  # normalised log-probs


def brute_force(table: np.ndarray, start: int, alpha: float) -> tuple[tuple[int, ...], float]:
  """The best sequence over all that end at their first EOS, or run to the full length without one, scored
  as beam search scores them: log p / ((5 + length) / 6) ** alpha."""
  steps, vocab = table.shape[:2]
  best, best_score = None, -np.inf
  for length in range(1, steps + 1):
    for seq in itertools.product(range(vocab), repeat=length):
      if EOS in seq[:-1] or (length < steps and seq[-1] != EOS):
        continue
      log_p = sum(table[t, prev, tok] for t, (prev, tok) in enumerate(zip((start,) + seq, seq)))
      score = log_p / ((5 + length) / 6) ** alpha
      if score > best_score:
        best, best_score = seq, score
  return best, best_score


@functools.cache
def _core(cfg: GenerateConfig, batch: int, early_stopping: bool):
  """The jitted core of `cfg` on a Markov table passed as an argument, so that tables share one compile."""
  def run(table: jax.Array, rng: jax.Array | None) -> dict[str, jax.Array]:
    starts = jnp.zeros((batch,), jnp.int32)  # token PAD, and step counters at 0
    if cfg.strategy is Strategy.BEAM:
      return decoding.beam_search(markov_step(table), starts, starts, cfg, early_stopping=early_stopping)
    return decoding.sample_loop(markov_step(table), starts, starts, cfg, rng)

  return jax.jit(run)


def run_core(table: np.ndarray, cfg: GenerateConfig, batch: int = 1, rng=None,
             early_stopping: bool = True) -> dict[str, np.ndarray]:
  return jax.tree.map(np.asarray, _core(cfg, batch, early_stopping)(jnp.asarray(table, jnp.float32), rng))


def eos_heavy_table(seed: int) -> np.ndarray:
  """4 steps over 4 ids, EOS made likely enough that short hypotheses compete with long ones."""
  table = random_table(seed, steps=4, vocab=4)
  table[:, :, EOS] += 1.0
  return table - np.log(np.exp(table).sum(-1, keepdims=True))


def test_beam_search_finds_what_greedy_misses():
  """p(a)=.5, p(b)=.4 first; after a everything is flat, after b, b is likely: greedy takes a, the best
  sequence starts with b, and two beams find it."""
  a, b = 2, 3
  after = np.full((4, 4), 0.25)
  after[PAD] = after[a] = [0.1, 0.3, 0.3, 0.3]
  after[PAD, [a, b]] = [0.5, 0.4]
  after[PAD, [PAD, EOS]] = 0.05
  after[b] = [0.02, 0.05, 0.03, 0.9]
  table = np.log(np.broadcast_to(after, (3, 4, 4)))
  cfg = GenerateConfig(strategy='beam', num_beams=2, max_new_tokens=3, eos_id=EOS, pad_id=PAD)
  beam = run_core(table, cfg)
  greedy = run_core(table, GenerateConfig(max_new_tokens=3, eos_id=EOS, pad_id=PAD))
  seq, score = brute_force(table, PAD, 0.0)
  assert seq == (b, b, b)
  np.testing.assert_array_equal(beam['tokens'][0], seq)
  np.testing.assert_allclose(beam['scores'][0], score, rtol=1e-6)
  assert greedy['tokens'][0, 0] == a and greedy['scores'][0] < score - 0.5


def test_one_beam_is_greedy():
  """Without EOS, one beam is greedy decoding: same tokens, same log-probability. (With EOS it may return an
  earlier EOS hypothesis that greedy passed over, with a higher score: that is what the finished pool is for.)"""
  table = random_table(4, steps=6, vocab=50)
  greedy = run_core(table, GenerateConfig(max_new_tokens=6, eos_id=None), batch=16)
  beam = run_core(table, GenerateConfig(strategy='beam', num_beams=1, max_new_tokens=6, eos_id=None), batch=16)
  np.testing.assert_array_equal(beam['tokens'], greedy['tokens'])
  np.testing.assert_allclose(beam['scores'], greedy['scores'], rtol=1e-6)


@pytest.mark.parametrize('alpha', [0.6, 2.0])  # alpha = 0: test_beam_search_finds_what_greedy_misses
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_beam_search_with_every_prefix_kept_is_exact(alpha, seed):
  """27 beams keep every EOS-free prefix of 4 tokens over 4 ids: the result is the brute-force optimum of
  the length-penalised score, early stopping included."""
  table = eos_heavy_table(seed)
  cfg = GenerateConfig(strategy='beam', num_beams=27, max_new_tokens=4, length_penalty=alpha, eos_id=EOS,
                       pad_id=PAD)
  out = run_core(table, cfg)
  seq, score = brute_force(table, PAD, alpha)
  np.testing.assert_array_equal(out['tokens'][0], seq + (PAD,) * (4 - len(seq)))
  assert out['lengths'][0] == len(seq)
  np.testing.assert_allclose(out['scores'][0], score, rtol=1e-5)


def test_early_stopping_never_changes_the_result():
  """Three beams, alpha = 2 (the penalty rewards length most, so the bound is loosest): stopping as soon as
  no live hypothesis can beat the worst finished one returns what running every step returns."""
  cfg = GenerateConfig(strategy='beam', num_beams=3, max_new_tokens=4, length_penalty=2.0, eos_id=EOS, pad_id=PAD)
  steps = []
  for seed in range(8):
    early, full = (run_core(eos_heavy_table(seed), cfg, early_stopping=e) for e in (True, False))
    jax.tree.map(np.testing.assert_array_equal, {k: v for k, v in early.items() if k != 'steps'},
                 {k: v for k, v in full.items() if k != 'steps'})
    steps.append(int(early['steps']))
  assert min(steps) < 4, f'no table stopped early: {steps}'


def peaked_step(ends: list[int]) -> decoding.StepFn:
  """Row r emits token 2 until step ends[r], where it emits EOS, then token 3 (only reachable after EOS)."""
  ends_ = jnp.asarray(ends)

  def step(tokens, t):
    rows = jnp.arange(tokens.shape[0]) // (tokens.shape[0] // len(ends))  # beam row b*K + k is of row b
    token = jnp.where(t < ends_[rows], 2, jnp.where(t == ends_[rows], EOS, 3))
    return 10.0 * jax.nn.one_hot(token, 5), t + 1

  return step


@pytest.mark.parametrize('strategy', ['greedy', 'beam'])
def test_rows_end_at_eos_and_the_loop_exits_when_all_have(strategy):
  """Rows ending at steps 0, 2, 1 of 6: pad after EOS, lengths with the EOS, and 3 steps run. (One beam: its
  finished pool then holds the EOS hypothesis, which no live one, 10 nats behind, can beat.)"""
  ends = [0, 2, 1]
  cfg = GenerateConfig(strategy=strategy, max_new_tokens=6, eos_id=EOS, pad_id=PAD)
  core = decoding.beam_search if strategy == 'beam' else decoding.sample_loop
  out = jax.jit(lambda: core(peaked_step(ends), jnp.zeros((3,), jnp.int32), jnp.zeros((3,), jnp.int32), cfg))()
  np.testing.assert_array_equal(out['tokens'], [[1, 0, 0, 0, 0, 0], [2, 2, 1, 0, 0, 0], [2, 1, 0, 0, 0, 0]])
  np.testing.assert_array_equal(out['lengths'], [1, 3, 2])
  assert out['steps'] == 3


# --- beam search on real models ---------------------------------------------------------------------------

BEAM = GREEDY.replace(strategy=Strategy.BEAM, num_beams=4, length_penalty=0.6)


@pytest.mark.parametrize('name', ['gpt2', 't5'])
def test_beam_search_scores_its_tokens_and_beats_greedy(name):
  """Four beams on padded prompts (decoder-only) or sources (encoder-decoder): the score is the reference
  log-probability of the returned tokens over the length penalty, and at least greedy's. (Beam search is not
  guaranteed to beat greedy; on these fixed models it does, and a wrong cache reordering would not.)"""
  beam, greedy = _generate(name, BEAM), _generate(name, GREEDY)
  _, log_probs = uncached(name, forced=beam['tokens'])
  penalty = float(decoding.length_penalty(N, BEAM.length_penalty))
  np.testing.assert_allclose(beam['scores'], log_probs.sum(1) / penalty, rtol=1e-5, atol=1e-4)
  assert (beam['scores'] * penalty >= greedy['scores'] - 1e-5).all()
  assert (beam['scores'] * penalty > greedy['scores'] + 1e-3).any(), 'beam search should find a better row'


# --- sampling ---------------------------------------------------------------------------------------------

def test_sampling_with_top_k_1_is_greedy_on_a_real_model():
  cfg = GREEDY.replace(strategy=Strategy.SAMPLE, top_k=1, temperature=0.5)
  for seed in (0, 1):
    out, greedy = _generate('t5', cfg, seed=seed), _generate('t5', GREEDY)
    np.testing.assert_array_equal(out['tokens'], greedy['tokens'])
    np.testing.assert_allclose(out['scores'], greedy['scores'], rtol=1e-6)  # the model's own log-probs


@pytest.mark.parametrize('knobs', [dict(top_k=1, temperature=0.5), dict(top_p=1e-6, top_k=7, temperature=3.0)])
def test_sampling_with_a_single_candidate_is_greedy(knobs):
  table = random_table(3, steps=6, vocab=50)
  greedy = run_core(table, GenerateConfig(max_new_tokens=6, eos_id=None), batch=16)
  sampled = run_core(table, GenerateConfig(strategy='sample', max_new_tokens=6, eos_id=None, **knobs), batch=16,
                     rng=jax.random.key(0))
  jax.tree.map(np.testing.assert_array_equal, sampled, greedy)


LOGITS = np.array([0.0, 2.0, -1.0, 1.5, 1.0, -3.0, 0.5, -0.5])  # ids sorted by probability: 1 3 4 6 0 7 2 5


def expected_distribution(temperature: float, top_k: int, top_p: float) -> np.ndarray:
  """softmax(LOGITS / temperature), truncated to the top-k, renormalised, cut to the nucleus, renormalised."""
  probs = np.exp(LOGITS / temperature)
  order = np.argsort(-probs, kind='stable')
  keep = np.zeros(len(probs), bool)
  keep[order[:top_k or len(probs)]] = True
  probs = np.where(keep, probs, 0.0) / np.where(keep, probs, 0.0).sum()
  before = np.cumsum(probs[order]) - probs[order]
  if top_p < 1.0:
    assert np.all(np.abs(before - top_p) > 0.02), 'keep top_p away from a boundary, where float32 may differ'
    probs[order[before >= top_p]] = 0.0
  return probs / probs.sum()


@pytest.mark.parametrize('temperature,top_k,top_p', [(0.6, 0, 1.0), (2.0, 3, 1.0), (1.0, 0, 0.7), (1.5, 6, 0.9)])
def test_sampled_frequencies_match_the_truncated_distribution(temperature, top_k, top_p):
  """sample_loop on fixed logits, 2 rngs x 4 steps (each its own key) x 1000 rows: no token outside the
  top-k / nucleus set, and a chi-square test (p = 0.001) of the frequencies against the renormalised
  distribution; the two rngs draw differently."""
  cfg = GenerateConfig(strategy='sample', max_new_tokens=4, eos_id=None, temperature=temperature, top_k=top_k,
                       top_p=top_p)
  step = lambda tokens, state: (jnp.broadcast_to(jnp.asarray(LOGITS, jnp.float32), (len(tokens), 8)), state)
  run = jax.jit(lambda rng: decoding.sample_loop(step, jnp.zeros((1000,), jnp.int32), (), cfg, rng)['tokens'])
  tokens = np.stack([run(jax.random.key(seed)) for seed in (0, 1)])  # (2, 1000, 4)
  counts = np.bincount(tokens.ravel(), minlength=8)
  want = expected_distribution(temperature, top_k, top_p)
  np.testing.assert_array_equal(counts[want == 0], 0)
  support = want > 0
  assert scipy.stats.chisquare(counts[support], want[support] * tokens.size).pvalue > 1e-3, counts
  assert (tokens[0] != tokens[1]).mean() > 0.2 and (tokens[:, :, 0] != tokens[:, :, 1]).mean() > 0.2


def test_truncate_logits_keeps_the_smallest_nucleus():
  logits = jnp.log(jnp.array([[0.1, 0.5, 0.15, 0.25]]))
  values, ids = decoding.truncate_logits(logits, top_p=0.75)  # 0.5 + 0.25 reach 0.75
  np.testing.assert_array_equal(ids, [[1, 3, 2, 0]])
  np.testing.assert_array_equal(np.isfinite(values), [[True, True, False, False]])
  values, ids = decoding.truncate_logits(logits, top_k=3, top_p=0.7)  # of 0.5/0.9, 0.25/0.9: 0.56 < 0.7
  np.testing.assert_array_equal(np.isfinite(values), [[True, True, False]])


# --- config ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('changes,message', [
    (dict(top_p=1.5, strategy='sample'), r'generate\.top_p=1\.5: must be in \(0, 1\]'),
    (dict(top_p=0.0, strategy='sample'), r'generate\.top_p=0\.0: must be in \(0, 1\]'),
    (dict(temperature=0.0, strategy='sample'), r'generate\.temperature=0\.0: must be > 0'),
    (dict(top_k=-1, strategy='sample'), r'generate\.top_k=-1: must be an integer >= 0'),
    (dict(max_new_tokens=0), r'generate\.max_new_tokens=0: must be a positive integer'),
    (dict(num_beams=0, strategy='beam'), r'generate\.num_beams=0: must be a positive integer'),
    (dict(length_penalty=-0.5, strategy='beam'), r'generate\.length_penalty=-0\.5: must be >= 0'),
    (dict(eos_id=-1), r'generate\.eos_id=-1: must be a token id'),
    (dict(pad_id=1.5), r'generate\.pad_id=1\.5: must be a token id'),
    (dict(strategy='nucleus'), r"generate\.strategy='nucleus': unknown strategy; valid values are \['greedy'"),
    (dict(top_k=5), r'generate\.top_k=5: only used by strategy=sample, not greedy; set generate\.strategy=sample'),
    (dict(num_beams=4, strategy='sample'), r'generate\.num_beams=4: only used by strategy=beam'),
])
def test_bad_config_values_name_the_field(changes, message):
  with pytest.raises(model.ConfigError, match=message):
    GenerateConfig(**changes)


def test_config_from_dict():
  cfg = GenerateConfig.from_dict({'strategy': 'BEAM', 'num_beams': 4, 'length_penalty': 0.6})
  assert cfg.strategy is Strategy.BEAM and cfg.num_beams == 4
  assert GenerateConfig.from_dict(cfg.to_dict()) == cfg
  with pytest.raises(model.ConfigError, match=r"unknown field\(s\) \['beam_size'\]; valid fields are"):
    GenerateConfig.from_dict({'beam_size': 4})


def test_generate_rejects_what_it_cannot_decode():
  batch = {'input_ids': np.ones((2, 3), np.int32), 'attention_mask': np.array([[1, 1, 0], [0, 0, 0]])}
  with pytest.raises(ValueError, match=r'needs a model with a decoder and head=lm'):
    decoding.generate(model.build(TINY['bert']), {}, batch, GREEDY)
  with pytest.raises(ValueError, match=r'at least one real token; rows \[1\] have none'):
    decoding.generate(model.build(TINY['gpt2']), {}, batch, GREEDY)
  with pytest.raises(ValueError, match='needs an rng'):
    decoding.generate(model.build(TINY['gpt2']), {}, {'input_ids': batch['input_ids']},
                      GREEDY.replace(strategy='sample'))
  with pytest.raises(ValueError, match=r'must be right-padded .*; rows \[0\] are not'):
    decoding.generate(model.build(TINY['gpt2']), {},
                      {'input_ids': batch['input_ids'], 'attention_mask': [[0, 1, 1], [1, 0, 0]]}, GREEDY)
  with pytest.raises(ValueError, match=r'generate\.max_new_tokens=63: .* needs 65 positions but model\.max_len=64'):
    decoding.generate(model.build(TINY['gpt2']), {}, {'input_ids': batch['input_ids']},
                      GREEDY.replace(max_new_tokens=63))
  with pytest.raises(ValueError, match=r'generate\.top_k=500: must be <= model\.vocab_size=101'):
    decoding.generate(model.build(TINY['gpt2']), {}, batch, GREEDY.replace(strategy='sample', top_k=500))
