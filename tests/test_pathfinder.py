"""Pathfinder / Path-X: generated labels checked on the PNGs, determinism, the release-layout
loader (empty PNG skipped with a warning), bad input, a few training steps."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from PIL import Image
from scipy import ndimage

from lrm import tasks

ROOT = Path(__file__).resolve().parents[1]
# Read from the image alone: curve pixels within LINK (Chebyshev) of each other belong to one
# curve (this bridges dash gaps); a CORE x CORE block of ink is only found inside a marker.
LINK = {32: 2, 128: 3}
CORE = {32: 3, 128: 5}


def load_module(name: str, path: Path):
  spec = importlib.util.spec_from_file_location(name, path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


prepare_data = load_module("prepare_data", ROOT / "scripts" / "prepare_data.py")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
  monkeypatch.setenv("LRM_DATA_CACHE", str(tmp_path / "cache"))


def markers_connected(img: np.ndarray) -> bool:
  """Whether the two markers of a Pathfinder image lie on one (dashed) curve."""
  size, k = len(img), LINK[len(img)]
  ink = img > 0
  grown = np.zeros((size + k, size + k), bool)  # dilate by a k x k square: links distance <= k
  for dr in range(k):
    for dc in range(k):
      grown[dr : dr + size, dc : dc + size] |= ink
  curves, _ = ndimage.label(grown, structure=np.ones((3, 3)))
  cores, n = ndimage.label(ndimage.binary_erosion(ink, np.ones((CORE[size],) * 2)), np.ones((3, 3)))
  assert n == 2, f"expected 2 markers, found {n}"
  (a, b) = (tuple(np.argwhere(cores == i)[0]) for i in (1, 2))
  return curves[a] == curves[b]


def read_release(root: Path) -> list[tuple[np.ndarray, int]]:
  """(image, label) for every metadata line, read with PIL alone (not the task's loader)."""
  out = []
  for meta in sorted((root / "metadata").glob("*.npy")):
    for line in meta.read_text().splitlines():
      f = line.split()
      out.append((np.asarray(Image.open(root / f[0] / f[1])), int(f[3])))
  return out


def test_prepare_data_is_deterministic_and_labels_hold(tmp_path):
  def run(task: str, out: Path, seed: int, n: int) -> dict[str, bytes]:
    argv = [f"--task={task}", f"--out={out}", f"--num_train={n}", "--num_val=1", "--num_test=1"]
    assert prepare_data.main([*argv, f"--seed={seed}"]) == 0
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

  for task, size, n in (("pathfinder", 32, 40), ("pathx", 128, 8)):
    a = run(task, tmp_path / f"{task}_a", 0, n)
    assert a == run(task, tmp_path / f"{task}_b", 0, n)
    assert a != run(task, tmp_path / f"{task}_c", 1, n)
    images = read_release(tmp_path / f"{task}_a" / f"pathfinder{size}" / "curv_contour_length_14")
    assert len(images) == n + 2 and {y for _, y in images} == {0, 1}
    for img, label in images:
      assert img.shape == (size, size) and img.dtype == np.uint8
      assert markers_connected(img) == bool(label)


def test_labels_hold_for_every_difficulty(tmp_path):
  for difficulty in ("curv_baseline", "curv_contour_length_9"):
    tasks.pathfinder.Pathfinder.generate(
      tmp_path, seed=5, num_train=16, num_val=2, num_test=2, difficulty=difficulty
    )
    for img, label in read_release(tmp_path / "pathfinder32" / difficulty):
      assert markers_connected(img) == bool(label)


def make_release(tmp_path: Path, n: int = 20) -> Path:
  """A generated pathfinder32 in the release's nested layout; returns the difficulty dir."""
  root = tmp_path / "lra_release" / "lra_release"
  tasks.pathfinder.Pathfinder.generate(root, seed=0, num_train=n, num_val=0, num_test=0)
  return root / "pathfinder32" / "curv_contour_length_14"


def test_loader_reads_release_layout_and_skips_empty_png(tmp_path):
  d = make_release(tmp_path)
  images = read_release(d)
  (d / "imgs" / "0" / "sample_3.png").write_bytes(b"")  # like curv_baseline/imgs/0/sample_172
  with pytest.warns(UserWarning, match=r"skipped 1 empty image file\(s\), e\.g\. .*sample_3\.png"):
    task = tasks.build({"name": "pathfinder", "path": str(tmp_path)})
    task.setup()
  tr, va, te = (task.dataset(s).arrays for s in tasks.SPLITS)
  assert [len(x["label"]) for x in (tr, va, te)] == [15, 2, 2]  # 16/2/2 by order, one empty
  kept = [i for i in range(16) if i != 3]
  assert tr["label"].tolist() == [images[i][1] for i in kept]
  assert np.array_equal(tr["inputs"][3], images[4][0].reshape(-1))  # row-major pixels
  assert np.array_equal(te["inputs"][1], images[19][0].reshape(-1))
  assert tr["inputs"].dtype == np.uint8 and np.all(tr["lengths"] == 1024)
  assert task.seq_len == 1024 and task.vocab_size == 256 and task.num_classes == 2
  assert task.vocab()["data"]["skipped_empty"] == {"train": 1, "validation": 0, "test": 0}


def test_bad_input_names_file_and_line(tmp_path):
  d = make_release(tmp_path, n=10)
  meta = d / "metadata" / "0.npy"
  lines = meta.read_text().splitlines(keepends=True)

  def expect(match: str, **opts) -> None:
    with pytest.raises(tasks.DataError, match=match):
      tasks.build({"name": "pathfinder", "path": str(d), **opts}).setup()

  meta.write_text("".join(lines[:2] + ["imgs/0 sample_2.png 2 7 14\n"] + lines[3:]))
  expect(r"0\.npy line 3: label '7' is not 0 or 1")
  meta.write_text("".join(lines[:4] + ["imgs/0 sample_4.png\n"] + lines[5:]))
  expect(r"0\.npy line 5: expected at least 4 fields")
  meta.write_text("".join(lines[:5] + ["imgs/0 missing.png 5 1 14\n"] + lines[6:]))
  expect(r"missing\.png: cannot read the image listed in .*0\.npy line 6")
  meta.write_text("".join(lines))
  (d / "imgs" / "0" / "sample_1.png").write_bytes(b"not a png")
  expect(r"sample_1\.png: unreadable image")
  Image.fromarray(np.zeros((16, 16), np.uint8)).save(d / "imgs" / "0" / "sample_1.png")
  expect(r"sample_1\.png: 16x16 pixels, expected 32x32")
  shutil.rmtree(d / "metadata")
  expect("no Pathfinder data")
  expect("unknown difficulty 'hard'", difficulty="hard")


@pytest.mark.usefixtures("fast_compile")  # compile time dominates; see conftest
@pytest.mark.parametrize("name", ["pathfinder", "pathx"])
def test_small_config_trains_a_few_steps(name):
  cfg = load_module(f"exp_{name}", ROOT / "experiments" / f"{name}.py").get_config(
    "mixer=conv,size=small"
  )
  cfg.data.update(dict(num_train=4, num_val=1, num_test=1))
  cfg.model.update(dict(dim=8, depth=1))
  cfg.model.mixer = {"name": "conv", "kernel_size": 3}
  task = tasks.build({"name": cfg.task, **cfg.data.to_dict()})
  model = task.build_model(cfg.model.to_dict(), nnx.Rngs(params=0, dropout=1))
  batch = next(task.dataset("train").train_batches(4, seed=0))
  assert batch["inputs"].shape == (4, {"pathfinder": 1024, "pathx": 16384}[name])

  @nnx.jit
  def step(model, batch):
    (loss, sums), grads = nnx.value_and_grad(lambda m: task.loss(m, batch), has_aux=True)(model)
    params = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(lambda p, g: p - 0.5 * g, params, grads))
    return loss, sums

  losses = [float(step(model, batch)[0]) for _ in range(3)]
  assert all(np.isfinite(losses)) and losses[-1] < losses[0]
  _, sums = step(model, batch)
  m = task.summarize({k: (float(t), float(c)) for k, (t, c) in sums.items()})
  assert 0.0 <= m["accuracy"] <= 1.0 and np.isfinite(m["loss"])
