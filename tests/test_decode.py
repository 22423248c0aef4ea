"""Cached decoding against the parallel forward, for every causal mixer preset and hybrids.

The oracle: a tiny causal LM's logits from ``prefill(prompt)`` then one ``decode_step`` per
token equal the logits of one parallel forward over the whole sequence, at every position
(fp32). The prompt is longer than the window and the sequence wraps a window-sized ring
buffer several times.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lrm import decode, mixers
from lrm.heads import Classifier, LanguageModel
from lrm.mixers import DecodeError, presets
from lrm.model import Encoder

VOCAB, DIM, BATCH = 11, 16, 2
WINDOW, HEADS, BLOCK = 3, 2, 4
PROMPT, TOTAL = 9, 24  # prompt > window; TOTAL - PROMPT steps wrap a w-sized ring 5 times
TOL = 1e-5

pytestmark = pytest.mark.usefixtures("fast_compile")


def tiny_lm(mixer, depth: int = 2, positions: str = "learned", seed: int = 0) -> LanguageModel:
  enc = Encoder(
    vocab_size=VOCAB,
    dim=DIM,
    depth=depth,
    mixer=mixer,
    causal=True,
    max_len=TOTAL,
    positions=positions,
    mlp_ratio=2,
    rngs=nnx.Rngs(seed),
  )
  return LanguageModel(enc, VOCAB, rngs=nnx.Rngs(seed + 1))


def tokens(length: int = TOTAL, seed: int = 0) -> jax.Array:
  return jax.random.randint(jax.random.key(seed), (BATCH, length), 0, VOCAB)


def cached_logits(lm: LanguageModel, toks: jax.Array, prompt: int = PROMPT) -> jax.Array:
  """Logits ``[B, L, V]``: prefill of the prompt, then one cached step per token."""
  cache = lm.encoder.init_cache(BATCH, toks.shape[1])
  first, cache = decode.prefill_logits(lm, toks[:, :prompt], cache)
  out = [first]
  for t in range(prompt, toks.shape[1]):
    step, cache = decode.step_logits(lm, toks[:, t], cache, jnp.int32(t))
    out.append(step[:, None])
  return jnp.concatenate(out, axis=1)


def assert_decodes_like_forward(lm: LanguageModel, prompt: int = PROMPT) -> None:
  toks = tokens()
  want = np.asarray(lm(toks))  # [B, L, V]
  got = np.asarray(cached_logits(lm, toks, prompt))
  err = np.abs(got - want).max(axis=(0, 2))  # per position
  assert np.all(err <= TOL * (1 + np.abs(want).max())), f"max error per position: {err}"


def causal_spec(name: str):
  return presets.spec(name, window=WINDOW, heads=HEADS, block=BLOCK, causal=True)


@pytest.mark.parametrize("name", presets.names())
def test_every_causal_preset_decodes_like_the_parallel_forward(name):
  lm = tiny_lm(causal_spec(name), depth=1)  # stacks: the hybrids
  assert_decodes_like_forward(lm)
  # generation: the same greedy tokens with and without caches (shapes as above: no recompile)
  prompt, n = np.asarray(tokens()[:, :PROMPT]), TOTAL - PROMPT + 1
  greedy = decode.generate(lm, prompt, n, cache=True)
  np.testing.assert_array_equal(greedy, decode.generate(lm, prompt, n, cache=False))


@pytest.mark.parametrize("hybrid", ["conv+involution+gated_conv", "local+conv+global"])
def test_hybrid_stack_decodes_like_the_parallel_forward(hybrid):
  assert_decodes_like_forward(tiny_lm(causal_spec(hybrid), depth=3))


# Options the presets leave at their defaults: dilation, the full conv's fft path, the
# long-kernel paths, dynamic conv without its GLU, and a one-token prompt.
VARIANTS = {
  "conv_dilated_fft": dict(name="conv", kernel_size=3, dilation=2, impl="fft", gate=True),
  "conv_full_fft": dict(name="conv", kernel_size=4, depthwise=False, impl="fft"),
  "gated_conv_toeplitz": dict(name="gated_conv", kernel_size=5, dilation=2, impl="toeplitz"),
  "dynamic_conv_plain": dict(name="dynamic_conv", kernel_size=5, num_heads=2, glu=False),
  "involution_blocked": dict(name="involution", kernel_size=6, num_heads=4, impl="blocked"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_conv_options_decode_like_the_parallel_forward(variant):
  assert_decodes_like_forward(tiny_lm(VARIANTS[variant], positions="sinusoidal"), prompt=1)


@pytest.mark.parametrize("name", ["conv", "conv_full", "gated_conv", "dynamic_conv", "involution"])
def test_conv_caches_hold_the_window_not_the_sequence(name):
  m = mixers.build(causal_spec(name), dim=DIM, causal=True, rngs=nnx.Rngs(0))
  size = m.cache_bytes(1, 1_000)
  assert size == m.cache_bytes(1, 1_000_000) == WINDOW * DIM * 4  # K - 1 = w inputs, fp32
  assert m.cache_bytes(4, 10) == 4 * size


def test_bidirectional_model_refuses_to_decode_in_one_line():
  enc = Encoder(
    vocab_size=VOCAB,
    dim=DIM,
    depth=1,
    mixer=causal_spec("conv"),
    causal=False,
    max_len=8,
    rngs=nnx.Rngs(0),
  )
  with pytest.raises(DecodeError, match="bidirectional; decoding needs a causal model") as e:
    enc.init_cache(1, 8)
  assert "\n" not in str(e.value)
  with pytest.raises(DecodeError, match="causal language model"):
    decode.generate(Classifier(enc, 3, rngs=nnx.Rngs(0)), np.ones(3, np.int32), 2)


def test_lengths_beyond_max_len_are_refused():
  lm = tiny_lm(causal_spec("conv"), depth=1)
  with pytest.raises(DecodeError, match="max_len 24"):
    lm.encoder.init_cache(1, TOTAL + 1)
  cache = lm.encoder.init_cache(1, TOTAL)
  with pytest.raises(DecodeError, match="position 25 exceeds"):
    lm.encoder.decode_step(jnp.zeros((1,), jnp.int32), cache, TOTAL)
  with pytest.raises(DecodeError, match="lower max_new_tokens to 15"):
    decode.generate(lm, np.ones(10, np.int32), 16)
  assert decode.generate(lm, np.ones(10, np.int32), 15).shape == (15,)  # exactly fits


def test_generate_samples_follow_the_seed_in_both_paths():
  lm = tiny_lm(causal_spec("conv"), depth=1, seed=3)  # the preset test's shapes: compiled
  prompt, n = np.asarray(tokens()[:, :PROMPT]), TOTAL - PROMPT + 1
  sampled = [
    decode.generate(lm, prompt, n, temperature=1.5, top_k=5, seed=s, cache=c)
    for s, c in [(3, True), (3, False), (3, True), (4, True)]
  ]
  np.testing.assert_array_equal(sampled[0], sampled[1])
  np.testing.assert_array_equal(sampled[0], sampled[2])
  assert not np.array_equal(sampled[0], sampled[3])
  assert sampled[0].shape == (BATCH, n) and 0 <= sampled[0].min() and sampled[0].max() < VOCAB
  one = decode.generate(lm, prompt[1], 4)  # a [P] prompt gives [n] ids, as its batch row
  np.testing.assert_array_equal(one, decode.generate(lm, prompt, 4)[1])


@pytest.mark.parametrize("prompt", [2, 7])  # shorter and longer than the window
def test_parallel_prefill_equals_the_base_scan_of_steps(prompt):
  m = mixers.build(causal_spec("dynamic_conv"), dim=DIM, causal=True, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (BATCH, prompt, DIM))  # [B, P, D]
  cache = m.init_cache(BATCH, 16)
  y, c = m.prefill(x, cache)  # the mixer's parallel forward
  y_ref, c_ref = mixers.Mixer.prefill(m, x, cache)  # the contract's default: scan of step
  np.testing.assert_allclose(y, y_ref, atol=TOL)
  np.testing.assert_allclose(c["window"], c_ref["window"], atol=TOL)
