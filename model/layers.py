"""Leaf layers: dense projections, norms, feed-forward and embeddings, all with logical axis names.

Leaf modules take explicit typed fields, never the whole ModelConfig, so each reads on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype
from jax import lax

from model import partitioning as P
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
    contract = (tuple(range(x.ndim - self.num_in, x.ndim)), tuple(range(self.num_in)))
    y = lax.dot_general(x, kernel, (contract, ((), ())))
    return y if bias is None else y + bias


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
    h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
    return dense(x.shape[-1], (P.MLP, P.EMBED), name='wo', **kw)(h)


def embed(num: int, features: int, names: tuple[str, str], *, std: float, dtype: Dtype, param_dtype: Dtype,
          name: str) -> nn.Embed:
  return nn.Embed(num_embeddings=num, features=features, dtype=dtype, param_dtype=param_dtype,
                  embedding_init=partitioned(nn.initializers.normal(std), names), name=name)
