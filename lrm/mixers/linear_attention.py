"""``linear_attention``: Based's linear attention (Arora et al. 2024, arXiv 2402.18668).

Per head n, queries and keys are projected to a small feature dimension M = d'
(``feature_dim``, 16 as Based), values to the head dim H = D / N, all without biases (as
Based), and mapped by the second-order Taylor feature map of ``exp(q.k / sqrt(M))``::

  phi(x) = [1, x / M**(1/4), vec(x outer x) / (sqrt(2) sqrt(M))]      # [..., F], F = 1 + M + M^2
  phi(q) . phi(k) = 1 + s + s^2 / 2,      s = q . k / sqrt(M)
  y_i = sum_{j <= i} (phi(q_i) . phi(k_j)) v_j / (sum_{j <= i} phi(q_i) . phi(k_j) + EPS)
  out = Linear_out(y)                                                  # [B, L, D]

Based's ``TaylorExp`` keeps the whole outer product (M^2 terms, not its M (M + 1) / 2 distinct
ones), so F = 273 at M = 16, and so does this one. Based normalises: every training path of
``HazyResearch/based`` (``based/models/mixers/linear_attention.py``: the quadratic view, the
fast-transformers kernel and the ``fla_parallel`` kernel its published configs train with)
and its recurrent decoding divide by the kernel's row sum plus an epsilon; here too, with
FLA's ``EPS = 1e-6``. ``1 + s + s^2 / 2 = ((s + 1)^2 + 1) / 2 >= 1/2``, so a real query (which
sees at least itself) has a denominator >= 1/2; the epsilon only guards a query that sees no
real key (a padded position before any real token), whose numerator is 0 too: output 0.

Kernels (float32 inside, whatever the input dtype), each ``[B, N, L, .] -> [B, N, L, H]``:

* ``dense`` (the oracle): the L x S kernel matrix ``phi(q) phi(k)^T`` from the explicit
  features, times the causal and key masks, then ``A v / rowsum(A)``. O(L^2 F) per head.
* ``chunked``: the sequence in W chunks of T tokens (``chunk_size``, tail padded internally).
  Within a chunk the masked T x T quadratic form in its closed form ``1 + s + s^2/2`` (no
  features needed); across chunks the running state ``S = sum phi(k) v^T [F, H]`` and ``z =
  sum phi(k) [F]`` of the earlier chunks (an exclusive prefix sum over W), read by
  ``phi(q_i)``. O(L T (M + H) + L F H) per head. Bidirectional, both kernels reduce to the
  global sums (dense: the unmasked L x S matrix).

``auto`` runs ``chunked`` on every platform. On CPU it was faster at every length measured
(fwd+bwd of the mixer, B = 1, D = 256, N = 4, M = 16, causal, float32; median of 10 timeit
runs, 3 for dense at 4K, on 2 cores shared with another job, load about 9, so read the
ratios): L = 4096: chunked 1.05 s, dense 6.4 s; L = 1024: 0.17 s, 0.31 s; L = 256 (one chunk):
10 ms, 30 ms. ``chunk_size`` T = 256 by default: at L = 4096 a sweep gave T = 32: 1.9 s, 64:
1.6 s, 128: 1.1 s, 256: 0.79 s, 512: 1.1 s, 1024: 1.3 s (a rerun: 64: 1.11 s, 256: 1.05 s),
and the chunk states kept for the backward pass, ``(L / T) F H`` per head, are then about
the size of v. On GPU and TPU chunked is the matmul-shaped form (every einsum a batched
matrix product, no L x L matrix); reasoned, not measured.

Padding (mask False): padded inputs are zeroed and their features ``phi(k)`` set to 0 (and
their values are 0), so a padded key adds nothing to S, z or any chunk's quadratic form, in
either direction; padded queries give finite outputs.

Bidirectional: ``y_i = sum over every real j`` of the same normalised kernel. That sum is the
causal sum over j <= i plus the reverse sum over j > i: the combination of a forward and a
reverse pass is a single global sum (S and z over the whole sequence), so unlike ``rglru``
there is no second set of weights and no reverse scan.

Decoding (causal): the state ``S [B, N, F, H]`` and ``z [B, N, F]`` (float32), a function of
the past that does not grow: ``N F (H + 1)`` floats per sequence whatever ``max_len``.
``prefill`` is the parallel forward plus the prompt's S and z.

Initialisation: projections normal with variance 1 / fan-in (``lecun_normal``, lrm's
default for attention); Based's GPT-2 scheme (normal 0.02, the output projection divided by
sqrt(2 n_layer)) depends on the depth, which a mixer does not know. Based's linear attention
has no rotary positions (its window attention does): none here.

Presets: ``linear_attention`` (heads from the reach; ``windowed=False``: one layer reaches the
whole past, or the whole sequence) and the named stack ``based``: BaseConv (``gated_conv``),
linear attention, sliding-window attention (``local``), BaseConv, BaseConv. Based's published
360M and 1.3B configs (``train/configs/experiment/reference/based-360m.yaml`` and
``based_1.3b_50b_tok.yaml``) do not alternate linear and window attention alone: BaseConv
(kernel 3) is the default layer, linear attention sits at layers 1, 6, 11, 16, 21 and window
attention (w = 256) at 2, 7, 12, 17, 22 of 27 (1.3B: 36 layers, two more of each), a period of
five with three BaseConv layers, which ``based`` repeats; the window and the conv's kernel
follow the study's reach, as every preset's do.

Letters follow the legend in ``base.py``; in this file M is the feature dimension d' of q and
k, and F the size of ``phi``'s output (1 + M + M^2), not an FFT's frequencies.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from lrm.mixers import presets
from lrm.mixers.base import Mixer, check_int, zero_padded
from lrm.registry import register

F32 = jnp.float32
EPS = 1e-6  # the denominator's guard (FLA's parallel_based, which Based's configs train with)


# ---- the feature map -----------------------------------------------------------------------------


def features(m: int) -> int:
  """Size F of ``phi``'s output for M = ``m`` inputs: 1 + M + M^2."""
  return 1 + m + m * m


def feature_map(x: jax.Array) -> jax.Array:
  """``phi(x)``: ``x [..., M] -> [..., F]`` with ``phi(q) . phi(k) = 1 + s + s^2 / 2``,
  ``s = q . k / sqrt(M)`` (module docstring)."""
  M = x.shape[-1]
  one = jnp.ones((*x.shape[:-1], 1), x.dtype)
  outer = (x[..., :, None] * x[..., None, :]).reshape(*x.shape[:-1], M * M)  # [..., M*M]
  linear = x * (1.0 / M**0.25)
  return jnp.concatenate([one, linear, outer * (1.0 / (math.sqrt(2.0) * math.sqrt(M)))], -1)


def taylor_kernel(s: jax.Array) -> jax.Array:
  """``phi(q) . phi(k)`` from ``s = q . k / sqrt(M)``: the closed form ``1 + s + s^2 / 2``."""
  return 1.0 + s + 0.5 * s * s


# ---- kernels: q, k [B, N, L, M], v [B, N, L, H], valid [B, L] -> y [B, N, L, H], float32 ---------


def dense_linear_attention(
  q: jax.Array, k: jax.Array, v: jax.Array, valid: jax.Array, causal: bool
) -> jax.Array:
  """The oracle: the explicit ``[L, S]`` kernel matrix of the features, masked."""
  L = q.shape[2]
  a = jnp.einsum("BNLF,BNSF->BNLS", feature_map(q), feature_map(k))  # [B, N, L, S]
  keep = valid[:, None, None, :]  # [B, 1, 1, S]: padded keys add nothing
  if causal:
    keep = keep & jnp.tril(jnp.ones((L, L), bool))
  a = jnp.where(keep, a, 0.0)
  num = jnp.einsum("BNLS,BNSH->BNLH", a, v)
  return num / (jnp.sum(a, -1)[..., None] + EPS)


def key_state(k: jax.Array, v: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``S = sum_j phi(k_j) v_j^T [B, N, F, H]`` and ``z = sum_j phi(k_j) [B, N, F]`` over the
  real keys (``valid [B, L]``) of ``k [B, N, L, M]``, ``v [B, N, L, H]``."""
  fk = jnp.where(valid[:, None, :, None], feature_map(k), 0.0)  # [B, N, L, F]
  return jnp.einsum("BNLF,BNLH->BNFH", fk, v), jnp.sum(fk, 2)


def read_state(fq: jax.Array, s: jax.Array, z: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Numerator and denominator of query features ``fq [..., F]`` against a state ``s [..., F,
  H]``, ``z [..., F]`` (leading axes shared): ``[..., H]`` and ``[...]``."""
  return jnp.einsum("...F,...FH->...H", fq, s), jnp.einsum("...F,...F->...", fq, z)


def global_linear_attention(
  q: jax.Array, k: jax.Array, v: jax.Array, valid: jax.Array
) -> jax.Array:
  """Bidirectional: every query reads the one state of all real keys."""
  s, z = key_state(k, v, valid)  # [B, N, F, H], [B, N, F]
  num, den = read_state(feature_map(q), s[:, :, None], z[:, :, None])  # [B, N, L, H], [B, N, L]
  return num / (den[..., None] + EPS)


def exclusive_sum(a: jax.Array) -> jax.Array:
  """Per-chunk sums ``a [B, N, W, ...]`` -> the sum over the chunks before each one (chunk 0:
  zero), along W."""
  before = jnp.concatenate([jnp.zeros_like(a[:, :, :1]), a[:, :, :-1]], 2)
  return jnp.cumsum(before, 2)


def chunked_linear_attention(
  q: jax.Array, k: jax.Array, v: jax.Array, valid: jax.Array, chunk: int
) -> jax.Array:
  """Causal, by chunks of T = min(chunk, L) tokens: the masked quadratic form within a chunk,
  the earlier chunks' state (an exclusive prefix sum of per-chunk states) across them."""
  B, N, L, M = q.shape
  T = min(chunk, L)
  W = -(-L // T)
  pad = W * T - L
  if pad:  # padded tail: invalid keys (phi(k) = 0), outputs stripped
    q, k, v = (jnp.pad(a, ((0, 0), (0, 0), (0, pad), (0, 0))) for a in (q, k, v))
    valid = jnp.pad(valid, ((0, 0), (0, pad)))
  blocks = lambda a: a.reshape(B, N, W, T, a.shape[-1])  # noqa: E731  [B, N, W, T, .]
  qc, kc, vc = blocks(q), blocks(k), blocks(v)
  ok = valid.reshape(B, 1, W, 1, T) & jnp.tril(jnp.ones((T, T), bool))  # [B, 1, W, T, S]
  s = jnp.einsum("BNWTM,BNWSM->BNWTS", qc, kc) * (1.0 / math.sqrt(M))
  a = jnp.where(ok, taylor_kernel(s), 0.0)  # [B, N, W, T, S], S = T keys of the same chunk
  num = jnp.einsum("BNWTS,BNWSH->BNWTH", a, vc)
  den = jnp.sum(a, -1)  # [B, N, W, T]
  if W == 1:  # one chunk: no earlier state to read
    return (num / (den + EPS)[..., None]).reshape(B, N, T, -1)[:, :, :L]
  fk = jnp.where(valid.reshape(B, 1, W, T, 1), feature_map(kc), 0.0)  # [B, N, W, T, F]
  s_w = jnp.einsum("BNWTF,BNWTH->BNWFH", fk, vc)  # each chunk's own state
  z_w = jnp.sum(fk, 3)  # [B, N, W, F]
  s_in, z_in = exclusive_sum(s_w)[:, :, :, None], exclusive_sum(z_w)[:, :, :, None]
  n2, d2 = read_state(feature_map(qc), s_in, z_in)  # [B, N, W, T, H], [B, N, W, T]
  y = (num + n2) / (den + d2 + EPS)[..., None]  # [B, N, W, T, H]
  return y.reshape(B, N, W * T, -1)[:, :, :L]


# ---- the mixer -----------------------------------------------------------------------------------


@register("mixer", "linear_attention")
class LinearAttention(Mixer):
  """Based's linear attention: ``[B, L, D] -> [B, L, D]`` (see module docstring).

  Args:
    dim: model width D.
    causal: the causal prefix sums (else one global sum over the real tokens).
    num_heads: heads N (D must be divisible by it); values have H = D / N per head.
    feature_dim: M = d', the width of each head's q and k before the feature map (16 in Based).
    chunk_size: tokens T per chunk of the ``chunked`` kernel.
    impl: "auto" (``chunked``), "dense" (the L x L oracle) or "chunked".
  """

  IMPLS = ("auto", "dense", "chunked")

  def __init__(
    self,
    dim: int,
    *,
    causal: bool,
    rngs: nnx.Rngs,
    layer_idx: int = 0,
    num_heads: int = 4,
    feature_dim: int = 16,
    chunk_size: int = 256,
    impl: str = "auto",
  ):
    super().__init__(dim, causal=causal, layer_idx=layer_idx, impl=impl, num_heads=num_heads)
    check_int("linear_attention", "feature_dim", feature_dim, 1)
    check_int("linear_attention", "chunk_size", chunk_size, 1)
    self.feature_dim, self.chunk_size = int(feature_dim), int(chunk_size)
    linear = dict(use_bias=False, rngs=rngs)  # Based's projections have no biases
    self.q = nnx.Linear(dim, num_heads * feature_dim, **linear)
    self.k = nnx.Linear(dim, num_heads * feature_dim, **linear)
    self.v = nnx.Linear(dim, dim, **linear)
    self.out = nnx.Linear(dim, dim, **linear)

  def choose_impl(self, dtype: jnp.dtype = F32, length: int | None = None) -> str:
    """``auto``: ``chunked`` on every platform (module docstring for the CPU timings)."""
    return "chunked" if self.requested_impl == "auto" else self.requested_impl

  def project(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``x [..., D]`` -> float32 q, k ``[..., N, M]`` and v ``[..., N, H]``."""
    heads = lambda a: a.reshape(*x.shape[:-1], self.num_heads, -1).astype(F32)  # noqa: E731
    return heads(self.q(x)), heads(self.k(x)), heads(self.v(x))

  def _merge(self, y: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """``y [..., N, H]`` -> the output projection ``[..., D]`` in ``dtype``."""
    y = y.reshape(*y.shape[:-2], self.dim).astype(dtype)
    return self.out(y).astype(dtype)

  def _heads(self, x: jax.Array, mask: jax.Array | None) -> tuple[jax.Array, ...]:
    """q, k ``[B, N, L, M]``, v ``[B, N, L, H]`` (float32) and the key mask ``[B, L]``."""
    B, L, _ = x.shape
    valid = jnp.ones((B, L), bool) if mask is None else mask.astype(bool)
    q, k, v = (jnp.swapaxes(a, 1, 2) for a in self.project(zero_padded(x, mask)))
    return q, k, v, valid

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    q, k, v, valid = self._heads(x, mask)
    impl = self.choose_impl(x.dtype, x.shape[1])
    if impl == "dense":
      y = dense_linear_attention(q, k, v, valid, self.causal)
    elif self.causal:
      y = chunked_linear_attention(q, k, v, valid, self.chunk_size)
    else:
      y = global_linear_attention(q, k, v, valid)
    return self._merge(jnp.swapaxes(y, 1, 2), x.dtype)  # [B, L, N, H] -> [B, L, D]

  # ---- decoding: S [B, N, F, H] and z [B, N, F], whatever max_len ----

  def init_cache(self, batch: int, max_len: int, dtype=jnp.float32) -> dict[str, jax.Array]:
    if not self.causal:
      raise self.decode_error()
    F = features(self.feature_dim)
    return {
      "s": jnp.zeros((batch, self.num_heads, F, self.head_dim), F32),
      "z": jnp.zeros((batch, self.num_heads, F), F32),
    }

  def step(
    self, x: jax.Array, cache: dict[str, jax.Array], pos: jax.Array
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    if not self.causal:
      raise self.decode_error()
    q, k, v = self.project(x)  # [B, N, M], [B, N, M], [B, N, H]
    fk = feature_map(k)  # [B, N, F]
    s = cache["s"] + jnp.einsum("BNF,BNH->BNFH", fk, v)
    z = cache["z"] + fk
    num, den = read_state(feature_map(q), s, z)  # [B, N, H], [B, N]
    return self._merge(num / (den[..., None] + EPS), x.dtype), {"s": s, "z": z}

  def prefill(
    self, x: jax.Array, cache: dict[str, jax.Array]
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The parallel forward over the prompt ``x [B, P, D]``; the cache holds its S and z."""
    if not self.causal:
      raise self.decode_error()
    _, k, v, valid = self._heads(x, None)
    s, z = key_state(k, v, valid)
    return self(x), {"s": cache["s"] + s, "z": cache["z"] + z}

  # ---- counting ----

  def _projection_flops(self, length: int) -> int:
    """q, k (N M each), v, out (D each) without biases, and the feature maps of q and k."""
    L, D, N, M = length, self.dim, self.num_heads, self.feature_dim
    return 2 * L * D * (2 * N * M + 2 * D) + 2 * L * N * (2 * M * M + M)

  def flops(self, length: int, impl: str | None = None) -> int:
    """Forward FLOPs of the kernel that runs (``impl``: another one's), elementwise ops 1 each:
    dense scores the whole L x S matrix (2F per pair, the mask, A v, the row sum); chunked
    scores W T^2 pairs in closed form (2M + 4) and passes states (2FH + F per key, the same
    per query, the prefix sum over W chunks); the global form has only the state passes."""
    L, N, M, H = length, self.num_heads, self.feature_dim, self.head_dim
    F = features(M)
    impl = impl or self.impl
    divide = L * (H + 1)  # + EPS, then / per value channel
    if impl == "dense":
      per_head = L * L * (2 * F + 1 + 2 * H + 1) + divide
    elif self.causal:
      T = min(self.chunk_size, L)
      W = -(-L // T)
      pairs = W * T * T
      within = pairs * (2 * M + 4 + 1 + 2 * H + 1)  # score, kernel, mask, A v, row sum
      # keys into chunk states, queries reading them, the prefix sum, the two parts added
      states = 2 * W * T * (2 * F * H + F) + W * F * (H + 1) + W * T * (H + 1)
      per_head = within + (states if W > 1 else 0) + divide
    else:
      per_head = 2 * L * (2 * F * H + F) + divide
    return int(self._projection_flops(L) + N * per_head)

  def algorithmic_flops(self, length: int) -> int:
    """The operator's own work (``lrm.analysis.counting``): the recurrent form, one state
    update (2FH + F) and one read (2FH + 2F) per token, either direction."""
    L, N, H, F = length, self.num_heads, self.head_dim, features(self.feature_dim)
    return int(self._projection_flops(L) + N * L * (4 * F * H + 3 * F + H + 1))


# The whole past (causal) or the whole sequence in one layer, whatever the window.
presets.register(
  "linear_attention", lambda r: dict(name="linear_attention", num_heads=r.heads), windowed=False
)
# Based's period of five layers (module docstring): BaseConv, linear, window, BaseConv x2.
presets.register_stack(
  "based", ("gated_conv", "linear_attention", "local", "gated_conv", "gated_conv")
)
