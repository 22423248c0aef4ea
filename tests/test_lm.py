"""Language modelling: packing, the embedded stdlib corpus, local sources, a few real steps."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from lrm import heads, tasks
from lrm.data import bytes as tok
from lrm.data import corpus
from lrm.data.packing import pack

ROOT = Path(__file__).resolve().parents[1]


def load_config(name: str, arg: str):
  spec = importlib.util.spec_from_file_location(f"exp_{name}", ROOT / "experiments" / f"{name}.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
  monkeypatch.setenv("LRM_DATA_CACHE", str(tmp_path / "cache"))


def real_targets(arrays: dict[str, np.ndarray]) -> np.ndarray:
  return np.concatenate([t[:n] for t, n in zip(arrays["targets"], arrays["lengths"], strict=True)])


def documents(arrays: dict[str, np.ndarray]) -> list[str]:
  """The documents in a split's targets (each ends with SEP)."""
  t = real_targets(arrays)
  ends = np.flatnonzero(t == tok.SEP)
  return [tok.decode(d) for d in np.split(t, ends + 1)[:-1]]


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


def test_pack_makes_every_token_a_target_once():
  docs = [b"hello", b"", b"a longer document"]
  a = pack([tok.encode(d) for d in docs], tok.SEP, seq_len=4, join=False, doc_bytes=None)
  stream = np.concatenate([[tok.SEP], *[np.r_[tok.encode(d), tok.SEP] for d in docs]])
  assert np.array_equal(real_targets(a), stream[1:])  # nothing dropped, nothing repeated
  assert a["inputs"].shape == a["targets"].shape == (math.ceil((len(stream) - 1) / 4), 4)
  assert np.array_equal(a["inputs"][1:, 0], a["targets"][:-1, -1])  # windows overlap by one
  assert a["lengths"][-1] == (len(stream) - 1) % 4 or a["lengths"][-1] == 4
  assert np.all(a["targets"][-1, a["lengths"][-1] :] == tok.PAD)
  assert np.array_equal(a["bytes"], a["lengths"])  # bytes: one target = one byte
  joined = pack([tok.encode(d) for d in docs], tok.SEP, seq_len=4, join=True, doc_bytes=None)
  assert tok.decode(real_targets(joined)) == "helloa longer document"


def test_stdlib_corpus_is_deterministic_split_and_capped():
  files = corpus.list_files()
  assert files == sorted(files) and len(files) > 100
  assert not any(
    part in corpus.EXCLUDE_DIRS or part.startswith("_sysconfigdata")
    for f in files
    for part in f.split("/")
  )
  docs, info = corpus.load(corpus_bytes=300_000)
  docs2, info2 = corpus.load(corpus_bytes=300_000)
  assert info == info2 and all(docs[s] == docs2[s] for s in docs)
  biggest = max((corpus.stdlib_root() / f).stat().st_size for f in files)
  for split, (lo, hi) in corpus.SPLIT_BUCKETS.items():
    assert info["files"][split] >= 1
    assert info["bytes"][split] < 300_000 * (hi - lo) // 100 + biggest
  assert corpus.split_of("json/decoder.py") == corpus.split_of("json/decoder.py")
  shares = [corpus.split_of(f) for f in files]
  assert shares.count("train") > 0.8 * len(files)  # the 90/5/5 buckets, roughly
  assert info["python"].count(".") == 2 and info["files_available"] == len(files)


def test_folder_and_single_file_sources(tmp_path):
  folder = tmp_path / "docs"
  (folder / "sub").mkdir(parents=True)
  texts = {f"sub/d{i}.txt": f"document {i} " * (i + 1) for i in range(40)}
  for rel, text in texts.items():
    (folder / rel).write_text(text)
  (folder / ".hidden.txt").write_text("never read")
  task = tasks.build({"name": "lm", "path": str(folder), "seq_len": 16, "corpus_bytes": 0})
  seen = {s: documents(task.dataset(s).arrays) for s in tasks.SPLITS}
  expect = {s: sorted(t for r, t in texts.items() if corpus.split_of(r) == s) for s in seen}
  assert {s: sorted(d) for s, d in seen.items()} == expect  # each file whole, in its hash split

  f = tmp_path / "one.txt"
  f.write_bytes(bytes(range(32, 127)) * 20)  # 1900 bytes
  task = tasks.build({"name": "lm", "path": str(f), "seq_len": 32, "corpus_bytes": 0})
  parts = {s: tok.decode(real_targets(task.dataset(s).arrays)).encode() for s in tasks.SPLITS}
  assert parts["train"] + parts["validation"] + parts["test"] == f.read_bytes()
  assert len(parts["train"]) == 1900 * 90 // 100
  assert task.vocab()["data"]["bytes"] == {"train": 1710, "validation": 95, "test": 95}


def test_bad_lm_inputs_give_clear_errors(tmp_path):
  with pytest.raises(tasks.DataError, match="not found"):
    tasks.build({"name": "lm", "path": str(tmp_path / "missing")}).setup()
  (tmp_path / "empty").mkdir()
  with pytest.raises(tasks.DataError, match="no .*files found"):
    tasks.build({"name": "lm", "path": str(tmp_path / "empty")}).setup()
  (tmp_path / "one").mkdir()
  (tmp_path / "one" / "a.txt").write_text("a single document lands in a single split")
  with pytest.raises(tasks.DataError, match=r"split of .* is empty \(0 bytes\); give it more"):
    tasks.build({"name": "lm", "path": str(tmp_path / "one")}).setup()
  (tmp_path / "rows").mkdir()
  (tmp_path / "rows" / "train.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
  with pytest.raises(tasks.DataError, match=r"missing column\(s\) \['text'\]"):
    tasks.build({"name": "lm", "path": str(tmp_path / "rows")}).setup()
  with pytest.raises((ImportError, tasks.DataError), match="tokenizers|not found"):
    tasks.build({"name": "lm", "tokenizer": str(tmp_path / "tok.json")})


def test_tokenizer_bytes_per_window_add_up(tmp_path):
  tk = pytest.importorskip("tokenizers", reason="optional 'tokenizers' package not installed")
  model = tk.models.WordLevel({"<|endoftext|>": 0, "[UNK]": 1, "héllo": 2, "world": 3}, "[UNK]")
  t = tk.Tokenizer(model)
  t.pre_tokenizer = tk.pre_tokenizers.Whitespace()
  t.save(str(tmp_path / "tok.json"))
  rows = ["héllo world héllo", "world  x", "héllo"]
  (tmp_path / "d").mkdir()
  for split in ("train", "validation", "test"):
    lines = [json.dumps({"text": r}) for r in rows]
    (tmp_path / "d" / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
  task = tasks.build(
    {
      "name": "lm",
      "path": str(tmp_path / "d"),
      "tokenizer": str(tmp_path / "tok.json"),
      "seq_len": 3,
    }  # fmt: skip
  )
  a = task.dataset("train").arrays
  assert task.vocab_size == 4 and task.vocab()["specials"] == {"<|endoftext|>": 0}
  assert a["bytes"].sum() == sum(len(r.encode()) for r in rows) + len(rows)
  assert a["lengths"].sum() == 3 + 2 + 1 + len(rows)  # word tokens + one SEP per document


def test_lm_small_config_trains_a_few_steps():
  cfg = load_config("lm", "mixer=local,size=small")
  cfg.data.update(dict(seq_len=32, corpus_bytes=40_000))
  cfg.model.update(dict(dim=32, depth=1))
  cfg.model.mixer = {"name": "local", "window": 4, "num_heads": 2}
  task = tasks.build({"name": cfg.task, **cfg.data.to_dict()})
  assert task.causal and task.main_mode == "min"
  model = task.build_model(cfg.model.to_dict(), nnx.Rngs(params=0, dropout=1))
  assert isinstance(model, heads.LanguageModel)
  batch = next(task.dataset("train").train_batches(8, seed=0))

  losses, sums = sgd_steps(task, model, batch, lr=0.2)
  assert all(np.isfinite(losses)) and losses[-1] < losses[0]
  assert abs(losses[0] - math.log(tok.VOCAB_SIZE)) < 1.0  # starts near uniform
  m = task.summarize(sums)
  assert m["loss"] == pytest.approx(losses[-1], rel=1e-5)
  assert m["bits_per_byte"] == pytest.approx(m["loss"] / math.log(2), rel=1e-5)
  assert m["perplexity"] == pytest.approx(math.exp(m["loss"]), rel=1e-5)
  assert 0.0 <= m["accuracy"] <= 1.0
