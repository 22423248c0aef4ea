"""Recall (MQAR) and selective-copy tasks: layouts, determinism, metrics, a few real steps."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lrm import tasks
from lrm.data import recall_gen
from lrm.tasks.recall import bucket_names

RECALL = dict(num_pairs=5, num_queries=4, vocab_size=41, seq_len=48)


def _recall(n: int = 300, seed: int = 3, **kw) -> dict[str, np.ndarray]:
  opts = {**RECALL, **kw}
  return recall_gen.recall_arrays(n, seed=seed, **opts)


def test_recall_is_deterministic_under_seed():
  a, b, c = _recall(seed=7), _recall(seed=7), _recall(seed=8)
  assert all(np.array_equal(a[k], b[k]) for k in a)
  assert not np.array_equal(a["inputs"], c["inputs"])
  t = tasks.build({"name": "recall", "num_train": 50, "num_val": 20, "num_test": 20, "seed": 1})
  u = tasks.build({"name": "recall", "num_train": 50, "num_val": 20, "num_test": 20, "seed": 1})
  for split in tasks.SPLITS:
    assert np.array_equal(t.dataset(split).arrays["inputs"], u.dataset(split).arrays["inputs"])
  assert not np.array_equal(
    t.dataset("train").arrays["inputs"][:20], t.dataset("test").arrays["inputs"]
  )


@pytest.mark.parametrize("lo,hi", [(1, 0), (3, 6), (20, 40)])
def test_recall_layout_invariants(lo: int, hi: int):
  d = _recall(min_distance=lo, max_distance=hi)
  x, y, w, dist = d["inputs"], d["targets"], d["weights"], d["distance"]
  num_keys = (RECALL["vocab_size"] - 1) // 2
  hi = hi or RECALL["seq_len"] - 2
  assert np.all(d["lengths"] == RECALL["seq_len"])
  assert np.array_equal(w > 0, y >= 0)  # weights exactly at the query positions
  assert np.all((w > 0).sum(1) == RECALL["num_queries"])
  assert np.all(dist[w == 0] == 0) and np.all((dist[w > 0] >= lo) & (dist[w > 0] <= hi))
  for b in range(len(x)):
    row = x[b]
    is_key = (row >= 1) & (row <= num_keys)
    is_val = row > num_keys
    assert (row != 0).sum() == 2 * RECALL["num_pairs"] + RECALL["num_queries"]  # blank else
    assert is_val.sum() == RECALL["num_pairs"]
    vpos = np.flatnonzero(is_val)
    assert np.all(is_key[vpos - 1])  # every value right after a key
    assert len(set(row[vpos - 1])) == RECALL["num_pairs"]  # distinct keys
    assert len(set(row[vpos])) == RECALL["num_pairs"]  # distinct values
    for q in np.flatnonzero(w[b]):
      assert is_key[q]
      p = vpos[row[vpos - 1] == row[q]]  # the pair whose key is queried
      assert len(p) == 1 and p[0] < q
      assert y[b, q] == row[p[0]] and dist[b, q] == q - p[0]


def test_selective_copy_layout_invariants():
  d = recall_gen.selective_copy_arrays(200, seed=0, num_tokens=5, vocab_size=9, seq_len=30)
  x, y, w, dist = d["inputs"], d["targets"], d["weights"], d["distance"]
  region = 30 - 5
  assert np.all(x[:, region:] == recall_gen.MARKER) and np.all(w[:, :region] == 0)
  assert np.all(w[:, region:] == 1)
  for b in range(len(x)):
    pos = np.flatnonzero(x[b, :region] != recall_gen.BLANK)
    assert len(pos) == 5 and np.all(x[b, pos] >= 2)
    assert np.array_equal(y[b, region:], x[b, pos])  # content in order of appearance
    assert np.array_equal(dist[b, region:], region + np.arange(5) - pos)


def test_bad_options_give_clear_errors():
  with pytest.raises(tasks.DataError, match="vocab_size"):
    tasks.build({"name": "recall", "num_pairs": 10, "vocab_size": 11})
  with pytest.raises(tasks.DataError, match="min_distance"):
    tasks.build({"name": "recall", "seq_len": 32, "min_distance": 40})
  with pytest.raises(tasks.DataError, match="generated in memory"):
    tasks.build({"name": "recall", "path": "/data/x"})
  with pytest.raises(tasks.DataError, match="distance_buckets"):
    tasks.build({"name": "selective_copy", "distance_buckets": (8, 4)})
  with pytest.raises(tasks.DataError, match="seq_len"):
    tasks.build({"name": "selective_copy", "num_tokens": 10, "seq_len": 12})
  with pytest.raises(ValueError, match="unknown option"):
    tasks.build({"name": "recall", "num_keys": 3})
  with pytest.raises(ValueError, match="increase seq_len"):  # a layout that cannot fit
    recall_gen.recall_arrays(
      50, seed=0, num_pairs=8, num_queries=8, vocab_size=41, seq_len=26, min_distance=20
    )


def test_bucket_names():
  assert bucket_names((8, 32)) == ["acc_d<=8", "acc_d9-32", "acc_d>32"]


@pytest.fixture(scope="module")
def trained():
  """A tiny causal model on both tasks: a few jitted SGD steps on one batch each."""
  spec = {"name": "local", "window": 4, "num_heads": 2}
  out = {}
  for name, opts in [
    ("recall", dict(num_pairs=3, vocab_size=21, seq_len=24, distance_buckets=(4, 8))),
    ("selective_copy", dict(num_tokens=3, vocab_size=8, seq_len=16, distance_buckets=(4, 8))),
  ]:
    task = tasks.build({"name": name, "num_train": 32, "num_val": 8, "num_test": 8, **opts})
    model_cfg = dict(dim=16, depth=1, mixer=spec, positions="learned", mlp_ratio=2)
    model = task.build_model(model_cfg, nnx.Rngs(params=0, dropout=1))
    batch = next(task.dataset("train").train_batches(16, seed=0))
    batch = {k: jnp.asarray(v) for k, v in batch.items()}

    @nnx.jit
    def sgd_step(model, batch, task=task):
      (loss, sums), grads = nnx.value_and_grad(lambda m: task.loss(m, batch), has_aux=True)(model)
      params = nnx.state(model, nnx.Param)
      nnx.update(model, jax.tree.map(lambda p, g: p - 0.5 * g, params, grads))
      return loss, sums

    losses, sums = [], None
    for _ in range(3):
      loss, sums = sgd_step(model, batch)
      losses.append(float(loss))
    # padding rows (valid=False) must add nothing (and give zero gradients)
    invalid = {**batch, "valid": jnp.zeros_like(batch["valid"])}
    loss0, sums0 = sgd_step(model, invalid)
    out[name] = (task, batch, losses, jax.device_get(sums), float(loss0), jax.device_get(sums0))
  return out


@pytest.mark.parametrize("name", ["recall", "selective_copy"])
def test_few_sgd_steps_decrease_loss(trained, name: str):
  losses = trained[name][2]
  assert all(np.isfinite(losses)), losses
  assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("name", ["recall", "selective_copy"])
def test_summarize_reports_overall_and_bucket_accuracy(trained, name: str):
  task, batch, _, sums, loss0, sums0 = trained[name]
  w = np.asarray(batch["weights"]) > 0
  d = np.asarray(batch["distance"])
  names = bucket_names((4, 8))
  assert float(sums["accuracy"][1]) == w.sum()  # every answer counted once
  counts = [float(sums[k][1]) for k in names]
  assert counts == [(w & (d <= 4)).sum(), (w & (d > 4) & (d <= 8)).sum(), (w & (d > 8)).sum()]
  m = task.summarize(sums)
  assert {"loss", "accuracy", "exact"} <= set(m) and 0.0 <= m["accuracy"] <= 1.0
  present = {k: c for k, c in zip(names, counts, strict=True) if c > 0}
  assert {k for k in m if k.startswith("acc_d")} == set(present)
  total = sum(m[k] * c for k, c in present.items())
  assert total / w.sum() == pytest.approx(m["accuracy"], abs=1e-6)  # buckets partition answers
  assert float(sums0["accuracy"][1]) == 0.0 and float(sums0["exact"][1]) == 0.0 and loss0 == 0.0
  assert not any(k.startswith("acc_d") for k in task.summarize(sums0))


def test_vocab_is_json_and_matches_options():
  t = tasks.build({"name": "recall", "vocab_size": 65})
  assert t.vocab() == {"size": 65, "blank": 0, "keys": [1, 32], "values": [33, 64]}
  s = tasks.build({"name": "selective_copy", "vocab_size": 12})
  assert s.vocab()["content"] == [2, 11] and s.vocab_size == 12 and s.causal
  assert isinstance(s, tasks.CausalTask)  # its head is a language-model head
