"""``rglru`` (Griffin's recurrent block): the associative scan against the sequential oracle,
exact causality, padding in both directions, decoding, a constant cache, a ``griffin`` stack
through the trainer, and Google DeepMind's ``recurrentgemma`` layer with the same weights
(skipped when that optional package is not installed)."""

from __future__ import annotations

import importlib
import sys

import jax
import jax.numpy as jnp
import mixer_checks as checks
import numpy as np
import pytest
from conftest import REPO
from flax import nnx
from test_hybrids import recall_config

from lrm import mixers
from lrm.mixers import presets, rglru
from lrm.train import loop

D, B = 16, 2
TOL = checks.TOL

pytestmark = pytest.mark.usefixtures("fast_compile")  # most XLA passes off: compiles faster


def build(causal: bool, impl: str = "auto", seed: int = 0, **opts) -> rglru.RGLRU:
  spec = {"name": "rglru", "num_heads": 2, "impl": impl, **opts}
  m = mixers.build(spec, dim=D, causal=causal, rngs=nnx.Rngs(seed), layer_idx=0)
  m.eval()
  return m


def inputs(length: int, seed: int = 0, batch: int = B) -> jax.Array:
  return checks.inputs(length, D, seed, batch)


def test_kernels_agree_on_raw_recurrences():
  """Decays from 0 to 1 (1: a pure running sum) over an odd length."""
  L, E = 257, 5
  a = jnp.broadcast_to(jnp.array([0.0, 0.5, 0.9, 0.999, 1.0]), (B, L, E))
  b = jax.random.normal(jax.random.key(1), (B, L, E))
  want = rglru.scan_recurrence(a, b)
  np.testing.assert_allclose(want[0, :, 0], b[0, :, 0])  # a = 0: h_t = b_t
  np.testing.assert_allclose(want[0, :, 4], jnp.cumsum(b[0, :, 4]), atol=1e-4)
  np.testing.assert_allclose(rglru.associative_recurrence(a, b), want, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("length", [1, 6, 33])
def test_associative_scan_equals_the_sequential_oracle(causal, length):
  """Forward and gradients (parameters and input), padded and not, same weights."""
  checks.assert_kernels_agree(build(causal, "associative"), build(causal, "scan"), inputs(length))


@pytest.mark.parametrize("impl", ["scan", "associative"])
def test_causality_is_exact_for_every_pair(impl):
  """d out_i / d x_j is exactly 0 for every j > i and not 0 for j <= i (bidirectional: never
  0)."""
  checks.assert_exact_causality(lambda causal: build(causal, impl), 9, D)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("impl", ["scan", "associative"])
def test_padding_never_enters_either_state(causal, impl):
  """A padded row gives the outputs of its real prefix alone, whatever the padding holds (the
  reverse pass starts on the padding); its padded outputs and all gradients are finite."""
  checks.assert_padding_never_enters(build(causal, impl), 12, 7, D)


def test_initialisation_follows_the_paper():
  """a = sigmoid(lam) in [0.9, 0.999] (a**2 uniform), c = 8, conv of width 4; the bidirectional
  block has a second recurrence with its own weights."""
  m = mixers.build({"name": "rglru"}, dim=256, causal=False, rngs=nnx.Rngs(0))
  a = np.asarray(jax.nn.sigmoid(m.forward_branch.a_logit[...]))
  assert (
    0.9 <= a.min() and a.max() <= 0.999 and 0.89 < np.mean(a**2) < 0.92
  )  # mean of U(0.81, 0.998)
  assert rglru.C == 8.0 and m.forward_branch.conv.shape == (4, 256)
  assert m.reverse_branch is not None and not np.array_equal(
    m.reverse_branch.a_logit[...], m.forward_branch.a_logit[...]
  )
  causal = build(True)
  assert causal.reverse_branch is None and causal.receptive_field() == (mixers.base.UNBOUNDED, 0)
  assert build(False).receptive_field() is None


def test_auto_runs_the_scan_on_cpu_and_the_associative_scan_elsewhere():
  m = build(True)
  with mixers.for_platform("cpu"):
    assert m.impl == "scan"
  for platform in ("tpu", "cuda"):
    with mixers.for_platform(platform):
      assert m.impl == "associative"
  assert build(True, "associative").impl == "associative"


@pytest.mark.parametrize("impl", ["scan", "associative"])
def test_decoding_equals_the_parallel_forward_at_every_position(impl):
  checks.assert_decoding_equals_forward(build(True, impl), (7, 1, 2), D)  # prompts < and > K - 1


def test_cache_is_the_conv_window_and_the_state_whatever_max_len():
  m, E = build(True, lru_width=24), 24
  size = m.cache_bytes(B, 64)
  assert size == m.cache_bytes(B, 1 << 20) == B * (3 * E + E) * 4  # 3 conv inputs + h, fp32
  with pytest.raises(mixers.DecodeError, match="bidirectional"):
    build(False).init_cache(1, 8)


def test_flops_count_each_direction_and_the_kernel():
  causal, both = build(True), build(False)
  assert both.flops(512) > 1.9 * causal.flops(512) - 2 * 512 * D * D * 3
  assert causal.flops(512, impl="associative") > causal.algorithmic_flops(512)
  assert causal.flops(1024) == pytest.approx(2 * causal.flops(512), rel=1e-6)  # linear in L


def test_griffin_is_a_named_stack():
  specs = presets.spec("griffin", window=4, heads=2, causal=True)
  assert [s["name"] for s in specs] == ["rglru", "rglru", "local"] and specs[2]["window"] == 4
  assert presets.is_hybrid("griffin") and presets.windowed("griffin")
  assert presets.parts("griffin+global") == ["rglru", "rglru", "local", "global"]
  assert "griffin" in presets.stacks() and "griffin" not in presets.names()
  with pytest.raises(ValueError, match="stacks: .*griffin"):
    presets.parts("griffn")
  with pytest.raises(ValueError, match="unknown: nope"):
    presets.register_stack("bad_stack", ("rglru", "nope"))
  with pytest.raises(KeyError, match="already registered"):
    presets.register_stack("local", ("rglru", "local"))


def test_griffin_trains_end_to_end(tmp_path, data_cache):
  cfg = recall_config("mixer=griffin,size=small")
  assert [s["name"] for s in cfg.model.mixer] == ["conv", "rglru", "rglru", "local"]
  res = loop.run(cfg, tmp_path)
  assert np.isfinite(res["final"]["test"][res["main_metric"]])


# ---- recurrentgemma: the same recurrence with the same weights ----------------------------------


def recurrentgemma_block(m: rglru.RGLRU, x: jax.Array):
  """recurrentgemma's ``RecurrentBlock`` with ``m``'s weights (the copy
  ``benchmarks/peers.py`` times, ``peer_impls.recurrentgemma_block``, which checks that every
  weight is copied): (outputs, last RG-LRU state)."""
  pytest.importorskip(
    "recurrentgemma.jax",
    reason="recurrentgemma is not installed (optional, see pyproject.toml's rglru-peer extra: "
    'pip install -e ".[rglru-peer]", then pip install --no-deps recurrentgemma==1.0.1)',
  )
  sys.path.insert(0, str(REPO))  # ``benchmarks`` is not installed; its scripts do the same
  try:
    peer_impls = importlib.import_module("benchmarks.peer_impls")
  finally:
    sys.path.remove(str(REPO))
  block, variables, pos = peer_impls.recurrentgemma_block(m, *x.shape[:2])
  y, cache = block.apply(variables, x, pos)
  return y, cache.rg_lru_state


@pytest.mark.parametrize("impl", ["scan", "associative"])
def test_recurrentgemma_computes_the_same_block(impl):
  m, L = build(True, impl, num_heads=4, lru_width=24), 37
  x = inputs(L)
  want, want_h = recurrentgemma_block(m, x)
  np.testing.assert_allclose(m(x), want, **TOL)
  np.testing.assert_allclose(m.states(x)[:, -1], want_h, **TOL)
