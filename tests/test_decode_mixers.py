"""Cached decoding of the attention mixers and hyena against their parallel forward.

For each causal mixer (every preset that builds one, and the options around it: rotary on and
off, impls, learned and summary tokens, block geometries) one compiled program runs the
parallel forward on ``x [B, L, D]``, a prefill of a prompt longer than the window followed by
one ``step`` per remaining token (the local ring buffer wraps several times), and the pure
step path from position 0 (the base ``prefill``, a scan of ``step``); all three agree at every
position. Cache sizes follow the issue: local's is independent of ``max_len``, global's is
linear in it, and block-sparse caches keep only the blocks some query still reads.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lrm.mixers as mixers
from lrm.mixers import attention, sparse
from lrm.mixers.base import DecodeError, Mixer

D, B = 16, 2
# Tests compile many small programs; skipping XLA's expensive passes halves compile time.
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
REACH = dict(window=3, heads=2, block=4, causal=True)


def preset(name: str, **opts) -> dict:
  return {**mixers.presets.spec(name, **REACH), **opts}


# case: (spec, L, max_len, prompt lengths). Windowed and full attention decode the forward
# of any length <= max_len; hyena's filter and the random tables depend on the length, so
# those decode the forward at length max_len.
CASES = {
  "global": (preset("global"), 19, 24, (7,)),
  "global_norot_dense": ({"name": "global", "num_heads": 4, "impl": "dense"}, 19, 19, (5,)),
  "local": (preset("local"), 23, 30, (9, 2)),
  "local_dense_w4": ({"name": "local", "window": 4, "num_heads": 2, "impl": "dense"}, 21, 21, (6,)),
  "local_wide": ({"name": "local", "window": 40, "rotary": True}, 17, 20, (5,)),  # w > max_len
  "local_w0": ({"name": "local", "window": 0, "num_heads": 2}, 9, 12, (3,)),  # itself only
  "local_learned": (preset("local", global_tokens=2, global_mode="learned"), 21, 25, (8,)),
  "local_global": (preset("local_global"), 23, 23, (9,)),
  "local_global_dense_norot": (
    preset("local_global", impl="dense", rotary=False, num_heads=4),
    19,
    19,
    (5,),
  ),
  "random": (preset("random"), 23, 23, (8,)),  # a prompt of whole blocks
  "random_dense_b3": (
    {"name": "random", "block_size": 3, "num_random_blocks": 2, "impl": "dense"},
    22,
    22,
    (4,),
  ),
  "local_random": (preset("local_random"), 25, 25, (10,)),
  "bigbird": (preset("bigbird"), 23, 23, (9,)),
  "bigbird_wide": (
    {
      "name": "bigbird",
      "block_size": 2,
      "window_blocks": 5,
      "global_blocks": 3,
      "random_blocks": 1,
      "policy": "resample",  # eval mode: the forward and decoding use the fixed draw
    },
    27,
    27,
    (7,),
  ),
  "hyena": ({"name": "hyena", "filter_dim": 16, "bands": 2}, 21, 21, (11,)),  # 8-token blocks
  "hyena_dense_k4": (
    {"name": "hyena", "filter_dim": 8, "bands": 1, "short_kernel": 4, "impl": "dense"},
    17,
    17,
    (2,),
  ),
}


def build(spec: dict, causal: bool = True) -> Mixer:
  m = mixers.build(spec, dim=D, causal=causal, rngs=nnx.Rngs(0), layer_idx=1)
  m.eval()
  return m


def decode_all(m: Mixer, x: np.ndarray, max_len: int, prompts: tuple[int, ...]):
  """(forward, [prefill + steps for each prompt length], pure steps from 0), compiled once."""
  graph, state = nnx.split(m)
  L = x.shape[1]

  def go(state, x):
    m = nnx.merge(graph, state)
    runs = []
    for P in prompts:
      y0, cache = m.prefill(x[:, :P], m.init_cache(B, max_len))

      def body(c, inputs):
        y_t, c = m.step(inputs[0], c, inputs[1])
        return c, y_t

      rest = (jnp.swapaxes(x[:, P:], 0, 1), jnp.arange(P, L, dtype=jnp.int32))
      _, ys = jax.lax.scan(body, cache, rest)  # [L-P, B, D]
      runs.append(jnp.concatenate([y0, jnp.swapaxes(ys, 0, 1)], axis=1))
    steps, _ = Mixer.prefill(m, x, m.init_cache(B, max_len))  # the base scan of step
    return m(x), runs, steps

  return jax.jit(go).lower(state, x).compile(FAST)(state, x)


@pytest.mark.parametrize("case", sorted(CASES))
def test_decoding_equals_the_parallel_forward(case):
  spec, L, max_len, prompts = CASES[case]
  m = build(spec)
  x = np.random.default_rng(0).standard_normal((B, L, D), dtype=np.float32)
  y, runs, steps = decode_all(m, x, max_len, prompts)
  for P, got in zip(prompts, runs, strict=True):
    np.testing.assert_allclose(got, y, atol=1e-5, rtol=1e-5, err_msg=f"prompt {P}")
  np.testing.assert_allclose(steps, y, atol=1e-5, rtol=1e-5, err_msg="steps from 0")


@pytest.mark.parametrize("name", ["global", "local", "local_global", "hyena"])
def test_bidirectional_mixers_refuse_decoding(name):
  m = build(preset(name) if name != "hyena" else {"name": "hyena", "filter_dim": 8}, causal=False)
  with pytest.raises(DecodeError, match="bidirectional"):
    m.init_cache(1, 8)
  with pytest.raises(DecodeError, match="bidirectional"):
    m.step(jnp.zeros((1, D)), {}, jnp.int32(0))


def test_cache_sizes_follow_the_receptive_field():
  """local (and local_global): O(w D), the same at any max_len; global: linear in max_len."""
  f32, w = 4, REACH["window"]
  local, slots = build(preset("local")), build(preset("local_global"))
  assert local.cache_bytes(B, 64) == local.cache_bytes(B, 4096) == 2 * B * w * D * f32
  assert slots.cache_bytes(B, 64) == slots.cache_bytes(B, 4096) < 2 * local.cache_bytes(B, 64)
  full = build(preset("global"))
  assert full.cache_bytes(B, 2048) == 2 * full.cache_bytes(B, 1024) == 2 * B * 2048 * D * f32
  hy = build({"name": "hyena", "filter_dim": 8})
  assert hy.cache_bytes(B, 2048) < 2.01 * hy.cache_bytes(B, 1024)


def test_rotary_at_matches_the_forward_table_far_out():
  """Traced positions rotate as ``attention.rotary``'s float64 table, also at 1M tokens."""
  x = np.random.default_rng(1).standard_normal((1, 2, 1, 8), dtype=np.float32)
  pos = np.array([0, 1, 127, 128, 5_000, 32_767, 1_000_003])
  want = np.stack([np.asarray(attention.rotary(x, np.array([p])))[:, :, 0] for p in pos])
  one = jax.jit(functools.partial(attention.rotary_at, x[:, :, 0]))
  got = np.stack([np.asarray(one(jnp.int32(p))) for p in pos])
  np.testing.assert_allclose(got, want, atol=2e-6)


def test_block_slots_are_the_blocks_still_read():
  """A block leaves the cache after the last query block that reads it, and slots are reused:
  a causal band of 3 blocks keeps 3 (2 earlier + its own); random tables keep fewer blocks
  than the sequence has; BigBird's last global block reads everything, so it keeps all."""
  W = 12
  c, d = np.arange(W)[:, None], np.arange(W)[None, :]
  band = sparse.plan((d <= c) & (c - d <= 2), np.zeros(W, bool))
  assert band["write"].max() + 1 == 3 and band["read"].shape[1] == 3
  spec = dict(heads=4, block=64, causal=True)
  full = build(mixers.presets.spec("global", **spec)).cache_bytes(1, 8192)
  for name in ("random", "local_random", "bigbird"):
    m = build(mixers.presets.spec(name, **spec))
    slots = int(sparse.plan(*m.decode_adjacency(128))["write"].max()) + 1
    if name == "bigbird":
      assert slots == 128 and full < m.cache_bytes(1, 8192) < 1.01 * full
    else:
      assert 8 < slots < 100 and m.cache_bytes(1, 8192) < 0.8 * full
