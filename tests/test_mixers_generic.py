"""The mixer contract, checked for every registered mixer by parametrisation over names()."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lrm import mixers, registry
from lrm.mixers.base import UNBOUNDED

DIM, LEN = 16, 21
# Every mixer is tested as one of its presets would build it, at a small reach (window radius 2,
# blocks of 4 tokens), so a new mixer with a preset needs no entry here; one without a preset
# runs with its defaults.
REACH = dict(window=2, heads=2, block=4)


def small_spec(name: str, causal: bool = False) -> dict:
  for preset in mixers.presets.names():
    spec = mixers.presets.spec(preset, causal=causal, **REACH)
    if spec["name"] == name:
      return spec
  spec = {"name": name}
  if "num_heads" in registry.options(registry.lookup("mixer", name), mixers.SHARED):
    spec["num_heads"] = 2
  return spec


def make(name: str, causal: bool, seed: int = 0) -> mixers.Mixer:
  m = mixers.build(
    small_spec(name, causal), dim=DIM, causal=causal, rngs=nnx.Rngs(seed), layer_idx=1
  )
  m.eval()
  return m


def inputs(seed: int = 0, length: int = LEN) -> jax.Array:
  return jax.random.normal(jax.random.key(seed), (2, length, DIM))


NAMES = mixers.names()


def test_core_mixers_registered():
  expected = {"conv", "local", "global", "random", "bigbird", "dynamic_conv", "involution"}
  assert expected <= set(NAMES), f"missing mixers: {expected - set(NAMES)}"


def test_unknown_name_and_option_list_what_is_known():
  with pytest.raises(KeyError, match="known mixers: .*local"):
    mixers.build({"name": "nope"}, dim=8, causal=False, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="unknown option.*windw.*known options:.*window"):
    mixers.build({"name": "local", "windw": 3}, dim=8, causal=False, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("causal", [False, True])
def test_shape_jit_and_finite_gradients(name, causal):
  m = make(name, causal)
  x = inputs()
  mask = jnp.arange(LEN)[None, :] < jnp.array([[LEN], [LEN - 6]])
  y = nnx.jit(lambda m, x, k: m(x, k))(m, x, mask)
  assert y.shape == x.shape and y.dtype == x.dtype
  assert bool(jnp.all(jnp.isfinite(y)))

  def loss(m, x):
    return jnp.sum(m(x, mask) ** 2)

  gm, gx = nnx.grad(loss, argnums=(0, 1))(m, x)
  leaves = jax.tree.leaves(nnx.state(gm, nnx.Param)) + [gx]
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
  assert any(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(nnx.state(gm, nnx.Param)))


@pytest.mark.parametrize("name", NAMES)
def test_causal_outputs_ignore_the_future(name):
  m = make(name, causal=True)
  x = inputs()
  t = 11
  x2 = x.at[:, t:].set(jax.random.normal(jax.random.key(7), x[:, t:].shape))
  y, y2 = m(x), m(x2)
  np.testing.assert_allclose(y[:, :t], y2[:, :t], atol=1e-5)
  assert not np.allclose(y[:, t:], y2[:, t:], atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_bidirectional_outputs_see_the_future(name):
  m = make(name, causal=False)
  x = inputs()
  x2 = x.at[:, 11].add(1.0)
  assert not np.allclose(m(x)[:, 10], m(x2)[:, 10], atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("causal", [False, True])
def test_padding_never_influences_real_tokens(name, causal):
  m = make(name, causal)
  x = inputs()
  n_real = 13
  mask = jnp.broadcast_to(jnp.arange(LEN) < n_real, (2, LEN))
  noisy = x.at[:, n_real:].set(1e3 * jax.random.normal(jax.random.key(3), x[:, n_real:].shape))
  y, y2 = m(x, mask), m(noisy, mask)
  np.testing.assert_allclose(y[:, :n_real], y2[:, :n_real], atol=1e-4, rtol=1e-4)
  assert bool(jnp.all(jnp.isfinite(y2)))


@pytest.mark.parametrize("name", NAMES)
def test_param_count_matches_state(name):
  m = make(name, causal=False)
  leaves = jax.tree.leaves(nnx.state(m, nnx.Param))
  assert m.num_params() == sum(p.size for p in leaves) > 0


@pytest.mark.parametrize("name", NAMES)
def test_flops_are_positive_and_grow_with_length(name):
  m = make(name, causal=False)
  f1, f2 = m.flops(256), m.flops(1024)
  assert f1 > 0 and f2 > f1
  assert isinstance(m.impl, str) and m.impl


@pytest.mark.parametrize("name", NAMES)
def test_constructor_follows_the_contract(name):
  cls = registry.lookup("mixer", name)
  params = inspect.signature(cls.__init__).parameters
  for shared in ("dim", "causal", "rngs", "layer_idx"):
    assert shared in params, f"{name} must accept '{shared}'"
  for opt in registry.options(cls, mixers.SHARED):
    assert params[opt].default is not inspect.Parameter.empty, f"{name}.{opt} needs a default"


@pytest.mark.parametrize("preset", mixers.presets.names())
@pytest.mark.parametrize("causal", [False, True])
def test_every_preset_builds_with_its_declared_reach(preset, causal):
  """Presets use exactly the mixers' option names; a windowed preset follows ``window`` (its
  own field is the window's, unless global tokens make it the whole sequence or the whole
  past); the others ignore it."""
  spec = mixers.presets.spec(preset, window=3, heads=2, block=4, causal=causal)
  m = mixers.build(spec, dim=DIM, causal=causal, rngs=nnx.Rngs(0))
  x = jax.ShapeDtypeStruct((1, 24, DIM), jnp.float32)
  assert jax.eval_shape(lambda x: m(x), x).shape == (1, 24, DIM)
  wider = mixers.presets.spec(preset, window=5, heads=2, block=4, causal=causal)
  assert (wider != spec) == mixers.presets.windowed(preset)
  field = m.receptive_field()
  if mixers.presets.windowed(preset) and field is not None and UNBOUNDED not in field:
    assert field == ((3, 0) if causal else (3, 3))


def test_hybrid_presets_join_with_plus():
  specs = mixers.presets.spec("conv+conv+global", window=4, heads=2, causal=True)
  assert [s["name"] for s in specs] == ["conv", "conv", "global"]
  assert specs[0]["kernel_size"] == 5  # causal: w + 1
  assert mixers.presets.windowed("conv+global") and not mixers.presets.windowed("global")
  with pytest.raises(ValueError, match="unknown mixer preset 'glob' in 'conv\\+glob'.*known:"):
    mixers.presets.spec("conv+glob")
