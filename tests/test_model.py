"""The shared encoder and the heads."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lrm import heads, mixers
from lrm.model import Encoder, layer_specs, sinusoidal_table

CONV = {"name": "conv", "kernel_size": 3}
LOCAL = {"name": "local", "window": 2, "num_heads": 2}
GLOBAL = {"name": "global", "num_heads": 2}


def encoder(mixer=CONV, depth=2, causal=False, positions="learned", **kw) -> Encoder:
  return Encoder(
    vocab_size=11,
    dim=16,
    depth=depth,
    mixer=mixer,
    causal=causal,
    max_len=32,
    positions=positions,
    rngs=nnx.Rngs(0),
    **kw,
  )


def tokens(length=20, seed=0):
  return jax.random.randint(jax.random.key(seed), (2, length), 0, 11)


def test_layer_pattern_is_cycled_over_depth():
  specs = layer_specs([LOCAL, LOCAL, GLOBAL], 5)
  assert [s["name"] for s in specs] == ["local", "local", "global", "local", "local"]
  enc = encoder([LOCAL, GLOBAL], depth=3)
  assert [m.registered_name for m in enc.mixer_list()] == ["local", "global", "local"]
  with pytest.raises(ValueError, match="empty list"):
    layer_specs([], 2)
  # a stack longer than the model used to lose its last layers silently (griffin at depth 2
  # had no local layer); now it is refused, naming both keys
  with pytest.raises(
    ValueError, match=r"stack of 3 layers \(local\+local\+global\) but model\.depth=2"
  ):
    layer_specs([LOCAL, LOCAL, GLOBAL], 2)


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rotary", "none"])
def test_positions(positions):
  spec = mixers.with_run_options(LOCAL, seed=0, rotary=positions == "rotary")
  enc = encoder(spec, positions=positions)
  y, outs = enc(tokens(), intermediates=True)
  assert y.shape == (2, 20, 16) and len(outs) == 2
  assert bool(jnp.all(jnp.isfinite(y)))
  if positions == "rotary":
    assert all(m.rotary for m in enc.mixer_list())
  if positions in ("learned", "sinusoidal"):  # absolute positions tell repeated tokens apart
    same = jnp.full((1, 8), 3)
    h = enc(same)
    assert not np.allclose(h[0, 2], h[0, 5], atol=1e-5)


def test_sinusoidal_table_values():
  t = sinusoidal_table(4, 6)
  np.testing.assert_allclose(t[0], [0, 1, 0, 1, 0, 1], atol=1e-7)
  np.testing.assert_allclose(t[1, 0], np.sin(1.0), atol=1e-6)


def test_errors_are_clear():
  with pytest.raises(ValueError, match="unknown positions 'abs'"):
    encoder(positions="abs")
  with pytest.raises(ValueError, match="exceeds the encoder's max_len 32"):
    encoder()(tokens(40))
  with pytest.raises(KeyError, match="unknown mixer 'lokal'"):
    encoder({"name": "lokal"})


def test_language_model_tied_and_untied():
  enc = encoder(LOCAL, causal=True)
  lm = heads.LanguageModel(enc, 11, tie=True, rngs=nnx.Rngs(1))
  assert lm(tokens()).shape == (2, 20, 11)
  untied = heads.LanguageModel(encoder(LOCAL, causal=True), 11, tie=False, rngs=nnx.Rngs(1))
  assert untied(tokens()).shape == (2, 20, 11)
  with pytest.raises(ValueError, match="causal encoder"):
    heads.LanguageModel(encoder(LOCAL, causal=False), 11, rngs=nnx.Rngs(1))


@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_classifier_ignores_padding(pool):
  clf = heads.Classifier(encoder(LOCAL), 3, pool=pool, rngs=nnx.Rngs(1))
  t = tokens()
  mask = jnp.arange(20)[None, :] < jnp.array([[20], [12]])
  t2 = t.at[1, 12:].set(5)
  a, b = clf(t, mask), clf(t2, mask)
  assert a.shape == (2, 3)
  np.testing.assert_allclose(a[1], b[1], atol=1e-5)


def test_dual_encoder_shares_one_encoder():
  dual = heads.DualEncoder(encoder(CONV), 2, rngs=nnx.Rngs(1))
  t1, t2 = tokens(seed=1), tokens(seed=2)
  m = jnp.ones((2, 20), bool)
  out = dual(t1, m, t2, m)
  assert out.shape == (2, 2)
  assert not np.allclose(out, dual(t2, m, t1, m))  # order matters through u - v
  n_enc = sum(p.size for p in jax.tree.leaves(nnx.state(dual.encoder, nnx.Param)))
  n_all = sum(p.size for p in jax.tree.leaves(nnx.state(dual, nnx.Param)))
  assert n_all - n_enc == 4 * 16 * 16 + 16 + 16 * 2 + 2  # head only: one encoder, shared


def test_dropout_train_vs_eval():
  enc = encoder(LOCAL, dropout=0.5)
  enc.train()
  assert not np.allclose(enc(tokens()), enc(tokens()))
  enc.eval()
  np.testing.assert_array_equal(enc(tokens()), enc(tokens()))


def test_the_encoder_builds_exactly_the_specs_it_is_given():
  """No option is injected behind the config: rotary positions and pattern seeds are written
  into the specs by ``with_run_options`` (which ``Run`` calls, so config.json shows them)."""
  plain = encoder([LOCAL, {"name": "bigbird", "block_size": 4}], positions="rotary", depth=2)
  assert not any(m.rotary for m in plain.mixer_list())
  specs = mixers.with_run_options(
    [LOCAL, {"name": "bigbird", "block_size": 4}, {"name": "conv"}], seed=7, rotary=True
  )
  assert specs[0] == {**LOCAL, "rotary": True}
  assert specs[1] == {"name": "bigbird", "block_size": 4, "rotary": True, "seed": 7}
  assert specs[2] == {"name": "conv"}  # a conv takes neither
  kept = mixers.with_run_options({**LOCAL, "rotary": False}, seed=7, rotary=True)
  assert kept["rotary"] is False  # a spec's own value wins
  assert mixers.with_run_options(LOCAL, seed=7, rotary=False) == LOCAL
