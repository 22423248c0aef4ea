"""``ssm``: a selective state-space mixer in Mamba-2's SSD form (Dao & Gu 2024, "Transformers
are SSMs", arXiv 2405.21060).

One in-projection gives the gate z, the SSM input x, the shared input and output maps B and C
(one group: every head reads the same B, C) and the step sizes dt; a short causal depthwise
conv (4 taps, SiLU) runs over x, B and C together, as in Mamba-2::

  z, xBC, dt_raw = Linear_in(u)                          # [B, L, E], [B, L, E + 2M], [B, L, N]
  x, B, C = split(SiLU(Conv(xBC)))                       # x [B, L, N, H]; B, C [B, L, M]
  dt_t = softplus(dt_raw_t + dt_bias), a_t = exp(dt_t A) # per head; A = -exp(A_log) < 0
  h_t = a_t h_{t-1} + dt_t x_t B_t^T                     # h [B, N, H, M], h_{-1} = 0
  y_t = h_t C_t + D x_t                                  # [B, N, H] -> [B, E]
  out = Linear_out(RMSNorm(y SiLU(z)) * w)               # [B, L, D]

E = ``expand`` D (2 by default) is split into N heads (``num_heads``; None: heads of H = 64,
Mamba-2's ``headdim``, or one head when E is not a multiple of 64) of H = E / N channels (the
paper's P). M is the state size (``state_size``, the paper's N; 64 by default, between
Mamba-1's 16 and ``mamba_ssm``'s Mamba-2 default of 128: SSD's matmuls make a larger state
cheap, though its cost and the decoding cache grow as E M). The normalisation is Mamba-2's
gated RMSNorm (``norm_before_gate=False``: the gate multiplies before the norm, over all E
channels, eps 1e-5).

Initialisation (read from ``state-spaces/mamba``, ``mamba_ssm/modules/mamba2.py``): dt_bias
= softplus^-1(dt) with dt log-uniform in [1e-3, 1e-1] (floored at 1e-4); A_log = log of
uniform [1, 16]; D = 1 (one per head); the norm's weight 1; the in/out projections (no bias)
and the conv (with bias) as PyTorch's defaults, uniform in +-1/sqrt(fan-in) (the conv's
fan-in is its K taps). ``mamba_ssm``'s language model additionally rescales out_proj by
1/sqrt(layers) and exempts A_log, D and dt_bias from weight decay; neither is done here (the
encoder and trainer own those choices).

The SSD kernel (float32; x here is ``dt x``, the decay ``log a = dt A``), two forms:

``scan``: ``lax.scan`` over the L tokens, the recurrence above as written (the oracle).

``chunked``: the sequence is cut into W chunks of T tokens (``chunk_size``, the paper's Q);
inside a chunk the output is quadratic, attention-like: ``y_t = sum_{s <= t} (C_t . B_s)
exp(segsum(log a)_{t s}) x_s`` with the segment-sum decay mask ``segsum_{t s} = sum_{s < k <=
t} log a_k`` (built by a cumulative sum over a masked ``[T, S]`` copy, so no difference of two
long cumulative sums is taken); each chunk's own contribution to its final state is one
matmul, a ``lax.scan`` over the W chunk states carries the state across chunks, and the state
entering a chunk reaches its outputs decayed by ``exp(cumsum log a)``. A length that is not a
multiple of T is padded inside the kernel with ``log a = 0`` (a = 1) and input 0, which leaves
the state unchanged. Cost O(L T (M + E) + L E M), all matmuls.

``auto``: ``chunked`` on every platform. On CPU it measured faster: fwd+bwd of the whole
block, B = 1, L = 4096, D = 256 (E = 512, 8 heads, M = 64, T = 64), ``timeit`` best of 5, two
runs on the shared 2-core host under a load of about 8: chunked 1016 / 1353 ms, scan 2398 /
2838 ms (the SSD kernel alone: chunked 0.29-0.41 s, scan 1.9 s; at M = 16 the block takes
chunked 0.84 s, scan 1.25 s; T = 128 was as fast as 64, T = 256 slower). Most of the block's
time is its projections (about 10 GFLOP fwd+bwd at this size). On GPU and TPU the chunked
form is matmuls for the tensor cores / MXU while the scan is L dependent steps (reasoned, not
measured).

Padding (mask False): the conv reads zeros there and dt = 0, so a = 1 and the input is 0: the
state passes padded positions unchanged (their outputs are finite). Bidirectional: a second
conv and SSM (its own conv, dt_bias, A_log, D) over the reversed sequence, fed by the same
in-projection; its padded tail comes first there and leaves its state at 0. The two
directions' ``y`` (each with its own D skip, so the current token is counted by both) are
summed before the gated norm, as ``rglru`` sums its two states.

Decoding (causal): the conv's last K - 1 = 3 inputs of xBC ``[B, 3, E + 2M]`` and the state h
``[B, N, H, M]`` (float32), whatever ``max_len``; ``prefill`` is the parallel forward plus
that fill.

Letters follow the legend in ``base.py``; here also M, the state size, and within a chunk T
(its tokens, as queries) and S (the same tokens, as keys).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from lrm.mixers import presets
from lrm.mixers.base import Mixer, check_int, target, zero_padded
from lrm.mixers.conv import depthwise_direct, fill_window, push_window, window_cache
from lrm.registry import register

F32 = jnp.float32
HEAD_DIM = 64  # Mamba-2's default head dim, used when num_heads is None
DT_MIN, DT_MAX, DT_FLOOR = 1e-3, 1e-1, 1e-4  # dt at initialisation: log-uniform, floored
A_RANGE = (1.0, 16.0)  # -A at initialisation: uniform
NORM_EPS = 1e-5
# ``auto`` per platform: CPU measured (module docstring); any other platform gets the chunked
# kernel's matmuls (reasoned, not measured)
AUTO_IMPL = {"cpu": "chunked"}


# ---- kernels: x [B, L, N, H] (dt x), log_a [B, L, N], b, c [B, L, M], all float32 ------------
# Both return (y [B, L, N, H], the state after the last token h [B, N, H, M]).


def scan_ssd(
  x: jax.Array, log_a: jax.Array, b: jax.Array, c: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """The sequential oracle: ``h_t = a_t h_{t-1} + x_t b_t^T``, ``y_t = h_t c_t``."""

  def body(h, inputs):
    x_t, la_t, b_t, c_t = inputs  # [B, N, H], [B, N], [B, M], [B, M]
    h = jnp.exp(la_t)[..., None, None] * h + x_t[..., None] * b_t[:, None, None, :]
    return h, jnp.einsum("BNHM,BM->BNH", h, c_t)

  Bsz, _, N, H = x.shape
  h0 = jnp.zeros((Bsz, N, H, b.shape[-1]), F32)
  seq = tuple(jnp.swapaxes(t, 0, 1) for t in (x, log_a, b, c))  # L first
  h, ys = jax.lax.scan(body, h0, seq)  # ys [L, B, N, H]
  return jnp.swapaxes(ys, 0, 1), h


def segsum(log_a: jax.Array) -> jax.Array:
  """``log_a [..., T] -> [..., T, S]``: ``sum_{s < k <= t} log_a_k`` for s <= t, 0 above the
  diagonal (masked by the caller). A cumulative sum over a masked copy, never a difference."""
  T = log_a.shape[-1]
  below = jnp.tril(jnp.ones((T, T), bool), -1)  # t > s
  rows = jnp.where(below, log_a[..., :, None], 0.0)  # [..., T, S]: log_a_t where t > s
  return jnp.cumsum(rows, axis=-2)


def chunked_ssd(
  x: jax.Array, log_a: jax.Array, b: jax.Array, c: jax.Array, chunk: int = 64
) -> tuple[jax.Array, jax.Array]:
  """SSD chunk-wise (module docstring): quadratic inside chunks of T = ``chunk`` tokens (at
  most L), a recurrence over the W chunk states."""
  Bsz, L, N, H = x.shape
  M = b.shape[-1]
  T = min(chunk, L)
  W = -(-L // T)
  pad = [(0, 0), (0, W * T - L)]  # a = 1 (log a = 0) and input 0: the state is unchanged
  x = jnp.pad(x, pad + [(0, 0)] * 2).reshape(Bsz, W, T, N, H)
  b = jnp.pad(b, pad + [(0, 0)]).reshape(Bsz, W, T, M)
  c = jnp.pad(c, pad + [(0, 0)]).reshape(Bsz, W, T, M)
  la = jnp.pad(log_a, pad + [(0, 0)]).reshape(Bsz, W, T, N).transpose(0, 1, 3, 2)  # [B, W, N, T]
  cum = jnp.cumsum(la, axis=-1)  # [B, W, N, T]

  # inside each chunk: the attention-like form with the decay mask
  causal = jnp.tril(jnp.ones((T, T), bool))
  decay = jnp.where(causal, jnp.exp(jnp.where(causal, segsum(la), 0.0)), 0.0)  # [B, W, N, T, S]
  scores = jnp.einsum("BWTM,BWSM->BWTS", c, b)[:, :, None] * decay  # [B, W, N, T, S]
  y_diag = jnp.einsum("BWNTS,BWSNH->BWTNH", scores, x)

  # each chunk's inputs, decayed to its end: its own part of the final state
  to_end = jnp.exp(cum[..., -1:] - cum)  # [B, W, N, S]
  own = jnp.einsum("BWSM,BWNS,BWSNH->BWNHM", b, to_end, x)  # [B, W, N, H, M]

  # across chunks: h_w = decay_w h_{w-1} + own_w; emit the state entering each chunk
  def body(h, inputs):
    own_w, decay_w = inputs  # [B, N, H, M], [B, N]
    return decay_w[..., None, None] * h + own_w, h

  h0 = jnp.zeros((Bsz, N, H, M), F32)
  chunk_decay = jnp.exp(cum[..., -1])  # [B, W, N]
  h, entering = jax.lax.scan(
    body, h0, (jnp.swapaxes(own, 0, 1), jnp.swapaxes(chunk_decay, 0, 1))
  )  # entering [W, B, N, H, M]
  y_off = jnp.einsum(
    "BWTM,WBNHM,BWNT->BWTNH", c, entering, jnp.exp(cum)
  )  # the entering state, decayed to each token
  y = (y_diag + y_off).reshape(Bsz, W * T, N, H)[:, :L]
  return y, h


def chunked_flops(length: int, chunk: int, heads: int, width: int, state: int) -> int:
  """``chunked_ssd``'s FLOPs on ``length`` tokens (padded to whole chunks), E = ``width``
  channels in N = ``heads`` heads, M = ``state``; elementwise ops count 1 each."""
  T = min(chunk, length)
  W = -(-length // T)
  Lp, N, E, M = W * T, heads, width, state
  mask = 3 * Lp * T * N  # segsum's cumulative sum, exp, and the product with the scores
  scores = 2 * Lp * T * M + 2 * Lp * T * E  # C B^T, and the scores times x
  own = 2 * Lp * E * M + Lp * E + 2 * Lp * N  # decayed inputs into chunk states (and exps)
  across = W * (2 * E * M + N)  # the recurrence over chunk states
  entering = 2 * Lp * E * M + Lp * E + Lp * N  # the entering state out through C, decayed
  return int(mask + scores + own + across + entering + Lp * E + Lp * N)  # + the sum, cumsum


def scan_flops(length: int, heads: int, width: int, state: int) -> int:
  """``scan_ssd``'s FLOPs: per token the decay (exp), the update a h + x b^T (3 E M), C (2 E M)."""
  return int(length * (heads + 5 * width * state))


def dt_bias_init(key: jax.Array, shape: tuple[int, ...], dtype=F32) -> jax.Array:
  """softplus^-1 of dt log-uniform in ``[DT_MIN, DT_MAX]`` (floored at ``DT_FLOOR``)."""
  u = jax.random.uniform(key, shape, F32)
  dt = jnp.maximum(jnp.exp(u * (math.log(DT_MAX) - math.log(DT_MIN)) + math.log(DT_MIN)), DT_FLOOR)
  return (dt + jnp.log(-jnp.expm1(-dt))).astype(dtype)


def a_log_init(key: jax.Array, shape: tuple[int, ...], dtype=F32) -> jax.Array:
  """``A_log = log(-A)`` with ``-A`` uniform in ``A_RANGE``."""
  return jnp.log(jax.random.uniform(key, shape, F32, *A_RANGE)).astype(dtype)


def fan_in_uniform(fan_in: int) -> nnx.Initializer:
  """PyTorch's default for Linear and Conv1d weights and biases: uniform in +-1/sqrt(fan-in)."""
  bound = fan_in**-0.5
  return lambda key, shape, dtype=F32: jax.random.uniform(key, shape, dtype, -bound, bound)


# ---- one direction: conv over xBC, then the SSM -------------------------------------------------


class SSMBranch(nnx.Module):
  """One direction after the in-projection: the causal conv over xBC, SiLU, and the SSD with its
  own dt_bias, A_log and D."""

  def __init__(
    self, width: int, *, num_heads: int, state_size: int, conv_width: int, rngs: nnx.Rngs
  ):
    E, N, M, K = width, num_heads, state_size, conv_width
    init = fan_in_uniform(K)  # depthwise: each channel's fan-in is its K taps
    self.conv = nnx.Param(init(rngs.params(), (K, E + 2 * M)))
    self.conv_bias = nnx.Param(init(rngs.params(), (E + 2 * M,)))
    self.dt_bias = nnx.Param(dt_bias_init(rngs.params(), (N,)))
    self.a_log = nnx.Param(a_log_init(rngs.params(), (N,)))
    self.skip = nnx.Param(jnp.ones((N,)))  # D
    self.width, self.num_heads, self.state_size = E, N, M

  def inputs(
    self, u: jax.Array, dt_raw: jax.Array
  ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
    """Conv outputs ``u [..., E + 2M]`` and ``dt_raw [..., N]`` (float32) -> x ``[..., N, H]``,
    dt and ``log a`` ``[..., N]``, B and C ``[..., M]``."""
    E, N, M = self.width, self.num_heads, self.state_size
    u = jax.nn.silu(u)
    x = u[..., :E].reshape(*u.shape[:-1], N, E // N)
    b, c = u[..., E : E + M], u[..., E + M :]
    dt = jax.nn.softplus(dt_raw + self.dt_bias[...].astype(F32))
    log_a = -dt * jnp.exp(self.a_log[...].astype(F32))  # dt A, A = -exp(A_log)
    return x, dt, log_a, b, c

  def conv_out(self, v: jax.Array) -> jax.Array:
    """xBC ``v [B, L, E + 2M]`` through the causal conv (before SiLU): float32."""
    K = self.conv.shape[0]
    return depthwise_direct(v, self.conv[...], K - 1, 0, 1) + self.conv_bias[...].astype(F32)

  def _y(self, ssd: jax.Array, x: jax.Array) -> jax.Array:
    """The SSD's output plus the skip, ``[..., N, H] -> [..., E]``."""
    y = ssd + self.skip[...].astype(F32)[:, None] * x
    return y.reshape(*y.shape[:-2], self.width)

  def __call__(
    self, v: jax.Array, dt_raw: jax.Array, mask: jax.Array | None, impl: str, chunk: int
  ) -> tuple[jax.Array, jax.Array]:
    """xBC ``v [B, L, E + 2M]`` (zero at padded positions), ``dt_raw [B, L, N]`` -> (``y [B, L,
    E]``, the last state ``[B, N, H, M]``), float32."""
    x, dt, log_a, b, c = self.inputs(self.conv_out(v), dt_raw.astype(F32))
    if mask is not None:  # dt = 0: a = 1 and input 0, the state passes padded positions
      dt = jnp.where(mask[..., None], dt, 0.0)
      log_a = jnp.where(mask[..., None], log_a, 0.0)
    xdt = x * dt[..., None]  # [B, L, N, H]
    if impl == "scan":
      ssd, h = scan_ssd(xdt, log_a, b, c)
    else:
      ssd, h = chunked_ssd(xdt, log_a, b, c, chunk)
    return self._y(ssd, x), h

  def step(self, window: jax.Array, dt_raw: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The conv's window ``[B, K, E + 2M]`` (oldest first), ``dt_raw [B, N]`` and the state
    ``h [B, N, H, M]`` -> (``y [B, E]``, the next state), float32."""
    u = jnp.einsum("BKE,KE->BE", window.astype(F32), self.conv[...].astype(F32))
    x, dt, log_a, b, c = self.inputs(u + self.conv_bias[...].astype(F32), dt_raw.astype(F32))
    h = jnp.exp(log_a)[..., None, None] * h + (x * dt[..., None])[..., None] * b[:, None, None]
    return self._y(jnp.einsum("BNHM,BM->BNH", h, c), x), h

  def flops(self, length: int, impl: str, chunk: int) -> int:
    """Conv (+ SiLU), dt and the decay, the SSD and the skip over ``length`` tokens."""
    L, (K, V), N, E, M = length, self.conv.shape, self.num_heads, self.width, self.state_size
    conv = 2 * K * L * V + 2 * L * V  # taps, bias, SiLU
    dt = 5 * L * N + L * E  # bias, softplus, exp(A_log), dt A (2 per head); dt x
    ssd = scan_flops(L, N, E, M) if impl == "scan" else chunked_flops(L, chunk, N, E, M)
    return int(conv + dt + ssd + 2 * L * E)


# ---- the mixer -----------------------------------------------------------------------------------


@register("mixer", "ssm")
class SSM(Mixer):
  """Mamba-2's block, an SSD selective state-space mixer: ``[B, L, D] -> [B, L, D]`` (see the
  module docstring).

  Args:
    dim: model width D.
    causal: one forward SSM (else a forward and a reverse one, summed before the norm).
    num_heads: heads N of the SSM (E must be divisible by it); None: heads of 64 channels
      (Mamba-2's head dim) when E is a multiple of 64, else one head.
    state_size: the state size M per head channel (the paper's N).
    expand: E = expand * D channels inside the block.
    conv_width: taps K of the causal depthwise conv over x, B, C.
    chunk_size: tokens T per chunk of the chunked kernel (the paper's Q).
    impl: "auto", "scan" (the sequential oracle) or "chunked".
  """

  IMPLS = ("auto", "scan", "chunked")

  def __init__(
    self,
    dim: int,
    *,
    causal: bool,
    rngs: nnx.Rngs,
    layer_idx: int = 0,
    num_heads: int | None = None,
    state_size: int = 64,
    expand: int = 2,
    conv_width: int = 4,
    chunk_size: int = 64,
    impl: str = "auto",
  ):
    super().__init__(dim, causal=causal, layer_idx=layer_idx, impl=impl)
    for option, value in [
      ("state_size", state_size),
      ("expand", expand),
      ("conv_width", conv_width),
      ("chunk_size", chunk_size),
    ]:
      check_int("ssm", option, value, 1)
    E = int(expand) * self.dim
    if num_heads is None:
      num_heads = E // HEAD_DIM if E % HEAD_DIM == 0 else 1
    check_int("ssm", "num_heads", num_heads, 1)
    if E % num_heads:
      raise ValueError(
        f"ssm: expand * dim = {E} is not divisible by num_heads={num_heads}; change one of them"
      )
    self.width, self.num_heads, self.head_dim = E, int(num_heads), E // int(num_heads)
    self.state_size, self.conv_width, self.chunk_size = (
      int(state_size),
      int(conv_width),
      int(chunk_size),
    )
    N, M = self.num_heads, self.state_size
    # the in-projection's outputs, in order: z [E], xBC [E + 2M], dt [N] (Mamba-2's order)
    self.in_proj = nnx.Linear(
      dim, 2 * E + 2 * M + N, use_bias=False, kernel_init=fan_in_uniform(dim), rngs=rngs
    )
    branch = dict(num_heads=N, state_size=M, conv_width=self.conv_width, rngs=rngs)
    self.forward_branch = SSMBranch(E, **branch)
    self.reverse_branch = None if causal else SSMBranch(E, **branch)
    self.norm_weight = nnx.Param(jnp.ones((E,)))
    self.out = nnx.Linear(E, dim, use_bias=False, kernel_init=fan_in_uniform(E), rngs=rngs)

  def choose_impl(self, dtype: jnp.dtype = jnp.float32, length: int | None = None) -> str:
    """``auto``: the chunked kernel on every platform ``target()`` may name: measured faster
    on CPU, and matmuls for GPU and TPU (module docstring)."""
    if self.requested_impl != "auto":
      return self.requested_impl
    return AUTO_IMPL.get(target().platform, "chunked")

  def _split(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``x [..., D]`` -> z ``[..., E]``, xBC ``[..., E + 2M]``, dt_raw ``[..., N]``."""
    p = self.in_proj(x)
    E, M = self.width, self.state_size
    return p[..., :E], p[..., E : 2 * E + 2 * M], p[..., 2 * E + 2 * M :]

  def states(
    self, x: jax.Array, mask: jax.Array | None = None
  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(z ``[B, L, E]``, y ``[B, L, E]`` float32 before the gated norm, both directions
    summed; the forward SSM's last state ``[B, N, H, M]``)."""
    impl = self.choose_impl(x.dtype, x.shape[1])
    z, v, dt_raw = self._split(x)
    v = zero_padded(v, mask)  # padded tokens feed the conv zeros
    y, h = self.forward_branch(v, dt_raw, mask, impl, self.chunk_size)
    if self.reverse_branch is not None:
      back = None if mask is None else mask[:, ::-1]
      y_rev, _ = self.reverse_branch(v[:, ::-1], dt_raw[:, ::-1], back, impl, self.chunk_size)
      y = y + y_rev[:, ::-1]
    return z, y, h

  def _output(self, x: jax.Array, z: jax.Array, y: jax.Array) -> jax.Array:
    """Gated RMSNorm (the gate before the norm, as Mamba-2) of ``y [..., E]``, projected out."""
    g = y * jax.nn.silu(z.astype(F32))
    g = g * jax.lax.rsqrt(jnp.mean(g * g, axis=-1, keepdims=True) + NORM_EPS)
    g = g * self.norm_weight[...].astype(F32)
    return self.out(g.astype(x.dtype)).astype(x.dtype)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    z, y, _ = self.states(x, mask)
    return self._output(x, z, y)

  # ---- decoding: the conv's last K - 1 inputs and the state, whatever max_len ----

  def init_cache(self, batch: int, max_len: int, dtype=jnp.float32) -> dict[str, jax.Array]:
    if not self.causal:
      raise self.decode_error()
    V = self.width + 2 * self.state_size
    window = window_cache(batch, self.conv_width - 1, (V,), dtype)
    h = jnp.zeros((batch, self.num_heads, self.head_dim, self.state_size), F32)
    return {**window, "h": h}

  def step(
    self, x: jax.Array, cache: dict[str, jax.Array], pos: jax.Array
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    if not self.causal:
      raise self.decode_error()
    z, v, dt_raw = self._split(x)  # [B, E], [B, E + 2M], [B, N]
    window, conv_cache = push_window({"window": cache["window"]}, v)  # [B, K, E + 2M]
    y, h = self.forward_branch.step(window, dt_raw, cache["h"])
    return self._output(x, z, y), {**conv_cache, "h": h}

  def prefill(
    self, x: jax.Array, cache: dict[str, jax.Array]
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The parallel forward over the prompt ``x [B, P, D]``; the cache keeps the SSM's last
    state and the conv's last inputs."""
    if not self.causal:
      raise self.decode_error()
    z, y, h = self.states(x)
    window = fill_window({"window": cache["window"]}, self._split(x)[1])
    return self._output(x, z, y), {**window, "h": h.astype(F32)}

  def flops(self, length: int, impl: str | None = None) -> int:
    """Forward FLOPs: projections, conv, SSD and skip (per direction), gated norm, output
    (elementwise ops count 1 each)."""
    L, D, E, impl = length, self.dim, self.width, impl or self.impl
    projections = 2 * L * D * self.in_proj.out_features + 2 * L * E * D
    norm = 2 * L * E + 5 * L * E  # SiLU(z) and the gate; squares, mean, rsqrt, scale, weight
    directions = 1 if self.reverse_branch is None else 2
    sum_ = 0 if directions == 1 else L * E
    branch = self.forward_branch.flops(L, impl, self.chunk_size)
    return int(projections + norm + sum_ + directions * branch)

  def algorithmic_flops(self, length: int) -> int:
    """The operator's own work (``lrm.analysis.counting``): the sequential recurrence."""
    return self.flops(length, impl="scan")


# The whole past (causal) or the whole sequence in one layer, whatever the window.
presets.register("ssm", lambda r: dict(name="ssm", num_heads=r.heads), windowed=False)
# Samba (Ren et al. 2024, arXiv 2406.07522): a Mamba layer, then sliding-window attention (its
# MLPs are the encoder blocks' own).
presets.register_stack("samba", ("ssm", "local"))
