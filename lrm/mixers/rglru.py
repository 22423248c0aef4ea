"""``rglru``: Griffin's recurrent block (De et al. 2024, arXiv 2402.19427), the RG-LRU.

Two branches from the input, multiplied and projected out::

  g = GeLU(Linear_y(x))                                  # [B, L, E] the gate branch
  u = Conv(Linear_x(x))                                  # [B, L, E] causal depthwise, 4 taps
  r_t = sigmoid(W_a u_t + b_a), i_t = sigmoid(W_x u_t + b_x)   # recurrence and input gates
  a_t = sigmoid(lam) ** (c r_t)                          # c = 8, per channel
  h_t = a_t h_{t-1} + sqrt(1 - a_t**2) (i_t u_t)         # h_{-1} = 0
  out = Linear_out(g h)                                  # [B, L, D]

E is the recurrence width (``lru_width``, D by default). The gates are block-diagonal with N
blocks of H = E / N channels (``num_heads``; one block is a dense E x E gate). ``log a_t =
-c r_t softplus(-lam)``, so ``a_t`` never rounds to 1 through a ``sigmoid``, and ``1 - a_t**2``
is ``-expm1(2 log a_t)``; the square root's derivative is capped at 1000, as in
``recurrentgemma``, so a channel with a_t -> 1 (and padding, below) keeps finite gradients.

Initialisation (the paper; the values read from Google DeepMind's ``recurrentgemma``,
``jax/layers.py`` and ``modules.py``): ``a = sigmoid(lam)`` with ``a**2`` uniform in
``[0.9**2, 0.999**2]`` (uniform on the area of a ring); the projections and the gates normal
with variance 1 / fan-in (for the block-diagonal gates ``recurrentgemma``'s fan-in counts
every block, E, and so does this one); the conv normal with variance 0.01 / 4; biases 0.
Differences from ``recurrentgemma``'s layer: it resets the state at a document's first token
(``segment_pos == 0``) and then skips the ``sqrt(1 - a**2)`` factor there; here the state
starts at 0 and every token is normalised, as the paper writes the recurrence.

Padding (mask False): the conv reads zeros there, and the recurrence gets ``a = 1`` and input
0, so the state passes through unchanged and no padded token enters it (the outputs there are
the last real state's, finite). Bidirectional: a second conv and RG-LRU, with their own
weights, run over the reversed sequence (a padded tail comes first there, and leaves the
state at 0); the two states are summed before the gate.

Implementations of the linear recurrence ``h_t = a_t h_{t-1} + b_t`` (float32): ``scan``
(``lax.scan`` over L, the oracle) and ``associative`` (``lax.associative_scan``, O(log L)
depth). ``auto``: ``scan`` on CPU, measured faster there (fwd+bwd at B = 1, L = 4K, E = 256:
scan 5.9 ms, associative 14 ms, a chunked two-level scan 18 ms), ``associative`` on GPU and
TPU, where a scan over L is L dependent steps (reasoned, not measured).

Decoding (causal): the last K - 1 = 3 conv inputs and the state h ``[B, E]`` (float32),
whatever ``max_len``; ``prefill`` is the parallel forward plus that fill.

Letters follow the legend in ``base.py``; J is a gate's output channel within a block (H).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lrm.mixers import presets
from lrm.mixers.base import Mixer, check_int, target, zero_padded
from lrm.mixers.conv import depthwise_direct, fill_window, push_window, window_cache
from lrm.registry import register

F32 = jnp.float32
C = 8.0  # the exponent's constant: a_t = sigmoid(lam) ** (C r_t)
MIN_RAD, MAX_RAD = 0.9, 0.999  # a = sigmoid(lam) at initialisation
MAX_SQRT_GRAD = 1000.0  # the derivative of sqrt(1 - a**2) is capped here (recurrentgemma's)


# ---- kernels: h_t = a_t h_{t-1} + b_t over axis 1, h_{-1} = 0; a, b [B, L, E] float32 ---------


def scan_recurrence(a: jax.Array, b: jax.Array) -> jax.Array:
  """The sequential oracle: one ``lax.scan`` step per token."""

  def body(h, ab):
    h = ab[0] * h + ab[1]
    return h, h

  h0 = jnp.zeros((a.shape[0], a.shape[2]), F32)
  _, hs = jax.lax.scan(body, h0, (jnp.swapaxes(a, 0, 1), jnp.swapaxes(b, 0, 1)))  # [L, B, E]
  return jnp.swapaxes(hs, 0, 1)


def associative_recurrence(a: jax.Array, b: jax.Array) -> jax.Array:
  """The parallel form: ``(a1, b1) then (a2, b2) = (a2 a1, a2 b1 + b2)`` is associative."""

  def combine(first, second):
    return second[0] * first[0], second[0] * first[1] + second[1]

  return jax.lax.associative_scan(combine, (a, b), axis=1)[1]


KERNELS = {"scan": scan_recurrence, "associative": associative_recurrence}


@jax.custom_vjp
def sqrt_bounded(x: jax.Array) -> jax.Array:
  """``sqrt(x)`` whose derivative is at most ``MAX_SQRT_GRAD`` (finite at x = 0)."""
  return jnp.sqrt(x)


def _sqrt_fwd(x):
  return jnp.sqrt(x), x


def _sqrt_bwd(x, g):
  floor = 1.0 / (4.0 * MAX_SQRT_GRAD**2)  # d sqrt / dx = MAX_SQRT_GRAD at this x
  return (g * 0.5 * jax.lax.rsqrt(jnp.maximum(x, floor)),)


sqrt_bounded.defvjp(_sqrt_fwd, _sqrt_bwd)


def a_logit_init(key: jax.Array, shape: tuple[int, ...], dtype=F32) -> jax.Array:
  """``lam`` with ``a = sigmoid(lam)``, ``a**2`` uniform in ``[MIN_RAD**2, MAX_RAD**2]``."""
  a2 = jax.random.uniform(key, shape, F32, MIN_RAD**2, MAX_RAD**2)
  log_a = 0.5 * jnp.log(a2)
  return (-jnp.log(jnp.expm1(-log_a))).astype(dtype)  # logit(a) = -log(1/a - 1)


# ---- one direction: the conv and the RG-LRU ------------------------------------------------------


class RecurrentBranch(nnx.Module):
  """The x branch after ``Linear_x``, in one direction: causal conv, then the RG-LRU."""

  def __init__(self, width: int, *, num_heads: int, conv_width: int, rngs: nnx.Rngs):
    E, N, K = width, num_heads, conv_width
    H = E // N
    self.conv = nnx.Param(nnx.initializers.normal((0.01 / K) ** 0.5)(rngs.params(), (K, E)))
    self.conv_bias = nnx.Param(jnp.zeros((E,)))
    gate = nnx.initializers.normal(E**-0.5)  # fan-in E: every block counts (module docstring)
    self.gate_a = nnx.Param(gate(rngs.params(), (N, H, H)))  # recurrence gate r, [N, H, J]
    self.gate_a_bias = nnx.Param(jnp.zeros((N, H)))
    self.gate_x = nnx.Param(gate(rngs.params(), (N, H, H)))  # input gate i
    self.gate_x_bias = nnx.Param(jnp.zeros((N, H)))
    self.a_logit = nnx.Param(a_logit_init(rngs.params(), (E,)))  # lam: a = sigmoid(lam)

  def _gate(self, u: jax.Array, w: nnx.Param, bias: nnx.Param) -> jax.Array:
    """``sigmoid`` of a block-diagonal layer: ``u [..., E] -> [..., E]`` float32."""
    N, H, _ = w.shape
    blocks = u.reshape(*u.shape[:-1], N, H)  # [..., N, H]
    z = jnp.einsum("...NH,NHJ->...NJ", blocks, w[...].astype(F32)) + bias[...].astype(F32)
    return jax.nn.sigmoid(z).reshape(u.shape)

  def gates(self, u: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Conv outputs ``u [..., E]`` (float32) -> (``log a_t``, the input ``sqrt(1 - a_t**2)
    i_t u_t``), both ``[..., E]`` float32."""
    r = self._gate(u, self.gate_a, self.gate_a_bias)
    i = self._gate(u, self.gate_x, self.gate_x_bias)
    log_a = -C * r * jax.nn.softplus(-self.a_logit[...].astype(F32))  # log sigmoid(lam) ** (C r)
    return log_a, sqrt_bounded(-jnp.expm1(2.0 * log_a)) * (i * u)

  def conv_out(self, v: jax.Array) -> jax.Array:
    """``Linear_x`` outputs ``v [B, L, E]`` through the causal conv: float32 ``[B, L, E]``."""
    K = self.conv.shape[0]
    return depthwise_direct(v, self.conv[...], K - 1, 0, 1) + self.conv_bias[...].astype(F32)

  def __call__(self, v: jax.Array, mask: jax.Array | None, impl: str) -> jax.Array:
    """The states ``h [B, L, E]`` (float32) for ``v`` (zero at padded positions)."""
    log_a, b = self.gates(self.conv_out(v))
    if mask is not None:  # a = 1, input 0: the state passes padded positions unchanged
      log_a = jnp.where(mask[..., None], log_a, 0.0)
      b = jnp.where(mask[..., None], b, 0.0)
    return KERNELS[impl](jnp.exp(log_a), b)

  def step(self, window: jax.Array, h: jax.Array) -> jax.Array:
    """The next state from the conv's window ``[B, K, E]`` (oldest first) and ``h [B, E]``."""
    u = jnp.einsum("BKE,KE->BE", window.astype(F32), self.conv[...].astype(F32))
    log_a, b = self.gates(u + self.conv_bias[...].astype(F32))
    return jnp.exp(log_a) * h + b

  def flops(self, length: int, impl: str) -> int:
    """Conv, gates and recurrence over ``length`` tokens (elementwise ops count 1 each)."""
    L, (K, E), H = length, self.conv.shape, self.gate_a.shape[1]
    conv = 2 * K * L * E + L * E
    gates = 2 * (2 * L * E * H + 2 * L * E)  # two block-diagonal layers, biases, sigmoids
    # log a (2), a (1), 1 - a**2 = -expm1(2 log a) (3), sqrt (1), i u and the product (2)
    elementwise = 9 * L * E
    # the recurrence's multiply-add per token; the associative form combines about 2L pairs
    # (up and down sweeps) at 3 FLOPs each
    recurrence = 2 * L * E if impl == "scan" else 6 * L * E
    return int(conv + gates + elementwise + recurrence)


# ---- the mixer -----------------------------------------------------------------------------------


@register("mixer", "rglru")
class RGLRU(Mixer):
  """Griffin's recurrent block: ``[B, L, D] -> [B, L, D]`` (see module docstring).

  Args:
    dim: model width D.
    causal: one forward recurrence (else a forward and a reverse one, summed).
    num_heads: blocks N of the block-diagonal gates (E must be divisible by it).
    lru_width: recurrence width E (None: D).
    conv_width: taps of the causal depthwise conv before the RG-LRU.
    impl: "auto", "scan" (the sequential oracle) or "associative".
  """

  IMPLS = ("auto", "scan", "associative")

  def __init__(
    self,
    dim: int,
    *,
    causal: bool,
    rngs: nnx.Rngs,
    layer_idx: int = 0,
    num_heads: int = 1,
    lru_width: int | None = None,
    conv_width: int = 4,
    impl: str = "auto",
  ):
    super().__init__(dim, causal=causal, layer_idx=layer_idx, impl=impl)
    width = dim if lru_width is None else lru_width
    check_int("rglru", "lru_width", width, 1)
    check_int("rglru", "num_heads", num_heads, 1)
    check_int("rglru", "conv_width", conv_width, 1)
    if width % num_heads:
      raise ValueError(
        f"rglru: lru_width={width} is not divisible by num_heads={num_heads}; change one of them"
      )
    self.width, self.num_heads, self.conv_width = int(width), int(num_heads), int(conv_width)
    init = nnx.initializers.variance_scaling(1.0, "fan_in", "normal")  # variance 1 / fan-in
    zeros = nnx.initializers.zeros_init()
    linear = dict(kernel_init=init, bias_init=zeros, rngs=rngs)
    self.in_y = nnx.Linear(dim, width, **linear)  # the gate branch
    self.in_x = nnx.Linear(dim, width, **linear)  # the recurrent branch
    branch = dict(num_heads=num_heads, conv_width=conv_width, rngs=rngs)
    self.forward_branch = RecurrentBranch(width, **branch)
    self.reverse_branch = None if causal else RecurrentBranch(width, **branch)
    self.out = nnx.Linear(width, dim, **linear)

  def choose_impl(self, dtype: jnp.dtype = jnp.float32, length: int | None = None) -> str:
    """``auto``: the sequential scan on CPU, the associative scan elsewhere (module docstring)."""
    if self.requested_impl != "auto":
      return self.requested_impl
    return "scan" if target().platform == "cpu" else "associative"

  def states(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """The recurrence's states ``[B, L, E]`` (float32; both directions summed)."""
    impl = self.choose_impl(x.dtype, x.shape[1])
    v = zero_padded(self.in_x(x), mask)  # [B, L, E]; padded tokens feed the conv zeros
    h = self.forward_branch(v, mask, impl)
    if self.reverse_branch is not None:
      back = None if mask is None else mask[:, ::-1]
      h = h + self.reverse_branch(v[:, ::-1], back, impl)[:, ::-1]
    return h

  def _output(self, x: jax.Array, h: jax.Array) -> jax.Array:
    """The gate branch of ``x [..., D]`` times the states ``h [..., E]``, projected out."""
    return self.out((jax.nn.gelu(self.in_y(x)) * h).astype(x.dtype)).astype(x.dtype)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    return self._output(x, self.states(x, mask))

  # ---- decoding: the conv's last K - 1 inputs and the state, O(K E) whatever max_len ----

  def init_cache(self, batch: int, max_len: int, dtype=jnp.float32) -> dict[str, jax.Array]:
    if not self.causal:
      raise self.decode_error()
    window = window_cache(batch, self.conv_width - 1, (self.width,), dtype)
    return {**window, "h": jnp.zeros((batch, self.width), F32)}

  def step(
    self, x: jax.Array, cache: dict[str, jax.Array], pos: jax.Array
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    if not self.causal:
      raise self.decode_error()
    window, conv_cache = push_window({"window": cache["window"]}, self.in_x(x))  # [B, K, E]
    h = self.forward_branch.step(window, cache["h"])  # [B, E]
    return self._output(x, h), {**conv_cache, "h": h}

  def prefill(
    self, x: jax.Array, cache: dict[str, jax.Array]
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The parallel forward over the prompt ``x [B, P, D]``; the cache keeps its last state
    and the conv's last inputs."""
    if not self.causal:
      raise self.decode_error()
    h = self.states(x)  # [B, P, E]
    window = fill_window({"window": cache["window"]}, self.in_x(x))
    return self._output(x, h), {**window, "h": h[:, -1].astype(F32)}

  def flops(self, length: int, impl: str | None = None) -> int:
    """Forward FLOPs: projections, conv, gates, recurrence (per direction), gate and output
    (elementwise ops, GeLU included, count 1 each)."""
    L, D, E, impl = length, self.dim, self.width, impl or self.impl
    projections = 2 * (2 * L * D * E + L * E) + 2 * L * E * D + L * D
    gate = 2 * L * E  # GeLU and the product
    directions = 1 if self.reverse_branch is None else 2
    sum_ = 0 if directions == 1 else L * E
    return int(projections + gate + sum_ + directions * self.forward_branch.flops(L, impl))

  def algorithmic_flops(self, length: int) -> int:
    """The operator's own work (``lrm.analysis.counting``): the sequential recurrence."""
    return self.flops(length, impl="scan")


# The whole past (causal) or the whole sequence in one layer, whatever the window.
presets.register("rglru", lambda r: dict(name="rglru", num_heads=r.heads), windowed=False)
# Griffin's residual pattern: two recurrent blocks, then one local-attention block.
presets.register_stack("griffin", ("rglru", "rglru", "local"))
