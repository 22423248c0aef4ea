"""``dynamic_conv`` and ``involution``: convolutions whose kernel is predicted per token.

Between a static conv (one kernel for every position, ``conv.py``) and attention (weights from
query-key content over the whole sequence) sit kernels generated from the current token alone
and applied over a fixed window of K taps, shared by the channels of each of N heads/groups:
  dynamic_conv  (Wu et al. 2019) as published: a GLU input projection u = a * sigmoid(b)
                with [a, b] = Linear(x) (D -> 2D); taps = softmax over the window of
                Linear(u_i); mixes u; then an output projection. Content-dependent,
                normalised, local. ``glu=False`` is the ablation without the gate: a plain
                value projection, taps from x.
  involution    (Li et al. 2021) taps = Linear(ReLU(Linear(x_i))) (bottleneck D -> D/r -> N*K,
                no softmax), applied to x itself; then an output projection.

Window: output i sees ``i - left + k`` for k in 0..K-1, with (left, right) as for ``conv``
(causal: the K-1 previous tokens and itself; centred otherwise, even K reaching one further
right). Padding: padded inputs are zeroed before mixing, and ``dynamic_conv`` renormalises its
softmax over the real, in-sequence taps only (out-of-range taps get weight 0, not a share of
the softmax as in fairseq); a row with no real tap (a padded query) gets all-zero weights.

Implementations (kernels in ``dynamic_kernels.py``, all accumulating in float32): ``unfold``
(shift-and-weight, O(L K D)), ``blocked`` (per-block band matmuls, O(L (T+K) D)) and ``dense``
(the [B, N, L, S] banded matrix gathered from the taps: the O(L^2 D) oracle). ``auto`` =
unfold for K <= 128, else blocked: on CPU, unfold was faster for short kernels and the
band matmuls for long ones, although they compute more FLOPs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lrm.mixers.base import MASKED_LOGIT, Mixer, check_int, zero_padded
from lrm.mixers.conv_kernels import ACC, conv_offsets, fill_window, push_window, window_cache
from lrm.mixers.dynamic_kernels import (
  band_index,
  band_matrix,
  block_geometry,
  blocked_mix,
  tap_valid,
  unfold_mix,
)
from lrm.registry import register

UNFOLD_MAX_TAPS = 128


class WindowMixer(Mixer):
  """Shared machinery: per-token kernels ``[B, L, N, K]`` applied to values ``[B, L, N, H]``."""

  IMPLS = ("auto", "unfold", "blocked", "dense")

  def __init__(
    self, dim: int, *, causal: bool, layer_idx: int, kernel_size: int, num_heads: int, impl: str
  ):
    check_int(self.mixer_name(), "kernel_size", kernel_size, 1)
    super().__init__(dim, causal=causal, layer_idx=layer_idx, impl=impl, num_heads=num_heads)
    self.kernel_size = int(kernel_size)
    self.left, self.right = conv_offsets(self.kernel_size, 1, self.causal)
    if impl == "auto":
      self._impl = "unfold" if kernel_size <= UNFOLD_MAX_TAPS else "blocked"

  def receptive_field(self) -> tuple[int, int]:
    return self.left, self.right

  def _mix(self, w: jax.Array, v: jax.Array) -> jax.Array:
    """Windowed mixing by the fast path (w ``[B, L, N, K]``, v ``[B, L, N, H]``)."""
    mix = unfold_mix if self._impl == "unfold" else blocked_mix
    return mix(w, v, self.left, self.right)  # [B, L, N, H] float32

  def _dense(self, a: jax.Array, v: jax.Array) -> jax.Array:
    return jnp.einsum("BNLS,BSNH->BLNH", a, v.astype(ACC))  # [B, L, N, H]

  # ---- decoding: the last K - 1 values, O(K D) per layer ----

  def init_cache(self, batch: int, max_len: int, dtype=jnp.float32) -> dict[str, jax.Array]:
    if not self.causal:
      raise self.decode_error()
    return window_cache(batch, self.left, (self.dim,), dtype)

  def _step_mix(self, w: jax.Array, window: jax.Array) -> jax.Array:
    """One output: taps ``w [B, N, K]`` over the window of values ``[B, K, D]`` -> ``[B, D]``."""
    B, K, D = window.shape
    v = window.reshape(B, K, self.num_heads, D // self.num_heads).astype(ACC)  # [B, K, N, H]
    return jnp.einsum("BNK,BKNH->BNH", w.astype(ACC), v).reshape(B, D)

  def _mix_flops(self, length: int) -> float:
    L, D, K = length, self.dim, self.kernel_size
    if self._impl == "unfold":
      return 2 * L * K * D
    if self._impl == "blocked":
      T, c, nb = block_geometry(L, K)
      return 2 * nb * T * c * T * D
    return 2 * L * L * D  # the gathered [L, S] band (no FLOPs) times the values

  def algorithmic_flops(self, length: int) -> int:
    """The operator's own work (``lrm.analysis.counting``): the unfolded K-tap count (2KD
    per token for the taps), whatever kernel runs."""
    impl, self._impl = self._impl, "unfold"
    try:
      return self.flops(length)
    finally:
      self._impl = impl


@register("mixer", "dynamic_conv")
class DynamicConv(WindowMixer):
  """Dynamic convolution (Wu et al. 2019): softmax taps predicted from each token.

  Args:
    dim: model width D.
    causal: window of the K-1 previous tokens and itself (else centred).
    kernel_size: taps K.
    num_heads: N heads; each shares its taps across its D/N channels.
    glu: the published GLU input (default: the paper's model, and the multiplicative
      interaction the other gated baselines have); False: a plain value projection.
    impl: "auto", "unfold", "blocked" or "dense" (the O(L^2) oracle).
  """

  def __init__(
    self,
    dim: int,
    *,
    causal: bool,
    rngs: nnx.Rngs,
    layer_idx: int = 0,
    kernel_size: int = 3,
    num_heads: int = 4,
    glu: bool = True,
    impl: str = "auto",
  ):
    super().__init__(
      dim,
      causal=causal,
      layer_idx=layer_idx,
      kernel_size=kernel_size,
      num_heads=num_heads,
      impl=impl,
    )
    self.glu = bool(glu)
    self.value = nnx.Linear(dim, 2 * dim if self.glu else dim, rngs=rngs)
    self.taps = nnx.Linear(dim, num_heads * kernel_size, rngs=rngs)
    self.out = nnx.Linear(dim, dim, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    B, L, D = x.shape
    N, K = self.num_heads, self.kernel_size
    h, u = self._inputs(zero_padded(x, mask))  # [B, L, D] each
    v = u.reshape(B, L, N, D // N)  # [B, L, N, H]
    logits = self.taps(h).astype(ACC).reshape(B, L, N, K)  # [B, L, N, K]
    if self._impl == "dense":
      # Oracle: scatter the logits into the L x S band and softmax over every allowed key.
      s = band_matrix(logits, self.left)  # [B, N, L, S]
      allowed = jnp.asarray(band_index(L, K, self.left)[1])[None, None]  # [1, 1, L, S]
      if mask is not None:
        allowed = allowed & mask[:, None, None, :]
      a = jax.nn.softmax(jnp.where(allowed, s, MASKED_LOGIT), axis=-1) * allowed
      y = self._dense(a, v)
    else:
      valid = tap_valid(mask, L, self.left, self.right)[:, :, None]  # [B, L, 1, K]
      w = jax.nn.softmax(jnp.where(valid, logits, MASKED_LOGIT), axis=-1) * valid  # [B, L, N, K]
      y = self._mix(w, v)
    return self.out(y.reshape(B, L, D).astype(x.dtype)).astype(x.dtype)

  def _inputs(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(h, u)``: what predicts the taps and the values mixed, each ``[..., D]``."""
    if self.glu:  # the GLU's output is the conv's input and predicts its taps (fairseq)
      a, b = jnp.split(self.value(x), 2, axis=-1)
      u = a * jax.nn.sigmoid(b)
      return u, u
    return x, self.value(x)

  def prefill(
    self, x: jax.Array, cache: dict[str, jax.Array]
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The parallel forward over the prompt ``x [B, P, D]``; the cache keeps the tail of u."""
    if not self.causal:
      raise self.decode_error()
    return self(x), fill_window(cache, self._inputs(x)[1])

  def step(
    self, x: jax.Array, cache: dict[str, jax.Array], pos: jax.Array
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    if not self.causal:
      raise self.decode_error()
    B, D = x.shape
    N, K = self.num_heads, self.kernel_size
    h, u = self._inputs(x)  # [B, D] each
    window, cache = push_window(cache, u)  # [B, K, D]
    logits = self.taps(h).astype(ACC).reshape(B, N, K)  # [B, N, K]
    valid = pos - self.left + jnp.arange(K) >= 0  # [K]: taps before the sequence get weight 0
    w = jax.nn.softmax(jnp.where(valid, logits, MASKED_LOGIT), axis=-1) * valid
    y = self._step_mix(w, window)  # [B, D]
    return self.out(y.astype(x.dtype)).astype(x.dtype), cache

  def flops(self, length: int) -> int:
    L, D, NK = length, self.dim, self.num_heads * self.kernel_size
    value = 2 * L * D * 2 * D + 2 * L * D + 3 * L * D if self.glu else 2 * L * D * D + L * D
    proj = value + 2 * L * D * D + L * D + 2 * L * D * NK + L * NK
    softmax = 5 * L * NK if self._impl != "dense" else 5 * L * L * self.num_heads
    return int(proj + softmax + self._mix_flops(L))


@register("mixer", "involution")
class Involution(WindowMixer):
  """1D involution (Li et al. 2021): taps from a bottleneck MLP of each token, no softmax.

  Args:
    dim: model width D.
    causal: window of the K-1 previous tokens and itself (else centred).
    kernel_size: taps K.
    num_heads: N groups; each shares its taps across its D/N channels.
    reduction: bottleneck ratio r of the kernel generator (hidden width max(1, D // r)).
    impl: "auto", "unfold", "blocked" or "dense" (the O(L^2) oracle).
  """

  def __init__(
    self,
    dim: int,
    *,
    causal: bool,
    rngs: nnx.Rngs,
    layer_idx: int = 0,
    kernel_size: int = 3,
    num_heads: int = 4,
    reduction: int = 4,
    impl: str = "auto",
  ):
    super().__init__(
      dim,
      causal=causal,
      layer_idx=layer_idx,
      kernel_size=kernel_size,
      num_heads=num_heads,
      impl=impl,
    )
    check_int("involution", "reduction", reduction, 1)
    self.hidden = max(1, dim // reduction)
    self.reduce = nnx.Linear(dim, self.hidden, rngs=rngs)
    # Taps start at std ~ 1/sqrt(hidden * K) so a K-tap window sum starts at unit scale
    # (the paper's BatchNorm would play this role).
    init = nnx.initializers.variance_scaling(1.0 / kernel_size, "fan_in", "truncated_normal")
    self.span = nnx.Linear(self.hidden, num_heads * kernel_size, kernel_init=init, rngs=rngs)
    self.out = nnx.Linear(dim, dim, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    B, L, D = x.shape
    N, K = self.num_heads, self.kernel_size
    h = zero_padded(x, mask)  # [B, L, D]; padded taps then contribute nothing
    w = self.span(jax.nn.relu(self.reduce(h))).astype(ACC).reshape(B, L, N, K)  # [B, L, N, K]
    v = h.reshape(B, L, N, D // N)  # [B, L, N, H]
    if self._impl == "dense":
      y = self._dense(band_matrix(w, self.left), v)  # [B, L, N, H]
    else:
      y = self._mix(w, v)
    return self.out(y.reshape(B, L, D).astype(x.dtype)).astype(x.dtype)

  def step(
    self, x: jax.Array, cache: dict[str, jax.Array], pos: jax.Array
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    if not self.causal:
      raise self.decode_error()
    B, D = x.shape
    w = self.span(jax.nn.relu(self.reduce(x))).astype(ACC)  # [B, N*K]
    window, cache = push_window(cache, x)  # [B, K, D]; zeros before the sequence
    y = self._step_mix(w.reshape(B, self.num_heads, self.kernel_size), window)  # [B, D]
    return self.out(y.astype(x.dtype)).astype(x.dtype), cache

  def prefill(
    self, x: jax.Array, cache: dict[str, jax.Array]
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The parallel forward over the prompt ``x [B, P, D]``; the cache keeps its tail."""
    if not self.causal:
      raise self.decode_error()
    return self(x), fill_window(cache, x)

  def flops(self, length: int) -> int:
    L, D, NK = length, self.dim, self.num_heads * self.kernel_size
    hid = self.hidden
    proj = 2 * L * D * hid + 2 * L * hid + 2 * L * hid * NK + L * NK + 2 * L * D * D + L * D
    return int(proj + self._mix_flops(L))
