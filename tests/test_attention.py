"""Attention mixers: efficient kernels vs the dense oracle, exact patterns, causality,
padding, random-block policies, FLOPs vs XLA, and the blocked kernel's memory."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lrm.mixers as mixers
from lrm.mixers import masks
from lrm.mixers.base import UNBOUNDED

D = 16
# Tests compile many small programs; skipping XLA's expensive passes halves compile time.
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


@functools.partial(jax.jit, static_argnums=0, compiler_options=FAST)
def _apply(graph, state, x, mask):
  m = nnx.merge(graph, state)
  return m(x, mask), nnx.state(m)


def run(m, x, mask=None):
  """``m(x, mask)`` compiled; RNG-stream updates are written back into ``m``."""
  graph, state = nnx.split(m)
  y, state = _apply(graph, state, x, mask)
  nnx.update(m, state)
  return y


# spec, L for the bidirectional run, L for the causal run: each kernel sees a length that is
# a multiple of its block size and one that is not.
KERNEL_CASES = {
  "global": ({"name": "global"}, 13, 16),
  "local_w16_rot": ({"name": "local", "window": 16, "rotary": True}, 37, 64),  # block = w
  "local_w5_first": ({"name": "local", "window": 5, "global_tokens": 2}, 32, 37),  # block > w
  "local_summary": (
    {"name": "local", "window": 5, "global_tokens": 2, "global_mode": "summary", "rotary": True},
    37,
    16,
  ),
  "local_learned": (
    {"name": "local", "window": 6, "global_tokens": 2, "global_mode": "learned"},
    37,
    30,  # + 2 learned tokens = 32
  ),
  "random": ({"name": "random", "block_size": 8, "num_random_blocks": 2}, 37, 32),
  "bigbird": ({"name": "bigbird", "block_size": 4, "random_blocks": 2}, 32, 37),
  "bigbird_wide": (
    {
      "name": "bigbird",
      "block_size": 4,
      "window_blocks": 5,
      "global_blocks": 3,
      "random_blocks": 1,
    },
    37,
    64,
  ),
}


def build(spec, causal, impl=None, seed=0, layer_idx=0):
  spec = dict(spec) if impl is None else {**spec, "impl": impl}
  return mixers.build(spec, dim=D, causal=causal, rngs=nnx.Rngs(seed), layer_idx=layer_idx)


def padding_mask(L):
  return np.arange(L)[None, :] < np.array([[L], [L - 6]])  # [2, L]; row 1 padded at the end


def normal(seed, *shape):
  # numpy inputs: eager jax ops would each compile a tiny program for every new shape
  return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def fwd_and_grads(m, x, mask, r):
  """Outputs, d(loss)/d(params) and d(loss)/dx for loss = sum over real outputs of y * r."""
  graph, params, rest = nnx.split(m, nnx.Param, ...)

  @functools.partial(jax.jit, compiler_options=FAST)
  def go(params, x):
    def loss(params, x):
      y = nnx.merge(graph, params, rest)(x, mask)
      return jnp.sum(jnp.where(mask[..., None], y * r, 0.0)), y

    return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x)

  (_, y), (gp, gx) = go(params, x)
  return np.asarray(y), [np.asarray(g) for g in jax.tree.leaves(gp)], np.asarray(gx)


def refused(spec, causal):
  """Causal models refuse "first" global tokens (they would see only themselves)."""
  return causal and spec.get("global_tokens") and spec.get("global_mode", "first") == "first"


@pytest.mark.parametrize(
  "case, causal",
  [
    (c, k)
    for c in sorted(KERNEL_CASES)
    for k in (False, True)
    if not refused(KERNEL_CASES[c][0], k)
  ],
)
def test_kernel_matches_dense_oracle_with_padding(case, causal):
  """Forward and gradients (x and params) equal the dense oracle's; padding is inert.

  Batch rows: full length, padded tail, all padding, and row 1 again with other padding.
  """
  spec, L_bi, L_causal = KERNEL_CASES[case]
  L = L_causal if causal else L_bi
  fast, oracle = build(spec, causal), build(spec, causal, impl="dense")
  assert fast.impl != "dense"
  lengths = np.array([L, L - 6, 0, L - 6])
  mask = np.arange(L)[None, :] < lengths[:, None]  # [4, L]
  x = normal(1, 3, L, D)
  repadded = np.where(mask[1][:, None], x[1], 50.0 * normal(2, L, D))
  x = np.concatenate([x, repadded[None]])  # row 3: row 1's real tokens, other padding
  r = normal(3, 4, L, D)
  y1, gp1, gx1 = fwd_and_grads(fast, x, mask, r)
  y2, gp2, gx2 = fwd_and_grads(oracle, x, mask, r)
  real = np.asarray(mask)
  np.testing.assert_allclose(y1[real], y2[real], atol=2e-5, rtol=1e-4)
  np.testing.assert_allclose(gx1, gx2, atol=2e-5, rtol=1e-4)
  for a, b in zip(gp1, gp2, strict=True):
    np.testing.assert_allclose(a, b, atol=5e-5, rtol=1e-4)
  assert np.isfinite(y1).all() and np.isfinite(gx1).all()
  assert all(np.isfinite(g).all() for g in gp1)
  np.testing.assert_allclose(y1[3][real[3]], y1[1][real[1]], atol=1e-5, rtol=1e-5)
  assert not gx1[~real].any()  # padded inputs get exactly zero gradient


def dependency(m, L, seed=0):
  """dep[i, j]: does output i change when input j alone is perturbed? (one batch row per j)"""
  x = normal(seed, 1, L, D)
  bump = 3.0 * np.eye(L, dtype=np.float32)[:, :, None] * normal(seed + 1, D)
  y = np.asarray(run(m, np.concatenate([x, x + bump])))  # [1 + L(j), L(i), D]
  return (np.abs(y[1:] - y[:1]).max(-1) > 1e-4).T  # [L(i), L(j)]


@pytest.mark.parametrize("causal", [False, True], ids=["bi", "causal"])
@pytest.mark.parametrize("w", [5, 16])
def test_local_window_is_exact_and_contiguous(w, causal):
  """Perturbing the key at distance w changes output i, at w+1 it does not, for every i."""
  L = 37
  dep = dependency(build({"name": "local", "window": w}, causal), L)
  np.testing.assert_array_equal(dep, masks.local_mask(L, w, causal=causal))
  i = np.arange(L)
  for d in (w, -w) if not causal else (w,):
    inside = (i - d >= 0) & (i - d < L)
    assert dep[i[inside], i[inside] - d].all()
  for d in (w + 1, -(w + 1)):
    inside = (i - d >= 0) & (i - d < L)
    assert not dep[i[inside], i[inside] - d].any()


def test_first_global_tokens_see_and_are_seen_by_everything():
  L, w, g = 37, 4, 2
  dep = dependency(build({"name": "local", "window": w, "global_tokens": g}, False), L)
  np.testing.assert_array_equal(dep, masks.local_global_mask(L, w, g, causal=False))
  assert dep[:g].all() and dep[:, :g].all()


@pytest.mark.parametrize("causal", [False, True], ids=["bi", "causal"])
def test_summary_slots_reach_everything_and_stay_causal(causal):
  """With summary slots one layer depends on every input (causal: exactly every input at or
  before the output, nothing after), though the window is 4 of 37 tokens."""
  spec = {"name": "local", "window": 4, "global_tokens": 2, "global_mode": "summary"}
  m = build(spec, causal)
  dep = dependency(m, 37)
  np.testing.assert_array_equal(dep, masks.causal_mask(37) if causal else np.ones((37, 37)))
  assert m.receptive_field() == ((UNBOUNDED, 0) if causal else None)


@pytest.mark.parametrize("causal", [False, True], ids=["bi", "causal"])
def test_local_global_measured_field_is_the_analytic_one(causal):
  """What scripts/receptive_field.py reports for the local_global preset: one layer measures
  the whole past (the whole sequence), as analytic, and a window-only layer after it too."""
  from lrm.analysis import receptive_field as rf
  from lrm.model import Encoder

  spec = mixers.presets.spec_list("local_global+local", window=4, heads=2, causal=causal)
  enc = Encoder(
    vocab_size=7, dim=16, depth=2, mixer=spec, causal=causal, max_len=48, rngs=nnx.Rngs(0)
  )
  for f in rf.measure(enc, 48, position=30):
    assert f.measured == f.analytic == ((0, 30) if causal else (0, 47))
    assert f.contiguous and f.size == f.analytic_size


def test_causal_first_global_tokens_are_refused():
  with pytest.raises(ValueError, match="no reach.*global_mode='summary'"):
    build({"name": "local", "window": 4, "global_tokens": 2}, causal=True)


def test_learned_global_tokens_leave_real_dependencies_local():
  """Learned tokens are parameters, re-made in every layer: reach stays the window."""
  spec = {"name": "local", "window": 4, "global_tokens": 2, "global_mode": "learned"}
  dep = dependency(build(spec, False), 37)
  np.testing.assert_array_equal(dep, masks.local_mask(37, 4, causal=False))


@pytest.mark.parametrize(
  "case, causal",
  [("global", True), ("random", False), ("random", True), ("bigbird", False), ("bigbird", True)],
)
def test_dependency_equals_pattern(case, causal):
  """Which inputs reach which outputs is exactly the documented mask (so causal too)."""
  spec, L = KERNEL_CASES[case][0], 37
  m = build(spec, causal)
  dep = dependency(m, L)
  if case == "global":
    want = masks.causal_mask(L) if causal else np.ones((L, L), bool)
  else:
    T, W = m.geometry(L)
    want = np.asarray(m.dense_mask(L, T, *m.pattern(W)))
    assert not want.all()  # the pattern is really sparse at this size
  np.testing.assert_array_equal(dep, want)
  if causal:
    assert not np.triu(dep, 1).any()


def test_resample_policy_changes_in_train_and_is_fixed_in_eval():
  spec = {**KERNEL_CASES["random"][0], "policy": "resample"}
  L = 64
  m = build(spec, causal=False)
  fixed = build({**spec, "policy": "fixed"}, causal=False)  # same params (same seed)
  x = normal(0, 2, L, D)
  T, W = m.geometry(L)
  y_a, y_b = run(m, x), run(m, x)
  assert not np.allclose(np.asarray(y_a), np.asarray(y_b))  # new pattern every train step
  m.eval()
  e_a, e_b = run(m, x), run(m, x)
  np.testing.assert_array_equal(np.asarray(e_a), np.asarray(e_b))
  np.testing.assert_allclose(np.asarray(e_a), np.asarray(run(fixed, x)), atol=1e-6)
  np.testing.assert_array_equal(m.pattern(W)[0], fixed.pattern(W)[0])


def test_resampled_gather_matches_dense_on_the_same_draw():
  """A traced (resampled) table goes through the same kernel as a fixed one."""
  spec = {**KERNEL_CASES["random"][0], "policy": "resample"}
  x = normal(0, 2, 37, D)
  fast, oracle = build(spec, causal=True), build(spec, causal=True, impl="dense")
  # both forked the same stream from the same seed, so each call draws the same table
  np.testing.assert_allclose(run(fast, x), run(oracle, x), atol=2e-5, rtol=1e-4)


def test_fixed_pattern_is_determined_by_seed_and_layer():
  spec = {"name": "bigbird", "block_size": 4, "random_blocks": 2}
  W = 16
  a = build(spec, causal=False, seed=0, layer_idx=3).pattern(W)
  b = build(spec, causal=False, seed=7, layer_idx=3).pattern(W)  # other params, same pattern
  c = build(spec, causal=False, seed=0, layer_idx=4).pattern(W)
  d = build({**spec, "seed": 1}, causal=False, seed=0, layer_idx=3).pattern(W)
  np.testing.assert_array_equal(a[0], b[0])
  assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[0], d[0])


def test_runs_draw_their_pattern_from_the_config_seed(data_cache):
  """A run fills its seed into every random/BigBird spec (config.json records it); another
  seed draws another pattern, the same seed (a resumed run) the same one."""
  from lrm.config import base_config, set_mixer
  from lrm.run import Run

  c = base_config()
  c.task = "recall"
  c.data.update(dict(num_pairs=2, vocab_size=16, seq_len=64, distance_buckets=(4, 8)))
  c.data.update(dict(num_train=8, num_val=4, num_test=4))
  c.model.dim, c.model.depth = 16, 2
  set_mixer(c.model, [{"name": "conv"}, {"name": "bigbird", "block_size": 4, "random_blocks": 2}])

  def pattern(run):
    return run.model.encoder.mixer_list()[1].pattern(16)[0]

  runs = {}
  for seed in (0, 3):
    c.seed = seed
    runs[seed] = Run(c)
    assert runs[seed].plain["model"]["mixer"][1]["seed"] == seed
    assert "seed" not in runs[seed].plain["model"]["mixer"][0]  # conv has no pattern
  assert not np.array_equal(pattern(runs[0]), pattern(runs[3]))
  np.testing.assert_array_equal(pattern(Run(runs[3].plain)), pattern(runs[3]))


def test_dtype_is_preserved_in_bfloat16():
  x = jax.ShapeDtypeStruct((1, 37, D), jnp.bfloat16)
  for name in ("global", "local_summary", "local_learned", "random", "bigbird"):
    m = build(KERNEL_CASES[name][0], causal=True)
    assert jax.eval_shape(lambda x, m=m: m(x), x).dtype == jnp.bfloat16
  y = run(build(KERNEL_CASES["bigbird"][0], causal=True), np.ones((1, 37, D), jnp.bfloat16))
  assert y.dtype == jnp.bfloat16 and np.isfinite(np.asarray(y, np.float32)).all()


FLOP_CASES = [
  {"name": "global"},
  {"name": "global", "impl": "dense", "rotary": True},
  {"name": "local", "window": 32},
  {"name": "local", "window": 20, "global_tokens": 4, "rotary": True},
  {"name": "local", "window": 20, "global_tokens": 2, "global_mode": "summary"},
  {"name": "local", "window": 20, "global_tokens": 2, "global_mode": "summary", "impl": "dense"},
  {"name": "local", "window": 20, "global_tokens": 4, "global_mode": "learned"},
  {"name": "random", "block_size": 16},
  {"name": "bigbird", "block_size": 16},
  {"name": "bigbird", "block_size": 16, "impl": "dense"},
]


def xla_flops(m, L, compiled=False):
  graph, state = nnx.split(m)
  lowered = jax.jit(lambda state, x: nnx.merge(graph, state)(x)).lower(
    state, jax.ShapeDtypeStruct((1, L, m.dim), jnp.float32)
  )
  return (lowered.compile() if compiled else lowered).cost_analysis()["flops"]


@pytest.mark.parametrize(
  "spec, causal",
  [(s, k) for s in FLOP_CASES for k in (False, True) if not refused(s, k)],
  ids=lambda x: (
    "-".join(map(str, x.values())) if isinstance(x, dict) else ("causal" if x else "bi")
  ),
)
def test_flops_match_xla_cost_analysis(spec, causal):
  """Analytic FLOPs within 15% of XLA's count (lowered program; compiled for two cases)."""
  L = 256
  m = mixers.build(spec, dim=64, causal=causal, rngs=nnx.Rngs(0))
  compiled = not causal and spec == {"name": "local", "window": 32}
  assert 0.85 < m.flops(L) / xla_flops(m, L, compiled) < 1.15


def test_blocked_local_memory_is_linear():
  """Compiled temp memory at L=4096, w=64 is far below one L x L float32 matrix, and it
  grows linearly with L."""
  spec = {"name": "local", "window": 64, "num_heads": 1}

  def temp_bytes(L):
    m = mixers.build(spec, dim=32, causal=False, rngs=nnx.Rngs(0))
    graph, state = nnx.split(m)
    f = jax.jit(lambda state, x: nnx.merge(graph, state)(x), compiler_options=FAST)
    x = jax.ShapeDtypeStruct((1, L, 32), jnp.float32)
    return f.lower(state, x).compile().memory_analysis().temp_size_in_bytes

  small, big = temp_bytes(4096), temp_bytes(8192)
  assert small < 4096 * 4096 * 4 / 8
  assert big < 2.5 * small


def test_receptive_field_and_impl():
  assert build({"name": "local", "window": 7}, False).receptive_field() == (7, 7)
  assert build({"name": "local", "window": 7}, True).receptive_field() == (7, 0)
  learned = {"name": "local", "window": 7, "global_tokens": 1, "global_mode": "learned"}
  assert build(learned, False).receptive_field() == (7, 7)
  assert build({"name": "local", "window": 7, "global_tokens": 1}, False).receptive_field() is None
  for name, impl in [("global", "xla"), ("random", "gather"), ("bigbird", "gather")]:
    m = build({"name": name}, False)
    assert m.receptive_field() is None and m.impl == impl
  assert build({"name": "local"}, False).impl == "blocked"


@pytest.mark.parametrize(
  "spec, match",
  [
    ({"name": "local", "window": -1}, "window"),
    ({"name": "local", "num_heads": 3}, "divisible"),
    ({"name": "local", "impl": "fast"}, "impl"),
    ({"name": "local", "global_mode": "middle"}, "global_mode"),
    ({"name": "bigbird", "window_blocks": 2}, "odd"),
    ({"name": "random", "policy": "sometimes"}, "policy"),
    ({"name": "global", "num_heads": 16, "rotary": True}, "even"),
  ],
)
def test_bad_options_raise_clear_errors(spec, match):
  with pytest.raises(ValueError, match=match):
    build(spec, causal=False)
  with pytest.raises(ValueError, match="random="):
    mixers.build(
      {"name": "random", "policy": "resample"}, dim=D, causal=False, rngs=nnx.Rngs(params=0)
    )
