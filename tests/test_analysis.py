"""Receptive-field measurement, effective kernels and FLOP counting."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lrm import heads
from lrm.analysis import content, counting
from lrm.analysis import receptive_field as rf
from lrm.model import Encoder


def encoder(mixer, depth, causal=False, dim=16, max_len=64, mlp_ratio=4) -> Encoder:
  return Encoder(
    vocab_size=7,
    dim=dim,
    depth=depth,
    mixer=mixer,
    causal=causal,
    max_len=max_len,
    mlp_ratio=mlp_ratio,
    rngs=nnx.Rngs(0),
  )


def test_two_kernel3_convs_see_five():
  fields = rf.measure(encoder({"name": "conv", "kernel_size": 3}, 2), 32, position=16)
  assert [f.size for f in fields] == [3, 5]
  assert fields[-1].measured == fields[-1].analytic == (14, 18)
  assert all(f.contiguous for f in fields)


@pytest.mark.parametrize("depth,w", [(2, 2), (3, 1)])
def test_local_attention_stack_sees_2Nw_plus_1(depth, w):
  spec = {"name": "local", "window": w, "num_heads": 2}
  fields = rf.measure(encoder(spec, depth), 40, position=20)
  for n, f in enumerate(fields, start=1):
    assert f.size == f.analytic_size == 2 * n * w + 1
    assert f.measured == f.analytic


def test_causal_conv_reaches_only_left_and_global_everything():
  fields = rf.measure(encoder({"name": "conv", "kernel_size": 3}, 2, causal=True), 32, position=16)
  assert fields[-1].measured == (12, 16)
  g = rf.measure(encoder({"name": "global", "num_heads": 2}, 1), 24, position=3)
  assert g[0].measured == g[0].analytic == (0, 23)


def test_hybrid_stack_and_clipping_at_the_edges():
  pattern = [{"name": "conv", "kernel_size": 5}, {"name": "local", "window": 1, "num_heads": 2}]
  fields = rf.measure(encoder(pattern, 2), 30, position=1)
  assert fields[0].measured == fields[0].analytic == (0, 3)
  assert fields[1].measured == fields[1].analytic == (0, 4)
  assert "conv" in rf.format_table(fields, 1, 30)
  assert json.loads(json.dumps(fields[1].to_dict()))["analytic_size"] == 5
  with pytest.raises(ValueError, match="outside"):
    rf.measure(encoder(pattern, 2), 30, position=30)


@pytest.mark.parametrize(
  "mixer",
  [
    {"name": "conv", "kernel_size": 5, "impl": "direct"},
    {"name": "local", "window": 16, "num_heads": 2},
    {"name": "global", "num_heads": 2, "impl": "dense"},
  ],
  ids=lambda m: m["name"],
)
def test_analytic_flops_match_xla(mixer):
  enc = encoder(mixer, 2, dim=64, max_len=256)
  enc.eval()
  model = heads.Classifier(enc, 4, rngs=nnx.Rngs(1))
  model.eval()
  tok = jnp.zeros((1, 256), jnp.int32)
  graphdef, state = nnx.split(model)
  counted = counting.xla_flops(lambda s, t: nnx.merge(graphdef, s)(t), state, tok)
  analytic = counting.forward_flops(model, 256)
  assert 0.8 * counted <= analytic <= 1.05 * counted, (analytic, counted)


def test_param_count_and_train_flops():
  model = heads.LanguageModel(
    encoder({"name": "conv", "kernel_size": 3}, 1, causal=True), 7, rngs=nnx.Rngs(0)
  )
  n = counting.param_count(model)
  assert n == sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert counting.train_flops_per_token(model, 32) == pytest.approx(
    3 * counting.forward_flops(model, 32) / 32
  )


def test_effective_kernels_static_for_conv_content_dependent_for_attention():
  tokens = jax.random.randint(jax.random.key(1), (1, 24), 0, 7)
  pattern = [{"name": "conv", "kernel_size": 5}, {"name": "local", "window": 2, "num_heads": 2}]
  enc = encoder(pattern, 2)
  conv, local = (content.layer_kernels(enc, tokens, layer, radius=3) for layer in (0, 1))
  assert list(conv.positions) == list(content.sample_positions(24, 3)) and len(conv.positions) > 8
  assert conv.variation < 1e-5 < 1e-2 < local.variation
  np.testing.assert_allclose(conv.kernels.sum(axis=1), 1.0, rtol=1e-6)
  assert not conv.kernels[:, [0, -1]].any()  # kernel 5 reaches offsets -2..2 only
  saved = json.loads(json.dumps(local.to_dict()))
  assert saved["offsets"] == list(range(-3, 4)) and saved["variation"] == local.variation
  assert np.asarray(saved["kernels"]).shape == (len(local.positions), 7)
  assert list(content.sample_positions(5, 3)) == [0, 1, 2, 3, 4]  # shorter than the window
