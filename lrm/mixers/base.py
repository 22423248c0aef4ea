"""The mixer contract, shared by every token mixer, and the dimension legend.

Dimension legend: one upper-case letter per axis, with the same meaning in every einsum
string and ``# [..]`` shape comment under ``lrm/mixers`` (lower-case names such as ``n``,
``c``, ``step`` are scalars, and shapes may be products like ``W*T``):

  B  batch
  L  sequence length: the tokens a mixer maps (its queries, its outputs)
  S  key length of a dense ``[L, S]`` score, mask or band matrix (``S = L`` for self-mixing)
  D  model width; E the same width as a second axis (a full conv kernel ``[K, D, E]``)
  N  heads (involution: groups); H head dim ``D / N``
  K  kernel taps
  T  tokens per block
  W  blocks along the sequence (overlap-save: FFT windows)
  Q  query blocks that one block-sparse call computes (a run of the W blocks)
  O  key blocks in a query block's band (one per offset)
  R  random key blocks per query block (a block table ``[W, R]``)
  G  global keys, seen by every query (positions, or learned tokens)
  U  keys (or inputs) that one block of T queries (or outputs) reads: its band and gathered
     blocks in block-sparse attention, its window of ``c * T`` inputs in a blocked conv
  F  frequencies of a real FFT of size n (``n // 2 + 1``)
  C  classes, V vocabulary (task heads)

A mixer is an ``nnx.Module`` mapping ``x: [B, L, D] -> [B, L, D]``. It takes an optional
padding mask ``[B, L]`` (True = real token): padded positions must neither influence real
ones nor produce NaN (their own outputs may be anything finite). A mixer is causal (output
i depends only on inputs <= i) or bidirectional, fixed at construction.

Decoding (autoregressive generation, causal mixers only). A causal mixer can run one token at
a time from a cache of what it still needs from the past:

  cache = mixer.init_cache(batch, max_len)     # flat dict of fixed-shape arrays (jit-friendly)
  y, cache = mixer.prefill(x, cache)           # x [B, P, D] at positions 0..P-1 -> y [B, P, D]
  y_t, cache = mixer.step(x_t, cache, pos)     # x_t [B, D] at position ``pos`` (int32 scalar)

``step`` returns exactly the parallel forward's output at ``pos`` (the oracle test compares
logits at every position). The base ``prefill`` scans ``step`` over the prompt (exact by
construction); a mixer may override it with its parallel forward plus a cache fill.
``cache_bytes(batch, max_len)`` is the size of the cache (from ``jax.eval_shape``). The cache
holds only what the layer's receptive field needs, per family (per sequence, per layer):

  conv, gated_conv, dynamic_conv, involution   the last ``(K - 1) * dilation`` conv inputs:
                                               O(K D), whatever ``max_len``
  local attention                              keys/values of the last w tokens in a
                                               ring buffer: O(w D), whatever ``max_len``
  global (full) attention                      every past key and value: O(L D)
  random / bigbird                             each key block until the last query block
                                               that reads it (a global query block reads
                                               every key: then O(L D))
  hyena                                        the completed blocks' sums for every later
                                               position, and the current block: O(L D)

``max_len`` is the longest sequence the cache serves (positions 0..max_len-1); a mixer whose
output depends on the sequence length decodes as its forward at ``max_len`` (hyena's implicit
filter is normalised by the length; random's and bigbird's block table is drawn for it).
Each mixer's docstring says where its cache code lives.

Bidirectional mixers, and causal ones without an implementation, raise ``DecodeError`` (a
``ValueError`` with a one-line message) from ``init_cache`` and ``step``.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import sys
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# One side of a receptive field that reaches the end of any sequence: a causal mixer that
# sees the whole past reports ``(UNBOUNDED, 0)``. An int, so reaches still add up over layers.
UNBOUNDED = sys.maxsize

# A masked logit: finite (not -inf), so that neither a softmax nor its gradient can meet
# inf - inf, and a row with no visible entry stays NaN-free; callers then zero masked
# probabilities exactly.
MASKED_LOGIT = -1e30


# ---- the target: the machine kernels are chosen for ------------------------------------------
PLATFORMS = ("cpu", "gpu", "cuda", "rocm", "tpu")  # jax.default_backend() names and lowering ones


@dataclasses.dataclass(frozen=True)
class Target:
  """The machine a program is traced for: ``platform`` (``jax.default_backend()`` names, or
  the lowering platforms ``"cuda"``, ``"rocm"``) and whether its GPU has cuDNN (``None``: ask
  JAX, which knows on the machine itself; ``True``/``False``: say so for another machine)."""

  platform: str
  cudnn: bool | None = None


_TARGET: contextvars.ContextVar[Target | None] = contextvars.ContextVar("lrm_target", default=None)


def target() -> Target:
  """The target kernels are chosen for now: the innermost ``for_platform`` block, else this
  machine (``jax.default_backend()``). Every ``choose_impl`` (and the splash kernel's
  interpret switch) reads it, at trace time."""
  t = _TARGET.get()
  return Target(jax.default_backend()) if t is None else t


@contextlib.contextmanager
def for_platform(platform: str | Target, *, cudnn: bool | None = None) -> Iterator[Target]:
  """Trace for ``platform`` inside this block (e.g. ``"tpu"`` to lower on a CPU host with
  ``lowering_platforms=("tpu",)``): mixers choose that platform's kernels, and Pallas kernels
  are lowered for it instead of interpreted. ``lrm.train.step.Steps`` enters its own target
  inside every traced step, so a jitted step always matches the platform it was built for."""
  t = platform if isinstance(platform, Target) else Target(str(platform), cudnn)
  if t.platform not in PLATFORMS:
    raise ValueError(f"unknown platform '{t.platform}'; choose one of {', '.join(PLATFORMS)}")
  token = _TARGET.set(t)
  try:
    yield t
  finally:
    _TARGET.reset(token)


class DecodeError(ValueError):
  """Decoding was asked of a model that cannot decode (bidirectional, or not implemented)."""


def check_int(owner: str, option: str, value: object, low: int) -> None:
  """Raise a clear error unless ``value`` is an integer (not a bool) ``>= low``."""
  if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < low:
    raise ValueError(f"{owner}: option {option} must be an integer >= {low}, got {value!r}")


class Mixer(nnx.Module):
  """Base class: subclasses call ``super().__init__`` first and implement ``__call__``, ``flops``.

  ``Mixer.__init__`` validates and stores what every mixer shares: ``dim``, ``causal``,
  ``layer_idx``, the requested ``impl`` (``requested_impl``, one of the class's ``IMPLS``)
  and, for mixers with heads, ``num_heads`` and ``head_dim``. A mixer with more than one
  kernel overrides ``choose_impl``, the one place its kernel is chosen (from the target
  platform, ``target()``, the dtype and the shapes; its ``__call__`` asks it once per call).
  Subclasses may override ``receptive_field`` (analytic per-layer reach).
  """

  IMPLS: tuple[str, ...] = ("default",)
  # options the run writes into this mixer's spec (``lrm.mixers.with_run_options``):
  # "rotary" (model.positions == "rotary"), "seed" (the run's seed, for fixed random patterns)
  RUN_OPTIONS: tuple[str, ...] = ()

  causal: bool
  dim: int

  def __init__(
    self,
    dim: int,
    *,
    causal: bool,
    layer_idx: int,
    impl: str,
    num_heads: int | None = None,
  ) -> None:
    name = self.mixer_name()
    check_int(name, "dim", dim, 1)
    if impl not in self.IMPLS:
      raise ValueError(f"{name}: unknown impl '{impl}'; choose one of {', '.join(self.IMPLS)}")
    if num_heads is not None:
      check_int(name, "num_heads", num_heads, 1)
      if dim % num_heads:
        raise ValueError(
          f"{name}: dim={dim} is not divisible by num_heads={num_heads}; change one of them"
        )
      self.num_heads, self.head_dim = int(num_heads), dim // num_heads
    self.dim, self.causal, self.layer_idx = int(dim), bool(causal), layer_idx
    self.requested_impl = impl

  @classmethod
  def mixer_name(cls) -> str:
    """The registered short name (the class name for an unregistered base)."""
    return getattr(cls, "registered_name", cls.__name__)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    raise NotImplementedError  # abstract: every registered mixer overrides this

  def flops(self, length: int) -> int:
    """Analytic forward FLOPs for one sequence of ``length`` tokens (a multiply-add is 2)."""
    raise NotImplementedError  # abstract: every registered mixer overrides this

  def num_params(self) -> int:
    return param_count(self)

  def receptive_field(self) -> tuple[int, int] | None:
    """(left, right) reach of one layer in tokens; None means the whole sequence.

    A side may be ``UNBOUNDED`` (the whole past of a causal mixer: ``(UNBOUNDED, 0)``). The
    default, for mixers without a bound, follows causality.
    """
    return (UNBOUNDED, 0) if self.causal else None

  def choose_impl(self, dtype: jnp.dtype = jnp.float32, length: int | None = None) -> str:
    """The implementation that runs for ``dtype`` inputs of ``length`` tokens (None: any) on
    the target platform (``target()``: this machine, or the ``for_platform`` being traced
    for). The default runs what was asked for."""
    return self.requested_impl

  @property
  def impl(self) -> str:
    """Name of the implementation that runs in float32 (e.g. ``"blocked"``, ``"fft"``)."""
    return self.choose_impl(jnp.float32, None)

  # ---- decoding (see the module docstring) ----

  def decode_error(self) -> DecodeError:
    """The one-line error a mixer without cached decoding raises."""
    name = self.mixer_name()
    if not self.causal:
      return DecodeError(
        f"mixer '{name}' is bidirectional; decoding needs a causal model "
        "(train with a causal task such as lm)"
      )
    return DecodeError(f"mixer '{name}' does not implement cached decoding")

  def init_cache(self, batch: int, max_len: int, dtype=jnp.float32) -> dict[str, jax.Array]:
    """A flat dict of fixed-shape arrays holding what ``step`` needs from the past."""
    raise self.decode_error()

  def step(
    self, x: jax.Array, cache: dict[str, jax.Array], pos: jax.Array
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """One token ``x: [B, D]`` at absolute position ``pos`` (int32 scalar, 0-based) ->
    (``y: [B, D]``, the parallel forward's output at ``pos``; the updated cache)."""
    raise self.decode_error()

  def prefill(
    self, x: jax.Array, cache: dict[str, jax.Array]
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """A prompt ``x: [B, P, D]`` at positions 0..P-1 -> (``y: [B, P, D]``, the cache).

    The default scans ``step`` over the prompt, exact by construction.
    """

    def body(c: dict[str, jax.Array], inputs: tuple[jax.Array, jax.Array]):
      x_t, pos = inputs
      y_t, c = self.step(x_t, c, pos)
      return c, y_t

    positions = jnp.arange(x.shape[1], dtype=jnp.int32)
    cache, ys = jax.lax.scan(body, cache, (jnp.swapaxes(x, 0, 1), positions))  # ys [P, B, D]
    return jnp.swapaxes(ys, 0, 1), cache

  def cache_bytes(self, batch: int, max_len: int) -> int:
    """Bytes of ``init_cache(batch, max_len)``, from shapes alone (nothing is allocated)."""
    shapes = jax.eval_shape(lambda: self.init_cache(batch, max_len))
    return int(sum(np.prod(a.shape) * a.dtype.itemsize for a in jax.tree.leaves(shapes)))


def impl_of(mixer: Mixer, dtype: jnp.dtype, length: int) -> str:
  """The implementation ``mixer`` runs for ``dtype`` inputs of ``length`` tokens on the
  target (this machine unless inside ``for_platform``)."""
  return mixer.choose_impl(dtype, length)


def param_count(module: nnx.Module) -> int:
  return int(sum(p.size for p in jax.tree.leaves(nnx.state(module, nnx.Param))))


def zero_padded(x: jax.Array, mask: jax.Array | None) -> jax.Array:
  """Zero the padded positions of ``x: [B, L, D]`` (mask ``[B, L]``, True = real)."""
  if mask is None:
    return x
  return jnp.where(mask[..., None], x, jnp.zeros((), x.dtype))
