"""Leaf layers: dense projections, norms, feed-forward and embeddings, all with logical axis names.

Leaf modules take explicit typed fields, never the whole ModelConfig, so each reads on its own.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype
from jax import lax

from model import partitioning as P
from model import random_bits
from model.config import Activation, Norm

Dtype = jnp.dtype | str
Initializer = jax.nn.initializers.Initializer


def partitioned(init: Initializer, names: Sequence[str | None]) -> Initializer:
  return nn.with_logical_partitioning(init, tuple(names))


class DenseGeneral(nn.Module):
  """y = x . kernel (+ bias), contracting x's trailing `num_in` axes with the kernel's leading ones.

  Unlike nn.DenseGeneral, the kernel is created at its full rank (e.g. (embed, heads, kv)), so its logical
  names always match its shape: flax's DenseGeneral initialises a flat 2-D kernel and reshapes it, which
  breaks logical partitioning under active mesh rules (flax issue 3676)."""

  features: tuple[int, ...]
  names: tuple[str | None, ...]  # kernel axes: input axes, then output axes
  num_in: int
  use_bias: bool
  std: float
  dtype: Dtype
  param_dtype: Dtype
  bias_grad: bool = True  # False: the bias is applied but takes no gradient (a key bias, see attention.py)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    in_shape = x.shape[x.ndim - self.num_in:]
    kernel = self.param('kernel', partitioned(nn.initializers.normal(self.std), self.names),
                        in_shape + self.features, self.param_dtype)
    bias = None
    if self.use_bias:
      bias = self.param('bias', partitioned(nn.initializers.zeros_init(), self.names[self.num_in:]),
                        self.features, self.param_dtype)
      if not self.bias_grad:
        bias = lax.stop_gradient(bias)
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = _matmul(x, kernel, self.num_in)
    return y if bias is None else y + bias


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul(x: jax.Array, kernel: jax.Array, num_in: int) -> jax.Array:
  """x's trailing num_in axes contracted with kernel's leading ones, as one 2-D product."""
  return _matmul_fwd(x, kernel, num_in)[0]


def _as_2d(x, kernel, num_in):
  inner = math.prod(kernel.shape[:num_in])
  return x.reshape(-1, inner), kernel.reshape(inner, -1)


def _matmul_fwd(x, kernel, num_in):
  x2, k2 = _as_2d(x, kernel, num_in)
  y = (x2 @ k2).reshape(x.shape[:x.ndim - num_in] + kernel.shape[num_in:])
  return y, (x, kernel)


def _matmul_bwd(num_in, residuals, g):
  x, kernel = residuals
  x2, k2 = _as_2d(x, kernel, num_in)
  g2 = g.reshape(x2.shape[0], k2.shape[1])
  # x2.T @ g2 as written, a transpose then a plain product: XLA's CPU backend otherwise contracts over the
  # rows in a slower kernel (a third of a feed-forward's backward pass, bench/RESULTS.md).
  return (g2 @ k2.T).reshape(x.shape), (x2.T @ g2).reshape(kernel.shape)


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def dense(features: int | tuple[int, ...], names: tuple[str | None, ...], *, axis: int | tuple[int, ...] = -1,
          use_bias: bool, std: float, dtype: Dtype, param_dtype: Dtype, name: str,
          bias_grad: bool = True) -> DenseGeneral:
  """A dense layer over x's trailing `axis` (-1, or (-2, -1)) whose kernel carries `names` (input axes
  first) and whose bias the output ones; `bias_grad=False` stops the bias's gradient."""
  features = (features,) if isinstance(features, int) else tuple(features)
  num_in = 1 if isinstance(axis, int) else len(axis)
  return DenseGeneral(features=features, names=tuple(names), num_in=num_in, use_bias=use_bias, std=std,
                      dtype=dtype, param_dtype=param_dtype, name=name, bias_grad=bias_grad)


def norm(kind: Norm, *, eps: float, use_bias: bool, dtype: Dtype, param_dtype: Dtype, name: str) -> nn.Module:
  """LayerNorm or RMSNorm over the last (embed) axis; statistics are computed in float32."""
  scale_init = partitioned(nn.initializers.ones_init(), (P.EMBED,))
  match kind:
    case Norm.LAYER:
      # use_fast_variance=False: E[(x-mean)^2] as the references compute it; E[x^2]-mean^2 cancels badly.
      return nn.LayerNorm(epsilon=eps, use_bias=use_bias, use_fast_variance=False, dtype=dtype,
                          param_dtype=param_dtype, scale_init=scale_init,
                          bias_init=partitioned(nn.initializers.zeros_init(), (P.EMBED,)), name=name)
    case Norm.RMS:
      return nn.RMSNorm(epsilon=eps, dtype=dtype, param_dtype=param_dtype, scale_init=scale_init, name=name)
  raise ValueError(f'unknown norm {kind}')


_UNIT = 1 << 16  # dropout draws 16-bit uniforms: two per 32-bit word of the PRNG


def dropout_keep(rng: jax.Array, rate: float, shape: tuple[int, ...]) -> tuple[jax.Array, float]:
  """A keep mask of `shape` (True with probability 1 - rate, to 2^-16) and the scale that keeps E[x] exact.

  Two masks per 32-bit word: jax.random.bernoulli spends a word (a threefry evaluation) per element, which was
  half of a CPU step's dropout time (2M attention probabilities: 15.2 ms against 7.1 ms); the words come from
  `random_bits.words`, jax.random.bits' words computed faster on the CPU. The words are drawn
  along the last axis, so a mask of an array sharded on its leading axes is drawn where its shards are.
  """
  last = shape[-1] if shape else 1
  words = random_bits.words(rng, tuple(shape[:-1]) + ((last + 1) // 2,))
  threshold = round((1.0 - rate) * _UNIT)
  # Compared before they are joined: XLA's CPU backend does not fuse a concatenate into its consumer, and
  # joining booleans moves a quarter of the bytes of joining the 32-bit halves (9.3 -> 5.7 ms per 2M masks).
  keep = jnp.concatenate([(words & 0xFFFF) < threshold, (words >> 16) < threshold], axis=-1)
  return keep[..., :last].reshape(shape), _UNIT / threshold


def dropout(x: jax.Array, rate: float, rng: jax.Array) -> jax.Array:
  """Inverted dropout of x at `rate` (see `dropout_keep`)."""
  with jax.named_scope('dropout'):  # names its ops in profiles (bench/train_throughput.py --profile)
    keep, scale = dropout_keep(rng, rate, x.shape)
    return jnp.where(keep, x * jnp.asarray(scale, x.dtype), jnp.zeros((), x.dtype))


class Dropout(nn.Module):
  """nn.Dropout's interface with `dropout`'s masks (the 'dropout' RNG stream)."""

  rate: float

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return x
    return dropout(x, self.rate, self.make_rng('dropout'))


def activation_fn(kind: Activation):
  match kind:
    case Activation.RELU:
      return nn.relu
    case Activation.GELU:
      return lambda x: nn.gelu(x, approximate=False)
    case Activation.GELU_TANH:
      return lambda x: nn.gelu(x, approximate=True)
    case Activation.SILU:
      return nn.silu
    case Activation.TANH:
      return jnp.tanh
  raise ValueError(f'unknown activation {kind}')


class FeedForward(nn.Module):
  """Position-wise MLP: wo(act(wi x)), or gated wo(act(wi_0 x) * wi_1 x) (T5 v1.1 gated-GELU, SwiGLU)."""

  d_ff: int
  activation: Activation
  gated: bool
  use_bias: bool
  dropout_rate: float
  init_std: float
  dtype: Dtype
  param_dtype: Dtype

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    """x: (B, T, D) -> (B, T, D)."""
    kw = dict(use_bias=self.use_bias, std=self.init_std, dtype=self.dtype, param_dtype=self.param_dtype)
    act = activation_fn(self.activation)
    if self.gated:
      h = act(dense(self.d_ff, (P.EMBED, P.MLP), name='wi_0', **kw)(x))
      h = h * dense(self.d_ff, (P.EMBED, P.MLP), name='wi_1', **kw)(x)
    else:
      h = act(dense(self.d_ff, (P.EMBED, P.MLP), name='wi', **kw)(x))
    h = nn.with_logical_constraint(h, (P.BATCH, P.LENGTH, P.MLP))
    h = Dropout(self.dropout_rate)(h, deterministic=deterministic)
    return dense(x.shape[-1], (P.MLP, P.EMBED), name='wo', **kw)(h)


def embed(num: int, features: int, names: tuple[str, str], *, std: float, dtype: Dtype, param_dtype: Dtype,
          name: str) -> nn.Embed:
  return nn.Embed(num_embeddings=num, features=features, dtype=dtype, param_dtype=param_dtype,
                  embedding_init=partitioned(nn.initializers.normal(std), names), name=name)


class PatchEmbed(nn.Module):
  """ViT's input: an image cut into non-overlapping patches, each flattened and projected (one dense layer, which is
  HF's Conv2d of kernel = stride = patch_size), after a learned [CLS] token. Positions are the stack's."""

  patch_size: int
  num_channels: int
  features: int
  use_bias: bool
  std: float
  dtype: Dtype
  param_dtype: Dtype

  @nn.compact
  def __call__(self, pixel_values: jax.Array) -> jax.Array:
    """pixel_values: (B, C, H, W), HF's layout -> (B, 1 + (H/p)(W/p), features): [CLS], then patches row-major."""
    batch, channels, height, width = pixel_values.shape
    p = self.patch_size
    x = pixel_values.reshape(batch, channels, height // p, p, width // p, p)
    x = jnp.transpose(x, (0, 2, 4, 1, 3, 5))  # (B, H/p, W/p, C, p, p): a patch's pixels in the kernel's order
    # The kernel (C, p, p, features) is the Conv2d weight (features, C, p, p) with its output axis last.
    x = dense(self.features, (None, None, None, P.EMBED), axis=(-3, -2, -1), use_bias=self.use_bias, std=self.std,
              dtype=self.dtype, param_dtype=self.param_dtype, name='proj')(x)
    x = x.reshape(batch, -1, self.features)  # (B, N, D)
    cls = self.param('cls_token', partitioned(nn.initializers.normal(self.std), (P.EMBED,)), (self.features,),
                     self.param_dtype)
    cls = jnp.broadcast_to(cls.astype(x.dtype), (batch, 1, self.features))
    return jnp.concatenate([cls, x], axis=1)
