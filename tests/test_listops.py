"""ListOps: generator rules and determinism, the official TSV loader, bad input, a few steps."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import datasets
import jax
import numpy as np
import pytest
from flax import nnx

from lrm import tasks
from lrm.data import listops_gen
from lrm.tasks.listops import TOKENS

ROOT = Path(__file__).resolve().parents[1]
HEADER = "Source\tTarget"


def load_module(name: str, path: Path):
  spec = importlib.util.spec_from_file_location(name, path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


prepare_data = load_module("prepare_data", ROOT / "scripts" / "prepare_data.py")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
  monkeypatch.setenv("LRM_DATA_CACHE", str(tmp_path / "cache"))


# ---- an evaluator written from the LRA source format, independent of the generator --------
def evaluate(source: str) -> int:
  """Value of an LRA ListOps string: ``( a b )`` pairs fold an operator's arguments in."""
  toks = source.split()

  def node(i: int):
    if toks[i] != "(":
      t = toks[i]
      return (int(t) if t.isdigit() else t), i + 1
    left, i = node(i + 1)
    right, i = node(i)
    assert toks[i] == ")", f"expected ) at token {i}"
    if isinstance(left, str):  # an operator meets its first argument
      return (left, [right]), i + 1
    op, args = left
    if right == "]":
      return apply(op, args), i + 1
    return (op, [*args, right]), i + 1

  def apply(op: str, args: list[int]) -> int:
    table = {"[MIN": min, "[MAX": max, "[SM": lambda a: sum(a) % 10}
    return int(np.median(args)) if op == "[MED" else table[op](args)

  value, end = node(0)
  assert end == len(toks) and isinstance(value, int)
  return value


def test_evaluator_on_hand_made_expressions():
  assert evaluate("( ( ( [MIN 9 ) 3 ) ] )") == 3
  assert evaluate("( ( ( ( ( [MED 1 ) 2 ) 3 ) 4 ) ] )") == 2  # int(np.median) floors 2.5
  assert evaluate("( ( ( ( [SM 7 ) 8 ) ( ( ( [MAX 1 ) 3 ) ] ) ) ] )") == 8
  assert evaluate("7") == 7


def paren_free(source: str) -> list[str]:
  return source.replace("(", " ").replace(")", " ").split()


def read_rows(f: Path) -> list[tuple[str, int]]:
  lines = f.read_bytes().decode().split("\r\n")
  assert lines[0] == HEADER and lines[-1] == ""  # csv.writer line ends, like the release
  return [(s, int(t)) for s, t in (line.split("\t") for line in lines[1:-1])]


def test_generated_labels_lengths_and_splits(tmp_path):
  files = tasks.listops.ListOps.generate(
    tmp_path, seed=3, num_train=150, num_val=25, num_test=25, min_len=20, max_len=120
  )
  assert [f.name for f in files] == ["basic_train.tsv", "basic_val.tsv", "basic_test.tsv"]
  rows = [r for f in files for r in read_rows(f)]
  assert [len(read_rows(f)) for f in files] == [150, 25, 25]
  assert len({s for s, _ in rows}) == 200  # unique, across splits too
  for source, label in rows:
    assert evaluate(source) == label
    assert 20 < len(paren_free(source)) < 120
  ops = {t for s, _ in rows for t in s.split() if t.startswith("[")}
  assert ops == {"[MIN", "[MAX", "[MED", "[SM"}
  assert len({label for _, label in rows}) == 10


def test_generator_respects_depth_and_arguments():
  rows = listops_gen.generate(60, seed=0, min_len=10, max_len=200, max_depth=3, max_args=3)
  for source, label in rows:
    depth = max(np.cumsum([t.startswith("[") - (t == "]") for t in source.split()]))
    assert depth <= 2  # operators live above max_depth; depth-3 nodes are digits
    assert evaluate(source) == label
  with pytest.raises(ValueError, match="no ListOps tree"):
    listops_gen.generate(1, seed=0, min_len=500, max_len=2000, max_depth=3, max_args=3)


def test_prepare_data_is_deterministic(tmp_path):
  def run(out: Path, seed: int) -> dict[str, bytes]:
    argv = [f"--out={out}", "--num_train=5", "--num_val=2", "--num_test=2", f"--seed={seed}"]
    assert prepare_data.main(["--task=listops", *argv]) == 0
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}

  a = run(tmp_path / "a", 0)
  assert a == run(tmp_path / "b", 0) and a != run(tmp_path / "c", 1)
  rows = read_rows(tmp_path / "a" / "basic_train.tsv")
  assert len(rows) == 5 and all(500 < len(paren_free(s)) < 2000 for s, _ in rows)


def write(folder: Path, rows: dict[str, list[str]], newline: str = "\n") -> None:
  folder.mkdir(parents=True, exist_ok=True)
  for name, lines in rows.items():
    (folder / f"basic_{name}.tsv").write_bytes(newline.join([HEADER, *lines, ""]).encode())


def test_loader_reads_the_release_format(tmp_path, capsys):
  assert TOKENS == ("<pad>", *"0123456789", "X", "[MAX", "[MED", "[MIN", "[SM")
  rows = ["( ( ( [MIN 9 ) 3 ) ] )\t3", "( ( ( ( [SM 7 ) 8 ) ( ( ( [MAX 1 ) 3 ) ] ) ) ] )\t8"]
  write(tmp_path / "lra_release" / "lra_release" / "listops-1000", {
    "train": rows, "val": rows[:1], "test": rows[1:]}, newline="\r\n")  # fmt: skip
  task = tasks.build({"name": "listops", "path": str(tmp_path), "max_len": 6})
  tr = task.dataset("train").arrays
  assert tr["inputs"].dtype == np.uint8 and tr["inputs"].shape == (2, 6)
  assert tr["inputs"].tolist() == [[14, 10, 4, 11, 0, 0], [15, 8, 9, 12, 2, 4]]  # row 2 cut
  assert tr["lengths"].tolist() == [4, 6] and tr["label"].tolist() == [3, 8]
  assert task.vocab_size == 16 and task.seq_len == 6 and task.num_classes == 10
  assert len(task.dataset("validation")) == 1 and task.dataset("test").arrays["label"][0] == 8
  assert "listops train: 1/2 examples truncated to max_len=6" in capsys.readouterr().out
  assert task.vocab()["data"]["truncated"] == {"train": 1, "validation": 0, "test": 1}


def test_loader_reads_a_saved_dataset(tmp_path):
  d = datasets.Dataset.from_dict({"Source": ["( ( ( [MAX 2 ) 5 ) ] )"], "Target": [5]})
  datasets.DatasetDict({"train": d, "val": d, "test": d}).save_to_disk(str(tmp_path / "s"))
  task = tasks.build({"name": "listops", "path": str(tmp_path / "s"), "max_len": 8})
  va = task.dataset("validation").arrays
  assert va["inputs"][0, :4].tolist() == [12, 3, 6, 11] and va["label"].tolist() == [5]


def test_bad_input_names_file_and_line(tmp_path):
  good = "( ( ( [MIN 9 ) 3 ) ] )\t3"
  cases = {
    "a": ([good, "( ( ( [MIN 9 ) 3 ) ] )\t3\textra"], r"basic_train\.tsv line 3: expected 2"),
    "b": ([good, good, "( ( ( [MIN 9 ) 3 ) ] )\t12"], r"line 4: label '12' is not an integer"),
    "c": (["( ( ( [FIRST 9 ) 3 ) ] )\t9"], r"line 2: unknown token '\[FIRST'"),
    "d": (["\t4"], r"line 2: empty expression"),
  }
  for name, (lines, match) in cases.items():
    write(tmp_path / name, {"train": lines, "val": [good], "test": [good]})
    with pytest.raises(tasks.DataError, match=match):
      tasks.build({"name": "listops", "path": str(tmp_path / name)}).setup()
  (tmp_path / "e").mkdir()
  (tmp_path / "e" / "basic_train.tsv").write_text(f"{good}\n")
  with pytest.raises(tasks.DataError, match=r"basic_train\.tsv line 1: expected the header"):
    tasks.build({"name": "listops", "path": str(tmp_path / "e")}).setup()
  (tmp_path / "e" / "basic_train.tsv").write_text(f"{HEADER}\n{good}\n")
  with pytest.raises(tasks.DataError, match=r"basic_val\.tsv: file not found"):
    tasks.build({"name": "listops", "path": str(tmp_path / "e")}).setup()
  with pytest.raises(tasks.DataError, match="no ListOps data"):
    tasks.build({"name": "listops", "path": str(tmp_path)}).setup()
  with pytest.raises(tasks.DataError, match="min_len"):
    tasks.build({"name": "listops", "min_len": 300, "max_len": 200})
  with pytest.raises(ValueError, match="unknown option"):
    tasks.build({"name": "listops", "max_length": 200})


@pytest.mark.usefixtures("fast_compile")  # compile time dominates; see conftest
def test_small_config_trains_a_few_steps():
  cfg = load_module("exp_listops", ROOT / "experiments" / "listops.py").get_config(
    "mixer=local,size=small"
  )
  cfg.data.update(dict(num_train=24, num_val=8, num_test=8, min_len=16, max_len=64))
  cfg.model.update(dict(dim=16, depth=1))
  cfg.model.mixer = {"name": "local", "window": 4, "num_heads": 2}
  task = tasks.build({"name": cfg.task, **cfg.data.to_dict()})
  model = task.build_model(cfg.model.to_dict(), nnx.Rngs(params=0, dropout=1))
  batch = next(task.dataset("train").train_batches(16, seed=0))

  @nnx.jit
  def step(model, batch):
    (loss, sums), grads = nnx.value_and_grad(lambda m: task.loss(m, batch), has_aux=True)(model)
    params = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(lambda p, g: p - 0.1 * g, params, grads))
    return loss, sums

  losses = [float(step(model, batch)[0]) for _ in range(3)]
  assert all(np.isfinite(losses)) and losses[-1] < losses[0]
  _, sums = step(model, batch)
  m = task.summarize({k: (float(t), float(c)) for k, (t, c) in sums.items()})
  assert 0.0 <= m["accuracy"] <= 1.0 and np.isfinite(m["loss"])
