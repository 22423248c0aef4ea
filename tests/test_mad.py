"""MAD's six tasks: literal layouts, determinism, target masks, the guess-in-reach baseline
against a brute-force count, the two losses, the experiment config, a few real steps each."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import finish

from lrm import tasks
from lrm.data import guess, mad_gen, recall_gen
from lrm.data.mad_gen import IGNORE

REPO = Path(__file__).resolve().parents[1]
NAMES = [
  "mad_in_context_recall",
  "mad_noisy_recall",
  "mad_fuzzy_recall",
  "mad_selective_copy",
  "mad_compression",
  "mad_memorization",
]
SMALL = {  # tiny versions of every task: milliseconds to generate
  "mad_in_context_recall": dict(vocab_size=16, seq_len=32),
  "mad_noisy_recall": dict(vocab_size=20, seq_len=32, noise_vocab_size=4, frac_noise=0.4),
  "mad_fuzzy_recall": dict(vocab_size=16, seq_len=32),
  "mad_selective_copy": dict(vocab_size=8, seq_len=24, num_tokens_to_copy=4),
  "mad_compression": dict(vocab_size=8, seq_len=12),
  "mad_memorization": dict(vocab_size=32, seq_len=8),
}
SIZES = dict(num_train=40, num_val=12, num_test=12)


def build(name: str, **kw) -> tasks.Task:
  return tasks.build({"name": name, **SMALL[name], **SIZES, **kw})


def rows(a: dict[str, np.ndarray]) -> dict[str, list]:
  return {k: v[0].tolist() for k, v in a.items()}


# ---- literal layouts (the docstring examples of lrm/data/mad_gen.py) --------------------------
def test_recall_layout_literal():
  d = mad_gen.RecallDraws(
    keys=np.array([[1, 3, 1]]),
    kv_map=np.array([[5, 4, 7, 6]]),
    noise=np.zeros((1, 3), bool),
    noise_tokens=np.zeros((1, 3, 2), int),
    probe=np.array([0.6]),  # shown keys in order: 1, 3 -> index int(0.6 * 2) = 1: key 3
  )
  r = rows(mad_gen.layout_recall(d, vocab_size=8))
  assert r["inputs"] == [1, 4, 3, 6, 1, 4, 3]
  assert r["targets"] == [-1, -1, -1, -1, 4, -1, 6]
  assert r["distance"] == [0, 0, 0, 0, 3, 0, 3]
  assert r["next"] == [4, 3, 6, 1, 4, 3, 6]
  assert r["weights"] == [0, 0, 0, 0, 1, 0, 1] and r["lengths"] == 7


def test_noisy_recall_layout_literal():
  # vocab 10 with 2 noise ids: keys 0..3, values 4..7, noise 8, 9; the pair with key 0 is noise
  d = mad_gen.RecallDraws(
    keys=np.array([[2, 0, 2]]),
    kv_map=np.array([[4, 5, 6, 7]]),
    noise=np.array([[False, True, False]]),
    noise_tokens=np.array([[[8, 8], [9, 8], [8, 8]]]),
    probe=np.array([0.9]),  # key 0 was never shown: the only shown key is 2
  )
  r = rows(mad_gen.layout_recall(d, vocab_size=10, noise_vocab_size=2))
  assert r["inputs"] == [2, 6, 9, 8, 2, 6, 2]
  assert r["targets"] == [-1, -1, -1, -1, 6, -1, 6]
  assert r["distance"] == [0, 0, 0, 0, 3, 0, 1]  # the latest showing of key 2 counts
  assert r["next"] == [6, 9, 8, 2, 6, 2, 6]


def test_single_query_recall_layout_literal():
  # without multi_query: keys 0..3, values 4..7, copy token 8; only the final key is asked
  d = mad_gen.RecallDraws(
    keys=np.array([[1, 3, 1]]),
    kv_map=np.array([[5, 4, 7, 6]]),
    noise=np.zeros((1, 3), bool),
    noise_tokens=np.zeros((1, 3, 2), int),
    probe=np.array([0.6]),
  )
  r = rows(mad_gen.layout_recall(d, vocab_size=9, multi_query=False))
  assert r["inputs"] == [1, 4, 3, 6, 1, 4, 8, 3]
  assert r["targets"] == [-1] * 7 + [6]
  assert r["distance"] == [0] * 7 + [4]


def fuzzy_draws() -> mad_gen.FuzzyDraws:
  """The fuzzy docstring example: vocab 9 (keys 0..3, values 4..7, pad 8), seq_len 20."""
  m = 11  # seq_len // 2 + 1 candidate pairs; only the first four are used
  key_size = np.array([[1, 1, 2, 2] + [1] * (m - 4)])
  value_size = np.array([[2, 1, 1, 1] + [1] * (m - 4)])
  key_tokens = np.zeros((1, m, 2), int)
  key_tokens[0, :4] = [[2, 3], [2, 0], [3, 0], [0, 1]]
  value_tokens = np.full((1, m, 2), 4)
  value_tokens[0, :4] = [[6, 7], [5, 4], [4, 5], [7, 6]]
  return mad_gen.FuzzyDraws(
    key_size=key_size,
    value_size=value_size,
    key_tokens=key_tokens,
    value_tokens=value_tokens,
    noise=np.zeros((1, m), bool),
    noise_tokens=np.zeros((1, m, 4), int),
    probe_key=np.array([[0, 1]]),
    probe_key_size=np.array([2]),
    probe_value=np.array([[5, 4]]),
    probe_value_size=np.array([1]),
    probe_at=np.array([3]),
  )


def test_fuzzy_recall_layout_literal():
  ids = {**mad_gen.fuzzy_ids(9, 0, True), "multi_query": True}
  tokens, answers, source = mad_gen.layout_fuzzy_row(
    fuzzy_draws(), 0, seq_len=20, k_motif_size=2, v_motif_size=2, ids=ids
  )
  assert tokens == [8, 8, 8, 2, 6, 7, 0, 1, 5, 2, 6, 7, 3, 0, 4, 0, 1, 5, 0, 1, 5]
  asked = {i: a for i, a in enumerate(answers) if a != IGNORE}
  assert asked == {10: 6, 11: 7, 17: 5, 20: 5}  # stream positions of the asked values
  assert [source[i] for i in asked] == [4, 5, 8, 17]  # where each was shown before
  # the model reads tokens[:-1]; position i answers stream position i + 1
  inputs, targets = tokens[:-1], answers[1:]
  assert inputs == [8, 8, 8, 2, 6, 7, 0, 1, 5, 2, 6, 7, 3, 0, 4, 0, 1, 5, 0, 1]
  assert [i for i, t in enumerate(targets) if t != IGNORE] == [9, 10, 16, 19]
  assert [i - source[i + 1] for i in (9, 10, 16, 19)] == [5, 5, 8, 2]


def test_selective_copy_layout_literal():
  r = rows(
    mad_gen.layout_copy(np.array([[2, 0, 2]]), np.array([[1, 0, 2]]), vocab_size=6, seq_len=10)
  )
  assert r["inputs"] == [4, 2, 0, 4, 4, 2, 5, 4, 4, 4]
  assert r["targets"] == [-1] * 7 + [2, 0, 2]
  assert r["distance"] == [0] * 7 + [6, 6, 4]


def test_compression_and_memorization_layouts():
  c = mad_gen.compression_arrays(5, seed=0, vocab_size=8, seq_len=6)
  assert np.array_equal(c["inputs"], c["targets"]) and np.all(c["inputs"][:, -1] == 7)
  assert np.all(c["inputs"][:, :-1] < 7) and np.all(c["weights"] == 1)
  assert c["distance"][0].tolist() == [5, 4, 3, 2, 1, 1]  # tokens before the compression token
  kv = np.array([5, 3, 6])  # vocab 8: keys 0..2, values 3..6, insert 7
  m = mad_gen.memorization_arrays(50, seed=1, vocab_size=8, seq_len=6, kv_map=kv)
  x, y = m["inputs"], m["targets"]
  assert np.all(x[:, 1::2] == 7) and np.all(y[:, 0::2] == IGNORE)
  assert np.array_equal(y[:, 1::2], kv[x[:, 0::2]]) and np.all(m["distance"][:, 1::2] == 1)
  one = mad_gen.memorization_map(256, seed=0)
  assert len(one) == 127 and len(set(one.tolist())) == 127 and one.min() >= 127
  assert np.array_equal(one, mad_gen.memorization_map(256, seed=0))


# ---- determinism and target masks ---------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_byte_identical_per_seed(name: str):
  a, b, c = build(name, seed=3), build(name, seed=3), build(name, seed=4)
  for split in tasks.SPLITS:
    x, y = a.dataset(split).arrays, b.dataset(split).arrays
    assert sorted(x) == sorted(y)
    assert all(x[k].tobytes() == y[k].tobytes() and x[k].dtype == y[k].dtype for k in x)
  assert (
    a.dataset("train").arrays["inputs"].tobytes() != c.dataset("train").arrays["inputs"].tobytes()
  )
  # the splits are different draws
  tr, te = a.dataset("train").arrays["inputs"], a.dataset("test").arrays["inputs"]
  assert not np.array_equal(tr[: len(te)], te)


@pytest.mark.parametrize("name", NAMES)
def test_target_masks_and_distances(name: str):
  t = build(name)
  for split in tasks.SPLITS:
    a = t.dataset(split).arrays
    x, y, w, d = a["inputs"], a["targets"], a["weights"], a["distance"]
    assert x.shape[1] == t.seq_len and np.all(a["lengths"] == t.seq_len)
    assert np.array_equal(w > 0, y != IGNORE) and np.all(w.sum(axis=1) > 0)
    assert np.all(d[w == 0] == 0) and np.all(d[w > 0] >= 1)
    assert x.max() < t.vocab_size and y.max() < t.vocab_size and x.min() >= 0
    b, i = np.nonzero(w)
    if name in ("mad_compression", "mad_memorization"):
      continue
    # the answer is the input ``distance`` tokens back (and, for the recall family, the
    # stream's next token)
    assert np.array_equal(x[b, i - d[b, i]], y[b, i])
    if "next" in a:
      assert np.array_equal(a["next"][b, i], y[b, i])
      assert np.array_equal(a["next"][:, :-1], x[:, 1:])


def test_recall_asks_exactly_the_repeated_keys():
  t = build("mad_in_context_recall", vocab_size=12, seq_len=40)
  a = t.dataset("train").arrays
  k = t.ids["num_keys"]
  for x, y in zip(a["inputs"], a["targets"], strict=True):
    for j in range(0, len(x), 2):  # "key value" pairs; the last key's value is not read
      key = x[j]
      repeated = key in x[:j:2]
      assert key < k and (y[j] != IGNORE) == repeated
      if j + 1 < len(x):
        assert x[j + 1] >= k and y[j + 1] == IGNORE
      if repeated:  # the value of its latest showing
        last = max(p for p in range(0, j, 2) if x[p] == key)
        assert y[j] == x[last + 1]
    assert y[-1] != IGNORE  # the final key is always asked


def test_noise_fraction_and_fuzzy_eval_keys():
  a = mad_gen.recall_arrays(
    400, seed=0, vocab_size=20, seq_len=64, noise_vocab_size=4, frac_noise=0.6
  )
  noisy = (a["inputs"][:, 0::2] >= 16).mean()
  assert 0.5 < noisy < 0.65  # pairs replaced by noise (31 random pairs, the final one never)
  rng = np.random.default_rng(0)
  opts = dict(vocab_size=16, seq_len=64, k_motif_size=3, v_motif_size=3)
  ev = mad_gen.draw_fuzzy(rng, 20, training=False, **opts)
  tr = mad_gen.draw_fuzzy(rng, 20, training=True, **opts)
  assert np.all(ev.key_size == 3) and np.all(ev.probe_key_size == 3)
  assert set(np.unique(tr.key_size)) == {1, 2, 3} and set(np.unique(ev.value_size)) == {1, 2, 3}
  # distinct tokens inside a motif
  assert all(len(set(r.tolist())) == 3 for r in ev.key_tokens.reshape(-1, 3))


def test_selective_copy_last_content_token_before_copy():
  a = mad_gen.copy_arrays(200, seed=0, vocab_size=10, seq_len=30, num_tokens=5)
  x = a["inputs"]
  assert np.all(x[:, 30 - 5 - 1] == 9) and np.all(x[:, 30 - 5 :] == 8)
  assert np.all(x[:, 30 - 5 - 2] < 8)  # MAD's np.insert never puts a blank after the last one
  assert np.all((x[:, : 30 - 6] < 8).sum(axis=1) == 5)


def test_bad_options_give_clear_errors():
  with pytest.raises(tasks.DataError, match="even"):
    tasks.build({"name": "mad_in_context_recall", "seq_len": 33})
  with pytest.raises(tasks.DataError, match="noise_vocab_size"):
    tasks.build({"name": "mad_in_context_recall", "frac_noise": 0.3})
  with pytest.raises(tasks.DataError, match="motif"):
    tasks.build({"name": "mad_fuzzy_recall", "vocab_size": 6})
  with pytest.raises(tasks.DataError, match="MAD's bound"):
    tasks.build({"name": "mad_selective_copy", "seq_len": 32, "num_tokens_to_copy": 16})
  with pytest.raises(tasks.DataError, match="loss_positions"):
    tasks.build({"name": "mad_in_context_recall", "loss_positions": "every"})
  with pytest.raises(tasks.DataError, match="generated in memory"):
    tasks.build({"name": "mad_compression", "path": "/data"})
  with pytest.raises(ValueError, match="unknown option"):
    tasks.build({"name": "mad_memorization", "num_tokens_to_copy": 3})


def test_vocab_is_json_and_matches_layout():
  assert build("mad_in_context_recall").vocab() == {"size": 16, "keys": [0, 7], "values": [8, 15]}
  noisy = build("mad_noisy_recall").vocab()
  assert noisy == {"size": 20, "keys": [0, 7], "values": [8, 15], "noise": [16, 19]}
  assert build("mad_fuzzy_recall").vocab() == {
    "size": 16, "pad": 15, "keys": [0, 6], "values": [7, 14]
  }  # fmt: skip
  assert build("mad_selective_copy").vocab() == {
    "size": 8,
    "content": [0, 5],
    "blank": 6,
    "copy": 7,
  }
  assert build("mad_memorization").vocab()["insert"] == 31
  for name in NAMES:
    json.dumps(build(name).vocab())
  r = tasks.build({"name": "mad_in_context_recall"})  # MAD's baseline: the model reads 127 tokens
  assert r.seq_len == 127 and r.answers == 8 and r.causal


# ---- guess in reach ---------------------------------------------------------------------------
def brute_force_guess(x, y, w, values, reach):
  """Per asked position: the distinct values among the inputs in reach, counted one by one."""
  lo, hi = values
  total, n = 0.0, 0
  for b in range(x.shape[0]):
    for i in range(x.shape[1]):
      if w[b, i] <= 0:
        continue
      start = 0 if reach is None else max(0, i - reach)
      seen = {int(v) for v in x[b, start : i + 1] if lo <= v <= hi}
      total += (1.0 / len(seen) if int(y[b, i]) in seen else 0.0) if seen else 1 / (hi - lo + 1)
      n += 1
  return total / n


def test_guess_in_reach_docstring_example():
  x, y = np.array([[1, 4, 3, 6, 1, 4, 3]]), np.array([[-1, -1, -1, -1, -1, -1, 6]])
  w = (y >= 0).astype(float)
  assert guess.guess_in_reach(x, y, w, (4, 7), reach=2) == 0.0
  assert guess.guess_in_reach(x, y, w, (4, 7), reach=3) == 0.5
  assert guess.guess_in_reach(x, y, w, (4, 7)) == 0.5
  assert guess.guess_in_reach(x, y, np.zeros_like(w), (4, 7)) != guess.guess_in_reach(
    x, y, w, (4, 7)
  )


@pytest.mark.parametrize(
  "name", ["mad_in_context_recall", "mad_noisy_recall", "mad_fuzzy_recall", "recall"]
)
def test_guess_in_reach_matches_brute_force(name: str, monkeypatch):
  if name == "recall":  # lrm's MQAR: values K+1..2K
    opts = dict(num_pairs=4, vocab_size=21, seq_len=32)
    a = recall_gen.recall_arrays(12, seed=0, num_queries=4, **opts)
    values = (11, 20)
  else:
    t = build(name)
    a, values = t.dataset("test").arrays, t.values
  monkeypatch.setattr(guess, "_CELLS", 500)  # several chunks of rows
  for reach in (None, 1, 3, 8):
    want = brute_force_guess(a["inputs"], a["targets"], a["weights"], values, reach)
    got = guess.guess_in_reach(a["inputs"], a["targets"], a["weights"], values, reach)
    assert got == pytest.approx(want, abs=1e-12)


def test_reference_levels_hold_chance_and_guesses():
  t = build("mad_in_context_recall", distance_buckets=(4, 8))
  levels = t.reference_levels()["accuracy"]
  assert set(levels) == {"chance", "context_guess", "guess_w4", "guess_w8"}
  assert levels["chance"] == 1 / 8 and levels["chance"] < levels["context_guess"] <= 1
  a = t.dataset("test").arrays
  assert levels["guess_w4"] == guess.guess_in_reach(
    a["inputs"], a["targets"], a["weights"], t.values, 4
  )
  assert set(build("mad_selective_copy").reference_levels()["accuracy"]) == {"chance"}
  all_pos = build("mad_in_context_recall", loss_positions="all").reference_levels()
  assert "answer_loss" in all_pos and "loss" not in all_pos


# ---- the two losses (no training) -------------------------------------------------------------
def test_loss_all_positions_vs_targets():
  """``loss_positions="all"`` trains on every next token; the answer metrics are unchanged."""
  out = {}
  logits = jnp.asarray(np.random.default_rng(0).normal(size=(6, 31, 16)), jnp.float32)
  for mode in ("targets", "all"):
    t = build("mad_in_context_recall", loss_positions=mode)
    batch = next(t.dataset("train").eval_batches(6))
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    out[mode] = t.loss(lambda *_: logits, batch)
  (lt, st), (la, sa) = out["targets"], out["all"]
  assert float(sa["loss"][1]) == 6 * 31 and float(st["loss"][1]) == float(sa["answer_loss"][1])
  assert float(sa["answer_loss"][0]) == pytest.approx(float(st["loss"][0]), rel=1e-6)
  assert float(sa["accuracy"][0]) == float(st["accuracy"][0])
  assert float(la) == pytest.approx(float(sa["loss"][0]) / (6 * 31), rel=1e-6)
  assert float(lt) != pytest.approx(float(la))


@pytest.mark.usefixtures("fast_compile")
def test_compressor_head_decodes_every_position_from_the_last():
  from flax import nnx

  t = build("mad_compression")
  model = t.build_model(
    dict(dim=16, depth=1, mixer=dict(name="conv", kernel_size=3), positions="none"),
    nnx.Rngs(0),
  )
  x = jnp.asarray(t.dataset("test").arrays["inputs"][:2], jnp.int32)
  y = model(x, jnp.ones(x.shape, bool))
  assert y.shape == (2, 12, 8)
  # a causal conv of 3 taps at the last position sees only the last 3 inputs: the others
  # cannot change any output (the code is the last position's features alone)
  x2 = x.at[:, 0].set((x[:, 0] + 1) % 7)
  assert np.allclose(model(x2, jnp.ones(x.shape, bool)), y)
  x3 = x.at[:, -2].set((x[:, -2] + 1) % 7)
  assert not np.allclose(model(x3, jnp.ones(x.shape, bool)), y)
  assert model.flops(12) == model.encoder.flops(12) + 12 * (4 * 16 * 16 + 2 * 16 * 8)


# ---- the experiment config --------------------------------------------------------------------
def load_experiment():
  spec = importlib.util.spec_from_file_location("cfg_mad", REPO / "experiments" / "mad.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_experiment_settings_are_mads():
  m = load_experiment()
  counts = {t: len(m.settings(t)) for t in m.TASKS}
  assert counts == dict(
    in_context_recall=11,
    noisy_recall=14,
    fuzzy_recall=11,
    selective_copy=13,
    compression=11,
    memorization=6,
  )
  assert m.data_options("noisy_recall", "noise0.6")["frac_noise"] == 0.6
  assert m.data_options("selective_copy", "tokens96")["num_tokens_to_copy"] == 96
  assert m.data_options("memorization", "vocab8192")["vocab_size"] == 8192
  full = m.get_config("task=fuzzy_recall,difficulty=examples800,mixer=hyena,size=full")
  assert full.task == "mad_fuzzy_recall" and full.data.num_train == 800
  assert full.train.steps == 200 * 800 // 128 and full.data.loss_positions == "all"
  assert full.model.dim == 128 and full.model.depth == 2
  small = m.get_config("task=compression,mixer=conv+global")
  assert [s["name"] for s in small.model.mixer] == ["conv", "global"]
  assert "loss_positions" not in small.data
  with pytest.raises(ValueError, match="unknown difficulty"):
    m.get_config("task=in_context_recall,difficulty=noise0.4")
  with pytest.raises(ValueError, match="unknown task"):
    m.get_config("task=copying")


# ---- a few real steps of every task through the trainer -------------------------------------
SHRINK = {
  "data.num_train": 32,
  "data.num_val": 8,
  "data.num_test": 8,
  "model.dim": 16,
  "train.steps": 2,
  "train.batch_size": 8,
  "train.eval_batch_size": 8,
  "train.eval_every": 2,
  "train.checkpoint_every": 2,
  "optim.warmup_steps": 1,
}
TRAIN = [
  ("in_context_recall", "local"),
  ("noisy_recall", "conv"),
  ("fuzzy_recall", "gated_conv"),
  ("selective_copy", "hyena"),
  ("compression", "conv+global"),
  ("memorization", "global"),
]


@pytest.mark.slow
@pytest.mark.usefixtures("fast_compile")
@pytest.mark.parametrize("task,mixer", TRAIN)
def test_every_task_trains_a_few_steps(task, mixer, tmp_path, data_cache):
  from lrm.train import loop

  cfg = load_experiment().get_config(f"task={task},mixer={mixer},loss=all")
  cfg.update_from_flattened_dict(SHRINK)
  res = loop.run(cfg, tmp_path)
  test = res["final"]["test"]
  assert np.isfinite(test["loss"]) and 0.0 <= test["accuracy"] <= 1.0
  assert ("answer_loss" in test) == task.endswith("recall")
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["task"] == f"mad_{task}"


@pytest.mark.slow
def test_fuzzy_recall_trains_from_the_command_line(cli, tmp_path):
  overrides = [f"--config.{k}={v}" for k, v in SHRINK.items()]
  proc = cli(
    "train.py",
    "--config=experiments/mad.py:task=fuzzy_recall,difficulty=vocab32,mixer=local",
    f"--workdir={tmp_path / 'run'}",
    *overrides,
  )
  rc, out, err = finish(proc)
  assert rc == 0, err[-3000:]
  res = json.loads((tmp_path / "run" / "results.json").read_text())
  assert np.isfinite(res["final"]["test"]["accuracy"])
  assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["vocab_size"] == 32


# ---- the study: upward extension of the sweep, MAD scores, the study file ----------------------
def test_extend_proposes_the_next_rate_while_the_top_wins(tmp_path):
  from lrm.study import extend, grid

  study = {"lr_extend": dict(factor=10 / 3, rounds=1)}
  top = dict(task="t", mixer="conv", window=4, size=None, chosen=0.003)
  top["validation"] = {"0.001": 0.5, "0.003": 0.7}
  inside = {**top, "mixer": "local", "chosen": 0.001}
  pending = {**top, "mixer": "global", "chosen": None}
  extra = extend.propose(study, [top, inside, pending], {})
  assert extra == {("t", "conv", 4, None): [0.01]}
  top2 = {**top, "validation": {**top["validation"], "0.01": 0.8}, "chosen": 0.01}
  assert extend.propose(study, [top2], extra) == extra  # one round only
  assert extend.propose({}, [top], {}) == {}  # a study without lr_extend
  extend.write(tmp_path, extra)
  assert extend.load(tmp_path) == extra and extend.load(tmp_path / "nothing") == {}
  s = dict(seeds=[0], rules=["params"], lrs=[1e-3, 3e-3], tasks={
    "t": dict(mixers=["conv", "local"], windows=[4])})  # fmt: skip
  cells = grid.sweep_cells(s, extra)
  assert [(c.mixer, c.lr) for c in cells] == [
    ("conv", 1e-3), ("conv", 3e-3), ("conv", 0.01), ("local", 1e-3), ("local", 3e-3)
  ]  # fmt: skip
  assert len(grid.expand(s, {}, extra)) == 5


TINY_STUDY = """
def get_study(scale="small"):
  return dict(
    name="tiny", seeds=[0, 1], rules=["params_non_embedding"], lrs=[1e-3, 3e-3],
    lr_extend=dict(factor=10 / 3, rounds=1), heads=2,
    tasks={"r": dict(
      config="experiments/mad.py", arg="task=in_context_recall,size=small,window={window}",
      overrides={"data.num_train": 16, "data.num_val": 8, "data.num_test": 8,
                 "data.seq_len": 16, "model.dim": 16},
      mixers=["conv"], windows=[4], reference=dict(mixer="global"),
    )},
  )
"""


def test_run_study_extends_the_sweep_then_runs_the_seeds(tmp_path, monkeypatch):
  """The study loop with a fake cell runner: lr 3e-3 wins, 1e-2 is added and wins, then seed 1
  runs at 1e-2."""
  from lrm.study import extend, report, run, sweep

  ran = []
  val = {1e-3: 0.3, 3e-3: 0.5, 1e-2: 0.6}

  def fake(plan, cell, out):
    wd = cell.workdir(out)
    wd.mkdir(parents=True, exist_ok=True)
    v = val[cell.lr]
    res = {
      "main_metric": "accuracy",
      "best": {"validation": {"accuracy": v}, "test": {"accuracy": v}},
    }
    (wd / "results.json").write_text(json.dumps(res))
    info = {k: [] for k in ("receptive_field", "kernels", "receptive_field_init")}
    (wd / "cell.json").write_text(json.dumps({**info, "costs": {}}))
    ran.append((cell.seed, cell.lr))
    return res

  monkeypatch.setattr(run, "run_cell", fake)
  monkeypatch.setattr(report, "write_report", lambda *a, **k: None)
  path = tmp_path / "tiny.py"
  path.write_text(TINY_STUDY)
  run.run_study(path, tmp_path / "out", "small")
  assert ran == [(0, 1e-3), (0, 3e-3), (0, 0.01), (1, 0.01)]
  assert extend.load(tmp_path / "out") == {("r", "conv", 4, None): [0.01]}
  (arm,) = sweep.load(tmp_path / "out")
  assert arm["chosen"] == 0.01 and set(arm["validation"]) == {"0.001", "0.003", "0.01"}
  ran.clear()
  run.run_study(path, tmp_path / "out", "small")  # a rerun: everything is done
  assert ran == []


def mad_rows() -> tuple[dict, list[dict]]:
  """A two-task MAD study's records: mixers a and b, two settings of t1, one of t2, two weight
  decays, seeds 0 and 1."""
  tasks = {}
  for task, settings in (("t1", ["baseline", "vocab32"]), ("t2", ["baseline"])):
    for s in settings:
      for wd in (0.0, 0.1):
        tasks[f"{task}-{s}-wd{wd:g}"] = {"mad": dict(task=task, setting=s, weight_decay=wd)}
  study = {"rules": ["params_non_embedding"], "tasks": tasks}
  rows = []

  def add(name, key, seed, test, val):
    rows.append(dict(task=key, name=name, mixer=name, rule="params_non_embedding", seed=seed,
                     lr=1e-3, in_study=True, value=test, validation_value=val, chance=0.1,
                     chance_context=0.2))  # fmt: skip

  for seed in (0, 1):
    for key in tasks:
      # mixer a: wd 0.1 validates better on every setting; its test values: 0.9 / 0.7 / 0.5
      t = {"t1-baseline": 0.9, "t1-vocab32": 0.7, "t2-baseline": 0.5}[key.rsplit("-wd", 1)[0]]
      good = key.endswith("wd0.1")
      add("a", key, seed, t + 0.01 * seed if good else 0.0, 0.8 if good else 0.1)
      if not key.startswith("t2"):  # mixer b lacks t2: no MAD score yet
        add("b", key, seed, 0.4, 0.5)
  return study, rows


def test_mad_score_is_the_mean_of_best_runs(tmp_path):
  from lrm.study import mad_score

  study, rows = mad_rows()
  best = {(b["name"], b["task"], b["setting"]): b for b in mad_score.best_runs(study, rows)}
  assert best["a", "t1", "vocab32"]["weight_decay"] == 0.1
  assert best["a", "t1", "vocab32"]["test"] == {0: 0.7, 1: 0.71}
  assert best["b", "t1", "baseline"]["weight_decay"] == 0.0  # a tie goes to the smaller decay
  table = mad_score.scores(study, rows)
  a = table["a"]
  assert a["t1"].mean == pytest.approx((0.8 + 0.81) / 2) and a["t1"].n == 2
  assert a["t2"].mean == pytest.approx(0.505)
  assert a[mad_score.SCORE].mean == pytest.approx(((0.8 + 0.5) / 2 + (0.81 + 0.51) / 2) / 2)
  assert mad_score.SCORE not in table["b"] and "t2" not in table["b"]
  lines = mad_score.section(study, rows, tmp_path)
  text = "\n".join(lines)
  assert "| mixer | t1 | t2 | MAD score |" in text and "| b | 0.400 (n=2)" not in text
  assert "pending" in text and (tmp_path / "mad_scores.png").stat().st_size > 5_000
  assert "| t1 | vocab32 | 0.100 | 0.200 | 0.705 (wd 0.1, lr 0.001) | 0.400" in text
  empty = "\n".join(mad_score.section(study, [], tmp_path))
  assert "| task | setting | chance | context guess |\n| --- | --- | --- | --- |\n" in empty


def test_the_mad_study_covers_mads_grid():
  from lrm.study import grid

  small = grid.load_study(REPO / "experiments" / "studies" / "mad.py", "small")
  full = grid.load_study(REPO / "experiments" / "studies" / "mad.py", "full")
  exp = load_experiment()
  tags = {
    (t["mad"]["task"], t["mad"]["setting"], t["mad"]["weight_decay"])
    for t in full["tasks"].values()
  }  # noqa: E501
  assert tags == {(t, s, wd) for t in exp.TASKS for s in exp.settings(t) for wd in (0.0, 0.1)}
  assert full["lrs"] == [1e-4, 5e-4, 1e-3] and len(grid.arms(full)) == 66 * 2 * 6
  assert len(grid.sweep_cells(small)) == 8 * 6 * 2 and len(grid.arms(small)) == 48
  mixers = {m for t in small["tasks"].values() for m in t["mixers"]}
  assert mixers == {"conv", "gated_conv", "local", "global", "hyena", "conv+global"}
  cfg = grid.base_config(small, "in_context_recall-vocab32", 16)
  assert cfg.data.seq_len == 64 and cfg.data.vocab_size == 32 and cfg.optim.weight_decay == 0.1
  assert cfg.train.steps == 600
  cfg = grid.base_config(full, "selective_copy-tokens96-wd0", 32)
  assert cfg.data.num_tokens_to_copy == 96 and cfg.train.steps == 20_000
