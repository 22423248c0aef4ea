"""LRA Text (IMDB bytes) and Retrieval (AAN): generators, official-format loaders, bad input,
and a few real training steps."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from lrm import tasks
from lrm.data import bytes as tok
from lrm.tasks import retrieval, text

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("prepare_data", ROOT / "scripts" / "prepare_data.py")
prepare_data = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prepare_data)


def load_config(name: str, arg: str):
  s = importlib.util.spec_from_file_location(f"exp_{name}", ROOT / "experiments" / f"{name}.py")
  mod = importlib.util.module_from_spec(s)
  s.loader.exec_module(mod)
  return mod.get_config(arg)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
  monkeypatch.setenv("LRM_DATA_CACHE", str(tmp_path / "cache"))


def folder_bytes(d: Path) -> dict[str, bytes]:
  return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def generate(task: str, out: Path, seed: int = 0) -> dict[str, bytes]:
  argv = [f"--task={task}", f"--out={out}", "--num_train=30", "--num_val=5", "--num_test=5"]
  assert prepare_data.main([*argv, f"--seed={seed}"]) == 0
  return folder_bytes(out)


def sgd_steps(task, model, batch, *, lr: float, steps: int = 3):
  """A few plain SGD steps under jit; returns the losses and the last step's summed metrics."""

  @nnx.jit
  def step(model, batch):
    (loss, sums), grads = nnx.value_and_grad(lambda m: task.loss(m, batch), has_aux=True)(model)
    params = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(lambda p, g: p - lr * g, params, grads))
    return loss, sums

  losses = []
  for _ in range(steps):
    loss, sums = step(model, batch)
    losses.append(float(loss))
  return losses, {k: (float(t), float(c)) for k, (t, c) in sums.items()}


def train_small(name: str, max_len: int) -> None:
  cfg = load_config(name, "mixer=local,size=small")
  cfg.data.update(dict(max_len=max_len, num_train=64, num_val=8, num_test=8))
  cfg.model.update(dict(dim=32, depth=1, mlp_ratio=2))
  cfg.model.mixer = {"name": "local", "window": 4, "num_heads": 2}
  task = tasks.build({"name": cfg.task, **cfg.data.to_dict()})
  model = task.build_model(cfg.model.to_dict(), nnx.Rngs(params=0, dropout=1))
  batch = next(task.dataset("train").train_batches(16, seed=0))
  losses, sums = sgd_steps(task, model, batch, lr=0.1)
  assert all(np.isfinite(losses)) and losses[-1] < losses[0]
  m = task.summarize(sums)
  assert m["loss"] == pytest.approx(losses[-1], rel=1e-5) and 0 <= m["accuracy"] <= 1
  assert sums["accuracy"][1] == 16


# ---- text -----------------------------------------------------------------------------------
def test_text_generator_is_deterministic(tmp_path):
  a, b = generate("text", tmp_path / "a"), generate("text", tmp_path / "b")
  assert a == b and set(a) == {"train.jsonl", "validation.jsonl", "test.jsonl"}
  assert generate("text", tmp_path / "c", seed=1) != a


def test_text_labels_are_the_majority_of_sentiment_cues():
  rng = np.random.default_rng(5)
  pos, neg = "|".join(text.POSITIVE), "|".join(text.NEGATIVE)
  cue = re.compile(rf"\b(not )?({pos}|{neg})\.")
  for doc_len in (60, 300, 1000):
    for _ in range(100):
      review, label = text.synthetic_review(rng, doc_len)
      assert len(review.encode()) <= doc_len
      votes = [(w in text.POSITIVE) != bool(n) for n, w in cue.findall(review)]
      assert len(votes) % 2 == 1 and int(sum(votes) > len(votes) / 2) == label


def test_text_loader_reads_files_and_applies_split_rules(tmp_path):
  rows = [('a "quoted" review, with commas', 1), ("é" * 10, 0), ("short", 1), ("x" * 50, 0)]
  d = tmp_path / "csvdata"
  d.mkdir()
  for split in ("train", "test"):
    with (d / f"{split}.csv").open("w", newline="") as fh:
      w = csv.writer(fh)
      w.writerow(["text", "label"])
      w.writerows(rows)
  task = tasks.build({"name": "text", "path": str(d), "max_len": 16})
  tr, va, te = (task.dataset(s).arrays for s in tasks.SPLITS)
  assert np.array_equal(va["inputs"], te["inputs"])  # LRA: validation is the test split
  assert task.vocab()["data"]["validation"] == "the test split (LRA protocol)"
  raw = [r.encode()[:16] for r, _ in rows]
  assert tr["lengths"].tolist() == [len(r) for r in raw] and tr["label"].tolist() == [1, 0, 1, 0]
  assert tok.decode(tr["inputs"][0][: tr["lengths"][0]]) == rows[0][0][:16]
  assert np.all(tr["inputs"][2, 5:] == tok.PAD) and tr["inputs"].dtype == np.uint16
  held = tasks.build({"name": "text", "path": str(d), "max_len": 16, "holdout": 1})
  assert len(held.dataset("train")) == 3 and len(held.dataset("validation")) == 1


def test_text_bad_input_names_file_and_line(tmp_path):
  d = tmp_path / "bad"
  d.mkdir()
  good = json.dumps({"text": "fine", "label": 1})
  (d / "train.jsonl").write_text("\n".join([good, good, json.dumps({"text": "x", "label": 2})]))
  (d / "test.jsonl").write_text(good + "\n")
  with pytest.raises(tasks.DataError, match=r"train\.jsonl line 3: label 2 is not an integer"):
    tasks.build({"name": "text", "path": str(d)}).setup()
  (d / "train.jsonl").write_text(good + "\n{not json\n")
  with pytest.raises(tasks.DataError, match=r"train\.jsonl line 2: invalid JSON"):
    tasks.build({"name": "text", "path": str(d)}).setup()
  (d / "train.jsonl").write_text(json.dumps({"review": "x", "label": 1}) + "\n")
  with pytest.raises(tasks.DataError, match=r"missing column\(s\) \['text'\]"):
    tasks.build({"name": "text", "path": str(d)}).setup()
  with pytest.raises(tasks.DataError, match="not found"):
    tasks.build({"name": "text", "path": str(tmp_path / "nowhere")}).setup()


def test_text_small_config_trains_a_few_steps():
  train_small("text", max_len=64)


# ---- retrieval ------------------------------------------------------------------------------
def test_retrieval_generator_is_deterministic_and_official_format(tmp_path):
  a = generate("retrieval", tmp_path / "a")
  assert a == generate("retrieval", tmp_path / "b") != generate("retrieval", tmp_path / "c", 1)
  assert set(a) == {f"new_aan_pairs.{s}.tsv" for s in ("train", "eval", "test")}
  key = re.compile(r"We build on the (.+?) of prior work\.")
  quotes = 0
  for line in a["new_aan_pairs.train.tsv"].decode().splitlines():
    label, id1, id2, t1, t2 = line.split("\t")  # exactly five columns
    assert re.fullmatch(r"[A-Z]\d\d-\d{4}", id1) and label in ("0", "1")
    assert (set(key.findall(t1)) == set(key.findall(t2))) == (label == "1")  # shared citation
    quotes += t1.count('"') % 2 + t2.count('"') % 2  # unbalanced quotes occur
  assert quotes > 0


def test_retrieval_loader_keeps_quotes_and_finds_nested_release(tmp_path):
  d = tmp_path / "lra_release" / "lra_release" / "tsv_data"
  d.mkdir(parents=True)
  rows = ['1\tA\tB\t"open quote only\tsays "hi" twice', '0.0\tC\tD\t\t"""']
  for split in ("train", "eval", "test"):
    (d / f"new_aan_pairs.{split}.tsv").write_text("\n".join(rows) + "\n")
  task = tasks.build({"name": "retrieval", "path": str(tmp_path), "max_len": 12})
  a = task.dataset("validation").arrays
  assert a["label"].tolist() == [1, 0] and a["lengths1"].tolist() == [12, 0]
  assert tok.decode(a["inputs1"][0][:12]) == '"open quote '
  assert tok.decode(a["inputs2"][0][: a["lengths2"][0]]) == 'says "hi" tw'
  assert tok.decode(a["inputs2"][1][: a["lengths2"][1]]) == '"""'
  assert task.num_tokens(a) == int(a["lengths1"].sum() + a["lengths2"].sum())
  assert retrieval.read_tsv(d / retrieval.file_name("test"), 12)[3] == 2  # truncations counted


def test_retrieval_bad_rows_name_file_and_line(tmp_path):
  f = tmp_path / retrieval.file_name("train")
  f.write_text("1\ta\tb\tx\ty\n0\ta\tb\tonly four\n")
  with pytest.raises(tasks.DataError, match=r"train\.tsv line 2: expected 5 .* got 4"):
    retrieval.read_tsv(f, 8)
  f.write_text("1\ta\tb\tx\ty\n2\ta\tb\tx\ty\n")
  with pytest.raises(tasks.DataError, match=r"train\.tsv line 2: label '2' is not 0 or 1"):
    retrieval.read_tsv(f, 8)
  with pytest.raises(tasks.DataError, match="new_aan_pairs.train.tsv not found"):
    tasks.build({"name": "retrieval", "path": str(tmp_path / "empty")}).setup()


def test_retrieval_small_config_trains_a_few_steps():
  train_small("retrieval", max_len=64)
