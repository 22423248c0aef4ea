"""The data layouts people have, each as a tiny fixture in that exact layout: a hub snapshot
(``data/<split>-0000x-of-0000n.parquet``), a single saved ``Dataset``, and per-split text
files for the lm task; and error hints that fit the cause."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
from conftest import script
from PIL import Image

from lrm import tasks
from lrm.data import bytes as tok

pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
  monkeypatch.setenv("LRM_DATA_CACHE", str(tmp_path / "cache"))


def reviews(n: int, offset: int = 0) -> dict[str, list]:
  return {"text": [f"review {offset + i}" for i in range(n)], "label": [i % 2 for i in range(n)]}


def texts_of(task: tasks.Task, split: str) -> list[str]:
  a = task.dataset(split).arrays
  return [tok.decode(row[:n]) for row, n in zip(a["inputs"], a["lengths"], strict=True)]


def hub_snapshot(root, shards: dict[str, list[dict[str, list]]], folder: str = "data") -> str:
  """``<root>/README.md`` and ``<root>/<folder>/<split>-0000i-of-0000n.parquet``, as
  ``huggingface-cli download --repo-type dataset`` leaves them."""
  (root / folder).mkdir(parents=True)
  (root / "README.md").write_text("---\nconfigs: ...\n---\n")
  for split, parts in shards.items():
    for i, cols in enumerate(parts):
      name = f"{split}-{i:05d}-of-{len(parts):05d}.parquet"
      datasets.Dataset.from_dict(cols).to_parquet(str(root / folder / name))
  return str(root)


def test_hub_snapshot_shards_are_read_in_order(tmp_path):
  path = hub_snapshot(
    tmp_path / "imdb", {"train": [reviews(3), reviews(2, 3)], "test": [reviews(2, 10)]}
  )
  task = tasks.build({"name": "text", "path": path, "max_len": 16})
  assert texts_of(task, "train") == [f"review {i}" for i in range(5)]  # both shards, in order
  assert texts_of(task, "test") == ["review 10", "review 11"]
  assert task.vocab()["data"]["validation"] == "the test split (LRA protocol)"


def test_a_snapshot_with_configurations_uses_hub_config(tmp_path):
  root = tmp_path / "snap"
  hub_snapshot(root, {"train": [reviews(2)], "test": [reviews(1)]}, folder="plain_text")
  hub_snapshot(tmp_path / "other", {"train": [reviews(4)], "test": [reviews(1)]}, folder="other")
  (tmp_path / "other" / "other").rename(root / "other")
  with pytest.raises(tasks.DataError, match="hub snapshot with data/train-\\*.parquet"):
    tasks.build({"name": "text", "path": str(root)}).setup()  # two configurations: which?
  task = tasks.build({"name": "text", "path": str(root), "hub_config": "other", "max_len": 8})
  assert len(task.dataset("train")) == 4


def test_lm_reads_a_snapshot_and_carves_missing_splits(tmp_path):
  rows = {"text": [f"line {i}" for i in range(40)]}
  path = hub_snapshot(tmp_path / "wiki", {"train": [rows]})
  task = tasks.build({"name": "lm", "path": path, "seq_len": 8, "corpus_bytes": 0})
  task.setup()
  assert task.vocab()["data"]["files"] == {"train": 36, "validation": 2, "test": 2}


def test_a_single_saved_dataset_is_split_with_a_warning(tmp_path, capsys):
  path = str(tmp_path / "single")
  datasets.Dataset.from_dict(reviews(40)).save_to_disk(path)
  task = tasks.build({"name": "text", "path": path, "max_len": 16})
  sizes = {s: len(task.dataset(s)) for s in tasks.SPLITS}
  assert sizes == {"train": 36, "validation": 2, "test": 2}
  assert texts_of(task, "validation") == ["review 19", "review 39"]  # index % 20 == 19
  assert texts_of(task, "test") == ["review 18", "review 38"]
  err = capsys.readouterr().err
  assert "single saved Dataset (no splits)" in err and "36 / 2 / 2 rows" in err
  bad = reviews(40)
  bad["label"][39] = 7  # in the validation split: the error names the source row
  datasets.Dataset.from_dict(bad).save_to_disk(str(tmp_path / "bad"))
  with pytest.raises(tasks.DataError, match="bad row 40: label 7 is not an integer"):
    tasks.build({"name": "text", "path": str(tmp_path / "bad")}).setup()


@pytest.mark.parametrize(
  "names", [("train", "valid", "test"), ("ptb.train", "ptb.valid", "ptb.test")]
)
def test_lm_split_files_are_their_splits(tmp_path, names):
  folder = tmp_path / "corpus"
  folder.mkdir()
  body = {s: f"{s} text. " * (20 + i) for i, s in enumerate(tasks.SPLITS)}
  for name, split in zip(names, tasks.SPLITS, strict=True):
    (folder / f"{name}.txt").write_text(body[split])
  task = tasks.build({"name": "lm", "path": str(folder), "seq_len": 16})
  task.setup()
  info = task.vocab()["data"]
  assert info["layout"] == "split files"
  assert info["bytes"] == {s: len(body[s]) for s in tasks.SPLITS}
  a = task.dataset("validation").arrays
  targets = a["targets"][np.arange(a["targets"].shape[1])[None] < a["lengths"][:, None]]
  assert tok.decode(targets[targets != tok.SEP]) == body["validation"]


def test_lm_split_file_errors_name_the_file(tmp_path):
  folder = tmp_path / "corpus"
  folder.mkdir()
  (folder / "train.txt").write_text("some training text " * 10)
  (folder / "test.txt").write_text("some test text " * 10)
  with pytest.raises(tasks.DataError, match="no validation file; add valid.txt") as e:
    tasks.build({"name": "lm", "path": str(folder)}).setup()
  assert "corpus_bytes" not in str(e.value)
  (folder / "valid.txt").write_text("")
  with pytest.raises(tasks.DataError, match="valid.txt is empty; put the validation text there"):
    tasks.build({"name": "lm", "path": str(folder)}).setup()


def test_image_columns_are_options_and_the_error_names_them(tmp_path):
  feats = datasets.Features(
    {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(i) for i in range(10)])}
  )
  rng = np.random.default_rng(0)
  root = tmp_path / "cifar"
  (root / "data").mkdir(parents=True)
  for split, n in (("train", 10), ("test", 4)):
    imgs = [Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)) for _ in range(n)]
    ds = datasets.Dataset.from_dict({"image": imgs, "label": list(range(n))}, features=feats)
    ds.to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
  with pytest.raises(tasks.DataError, match=r"--config.data.image_column=<column>") as e:
    tasks.build({"name": "image", "path": str(root), "image_size": 4}).setup()
  assert "rename" not in str(e.value)
  spec = {"name": "image", "path": str(root), "image_size": 4, "image_column": "image"}
  task = tasks.build(spec)
  assert {s: len(task.dataset(s)) for s in tasks.SPLITS} == {"train": 9, "validation": 1, "test": 4}


def test_a_snapshot_trains_from_the_command_line(tmp_path, capsys):
  path = hub_snapshot(tmp_path / "imdb", {"train": [reviews(8)], "test": [reviews(4, 8)]})
  train = script("train")
  argv = ["train.py", "--config=experiments/text.py", f"--config.data.path={path}", "--dry_run"]
  assert train.main(argv) == 0
  assert "examples: train 8, validation 4, test 4" in capsys.readouterr().out
