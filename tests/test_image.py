"""LRA Image (grayscale CIFAR-10): generator, LRA grayscale, splits, bad input, a few steps."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import datasets
import jax
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from lrm import tasks
from lrm.tasks.image import grating, lra_grayscale

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("prepare_data", ROOT / "scripts" / "prepare_data.py")
prepare_data = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prepare_data)
FEATURES = datasets.Features(
  {"img": datasets.Image(), "label": datasets.ClassLabel(names=[str(i) for i in range(10)])}
)


def load_config(name: str, arg: str):
  s = importlib.util.spec_from_file_location(f"exp_{name}", ROOT / "experiments" / f"{name}.py")
  mod = importlib.util.module_from_spec(s)
  s.loader.exec_module(mod)
  return mod.get_config(arg)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
  monkeypatch.setenv("LRM_DATA_CACHE", str(tmp_path / "cache"))


def save(path: Path, splits: dict[str, tuple[list, list[int]]]) -> str:
  dd = {
    s: datasets.Dataset.from_dict({"img": im, "label": y}, features=FEATURES)
    for s, (im, y) in splits.items()
  }
  datasets.DatasetDict(dd).save_to_disk(str(path))
  return str(path)


def test_generator_is_deterministic(tmp_path):
  def run(out: Path, seed: int) -> dict[str, bytes]:
    argv = [f"--out={out}", "--num_train=12", "--num_val=4", "--num_test=4", f"--seed={seed}"]
    assert prepare_data.main(["--task=image", *argv]) == 0
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

  a = run(tmp_path / "a", 0)
  assert a == run(tmp_path / "b", 0) and a != run(tmp_path / "c", 1)
  d = datasets.load_from_disk(str(tmp_path / "a"))
  assert set(d) == {"train", "validation", "test"} and len(d["train"]) == 12
  assert isinstance(d["train"].features["img"], datasets.Image)
  assert d["train"][0]["img"].size == (32, 32) and d["train"][0]["img"].mode == "RGB"


def test_grayscale_matches_tf_rgb_to_grayscale():
  # tf: uint8 -> x/255 -> sum(w*x) -> cast(y * 255.5) truncating; rounding would give 30/59/12
  px = np.asarray([[100, 0, 0], [0, 100, 0], [0, 0, 103], [255, 255, 255], [0, 0, 0]], np.uint8)
  assert lra_grayscale(px).tolist() == [29, 58, 11, 255, 0]
  rgb = np.random.default_rng(0).integers(0, 256, (500, 3)).astype(np.uint8)
  ref = np.floor((rgb / 255.0) @ np.asarray([0.2989, 0.5870, 0.1140]) * 255.5)
  assert np.abs(lra_grayscale(rgb).astype(int) - ref).max() <= 1  # float32 vs float64 ties


def test_grating_classes_differ_by_orientation():
  rng = np.random.default_rng(1)
  # a horizontal grating (class 0: varies along x) vs a vertical one (class 5: varies along y)
  g0, g5 = (lra_grayscale(grating(rng, c, 32)).astype(float) for c in (0, 5))
  assert np.var(g0.mean(0)) > 4 * np.var(g0.mean(1))
  assert np.var(g5.mean(1)) > 4 * np.var(g5.mean(0))


def test_loader_splits_like_lra_and_keeps_black_pixels(tmp_path):
  rng = np.random.default_rng(0)
  arrs = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(20)]
  arrs[0][:] = 0  # an all-black image: every token is 0, yet nothing is padding
  imgs = [Image.fromarray(a) for a in arrs]
  labels = [i % 10 for i in range(20)]
  path = save(tmp_path / "c", {"train": (imgs, labels), "test": (imgs[:3], labels[:3])})
  task = tasks.build({"name": "image", "path": path, "image_size": 8})
  tr, va, te = (task.dataset(s).arrays for s in tasks.SPLITS)
  assert len(tr["label"]) == 18 and va["label"].tolist() == labels[18:]  # train[90%:]
  assert np.array_equal(tr["inputs"][1], lra_grayscale(arrs[1]).reshape(64))  # row-major
  assert tr["inputs"].dtype == np.uint8 and task.seq_len == 64 and task.vocab_size == 256
  assert np.all(tr["inputs"][0] == 0) and np.all(tr["lengths"] == 64)
  assert task.vocab()["data"]["validation"].startswith("last 10% of train")


def test_bad_images_and_labels_name_the_row(tmp_path):
  ok = Image.fromarray(np.zeros((8, 8, 3), np.uint8))
  bad = {"bytes": b"not a png", "path": None}
  path = save(tmp_path / "a", {"train": ([ok, bad], [1, 2]), "test": ([ok], [0])})
  with pytest.raises(tasks.DataError, match="split 'train' row 2: unreadable image"):
    tasks.build({"name": "image", "path": path, "image_size": 8}).setup()
  path = save(tmp_path / "b", {"train": ([ok, ok], [1, 2]), "test": ([ok], [0])})
  with pytest.raises(tasks.DataError, match="row 1: image is 8x8, expected 32x32"):
    tasks.build({"name": "image", "path": path}).setup()
  plain = datasets.Features({"img": datasets.Image(), "label": datasets.Value("int64")})
  dd = datasets.Dataset.from_dict({"img": [ok], "label": [12]}, features=plain)
  datasets.DatasetDict({"train": dd, "test": dd}).save_to_disk(str(tmp_path / "c"))
  with pytest.raises(tasks.DataError, match=r"row 1: label 12 is not an integer in 0\.\.9"):
    tasks.build({"name": "image", "path": str(tmp_path / "c"), "image_size": 8}).setup()


def test_image_small_config_trains_a_few_steps():
  cfg = load_config("image", "mixer=local,size=small")
  cfg.data.update(dict(image_size=8, num_train=40, num_val=8, num_test=8))
  cfg.model.update(dict(dim=32, depth=1, mlp_ratio=2))
  cfg.model.mixer = {"name": "local", "window": 8, "num_heads": 2}
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
