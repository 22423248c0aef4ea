"""``model.remat``: per-block rematerialisation lowers the compiled temporary memory of a
forward+backward step at L = 8K (XLA's own memory analysis) and changes no number; the
trainer's step with remat (and dropout) trains exactly like the one without."""

from __future__ import annotations

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lrm.model import Encoder
from lrm.train.step import compiler_options

L = 8192
# CPU: skip XLA's expensive passes (compile time halves; the memory figures are the same)
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def fwd_bwd(remat: bool):
  """The compiled fwd+bwd of a 4-block local-attention encoder (dropout on) and its inputs."""
  enc = Encoder(
    vocab_size=16,
    dim=64,
    depth=4,
    mixer={"name": "local", "window": 64, "num_heads": 4},
    causal=False,
    max_len=L,
    dropout=0.1,
    remat=remat,
    rngs=nnx.Rngs(params=0, dropout=1),
  )
  graph, params, rest = nnx.split(enc, nnx.Param, ...)
  tokens = np.random.default_rng(0).integers(0, 16, (1, L)).astype(np.int32)

  def loss(params, rest, tokens):
    model = nnx.merge(graph, params, rest, copy=True)
    return jnp.mean(model(tokens) ** 2)

  opts = compiler_options()  # what the trainer's step uses (keeps remat effective on CPU)
  step = jax.jit(jax.value_and_grad(loss), compiler_options={**opts, **FAST} if opts else None)
  return step.lower(params, rest, tokens).compile(), (params, rest, tokens)


@pytest.mark.slow
def test_remat_lowers_compiled_memory_at_8k_and_changes_nothing():
  plain, args = fwd_bwd(remat=False)
  remat, _ = fwd_bwd(remat=True)
  mib = lambda c: c.memory_analysis().temp_size_in_bytes / 2**20  # noqa: E731
  print(f"fwd+bwd temp memory at L={L}: {mib(plain):.1f} MiB, with remat {mib(remat):.1f} MiB")
  assert mib(remat) < 0.5 * mib(plain)
  (l1, g1), (l2, g2) = plain(*args), remat(*args)
  assert float(l1) == pytest.approx(float(l2), rel=1e-6)  # the same dropout masks, too
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=1e-6)


def test_trainer_step_with_remat_and_dropout_matches(tiny_config, data_cache, fast_compile):
  """Two training steps of the real trainer (dropout 0.1): the same losses with remat."""
  from lrm.run import Run

  spec = importlib.util.spec_from_file_location("tiny", tiny_config)
  tiny = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(tiny)
  losses = []
  for remat in (False, True):
    c = tiny.get_config("steps=2,mixer=local")
    c.model.dropout, c.model.remat = 0.1, remat
    run = Run(c)
    ds = run.task.dataset("train")
    batches = ds.train_batches(c.train.batch_size, seed=c.seed)
    state = run.steps.init_state(run.build_model, next(ds.train_batches(16, seed=0)))
    for _ in range(2):
      state = run.steps.train_step(state, next(batches))
    acc = jax.device_get(state["train"]["acc"])
    losses.append(float(acc["loss"]) / int(acc["steps"]))
    assert run.model.encoder.remat is remat
  assert np.isfinite(losses[0]) and losses[1] == pytest.approx(losses[0], rel=1e-5)
