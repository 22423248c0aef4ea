"""LRA Pathfinder (32x32, 1024 tokens) and Path-X (128x128, 16384 tokens).

Is there a dashed curve joining the two marked dots? Two classes; an image is read row by
row as a sequence of pixel tokens 0-255 (no padding, so every length is the full size).

Data (``path``):
  * ``""``: generated offline by ``lrm.data.pathfinder_gen`` (``num_train + num_val +
    num_test`` images, the task's own ``seed`` and ``difficulty``), written once in the
    release layout under ``$LRM_DATA_CACHE`` and read back by the loader below; the splits
    are then those counts, in order.
  * the release: a folder holding ``pathfinder32/`` (``pathfinder128/`` for Path-X), or its
    ``lra_release/`` or ``lra_release/lra_release/`` parents, or the difficulty folder
    itself. Inside ``<difficulty>/``: ``metadata/<k>.npy`` index files, which are TEXT (one
    line per image, fields split on whitespace: 0 folder, 1 file name, 3 label) and
    ``imgs/<k>/sample_<n>.png``. ``difficulty`` is ``curv_contour_length_14`` (LRA's
    "hard", the benchmark), ``curv_contour_length_9`` or ``curv_baseline``.

Splits of release data: the images in index order (metadata files by their number k, lines
in file order), cut 80/10/10 (rounded) into train/validation/test, LRA's proportions
(``hard[:80%]``, ``[80%:90%]``, ``[90%:]``). LRA's own order was the TFDS record order (a
hash of the example keys), which we do not reproduce, so the members differ.

The release holds an empty (0-byte) PNG (``pathfinder32/curv_baseline/imgs/0/sample_172.png``;
LRA filtered it, S4 and Mega blacklist it): empty files are skipped with a warning and
counted in ``vocab()["data"]``. Any other missing or unreadable image is an error.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lrm.data import DataError, pathfinder_gen
from lrm.registry import register
from lrm.tasks.base import SPLITS
from lrm.tasks.classify import SIZE_OPTIONS, Splits, TableTask

PARENTS = ("", "lra_release", "lra_release/lra_release")
Entry = tuple[Path, int, str]  # (image file, label, "metadata file line n")


def find_difficulty_dir(path: Path, size: int, difficulty: str) -> Path:
  """The folder holding ``metadata/`` and ``imgs/`` for ``size`` and ``difficulty``."""
  tried = [path / p / f"pathfinder{size}" / difficulty for p in PARENTS]
  for d in [*tried, path / difficulty, path]:
    if (d / "metadata").is_dir():
      return d
  raise DataError(
    f"{path}: no Pathfinder data; expected {tried[0]}/metadata/*.npy and imgs/ (from "
    f"lra_release), or give the difficulty folder itself as data.path"
  )


def _index_key(f: Path) -> tuple:
  return (0, int(f.stem), "") if f.stem.isdigit() else (1, 0, f.stem)


def read_index(root: Path) -> list[Entry]:
  """Every (image, label) listed in ``root/metadata/*.npy``, in index order."""
  files = sorted((root / "metadata").glob("*.npy"), key=_index_key)
  if not files:
    raise DataError(f"{root / 'metadata'}: no <k>.npy index files")
  entries = []
  for f in files:
    try:
      lines = f.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError:
      raise DataError(
        f"{f}: not a text index; Pathfinder's metadata .npy files are text lines "
        f"'imgs/<k> sample_<n>.png <n> <label> ...'"
      ) from None
    if lines[-1] == "":
      lines.pop()  # the newline that ends the last line
    for i, line in enumerate(lines, 1):
      fields, where = line.split(), f"{f} line {i}"
      if len(fields) < 4:
        raise DataError(
          f"{where}: expected at least 4 fields (folder, file, index, label), got {len(fields)}"
        )
      if fields[3] not in ("0", "1"):
        raise DataError(f"{where}: label {fields[3]!r} is not 0 or 1; fix field 4 of that line")
      image = root / fields[0] / fields[1]
      if Path(fields[0]).is_absolute() or ".." in Path(fields[0], fields[1]).parts:
        raise DataError(
          f"{where}: the image path {fields[0]}/{fields[1]} leaves the data folder {root}; "
          f"index files name images relative to it (imgs/<n>/sample_<k>.png)"
        )
      entries.append((image, int(fields[3]), where))
  return entries


def read_images(entries: list[Entry], size: int) -> tuple[dict[str, np.ndarray], list[str]]:
  """Decode the listed PNGs to ``inputs [N, size*size]`` uint8 and labels; empty files are
  left out and returned by name."""
  pixels = np.empty((len(entries), size * size), np.uint8)  # [N, L]
  keep = np.ones(len(entries), bool)
  empty = []
  for j, (f, _, where) in enumerate(entries):
    try:
      data = f.read_bytes()
    except OSError as e:
      raise DataError(f"{f}: cannot read the image listed in {where} ({e.strerror})") from None
    if not data:
      keep[j] = False
      empty.append(str(f))
      continue
    try:
      with Image.open(io.BytesIO(data)) as im:
        img = np.asarray(im.convert("L"))  # [H, W]
    except Exception as e:  # Pillow raises several types for broken files
      raise DataError(
        f"{f}: unreadable image ({type(e).__name__}: {e}); listed in {where}"
      ) from None
    if img.shape != (size, size):
      raise DataError(f"{f}: {img.shape[1]}x{img.shape[0]} pixels, expected {size}x{size}")
    pixels[j] = img.reshape(-1)
  labels = np.array([e[1] for e in entries], np.int32)
  if empty:  # (a copy, so only when needed: Path-X's train split is 2.6 GB)
    pixels, labels = pixels[keep], labels[keep]
  lengths = np.full(len(labels), size * size, np.int32)
  return {"inputs": pixels, "lengths": lengths, "label": labels}, empty


@register("task", "pathfinder")
class Pathfinder(TableTask):
  """Binary classification of Pathfinder images as pixel sequences."""

  num_classes = 2
  image_size = 32
  gen_format = 1

  def __init__(
    self,
    *,
    path: str = "",
    difficulty: str = "curv_contour_length_14",
    num_train: int = 2000,
    num_val: int = 200,
    num_test: int = 200,
    seed: int = 0,
  ):
    if difficulty not in pathfinder_gen.DIFFICULTIES:
      raise DataError(
        f"{self.registered_name}: unknown difficulty '{difficulty}'; choose one of "
        f"{', '.join(pathfinder_gen.DIFFICULTIES)}"
      )
    self.difficulty = difficulty
    sizes = {"num_train": num_train, "num_val": num_val, "num_test": num_test}
    gen = {**sizes, "seed": seed, "difficulty": difficulty}
    super().__init__(path=path, seq_len=self.image_size**2, gen_options=gen)

  @property
  def vocab_size(self) -> int:
    return 256

  def vocab(self) -> dict[str, Any]:
    return {"kind": "pixels", "image_size": self.image_size, "pad_id": None, "data": self._info}

  def read(self, source: str) -> Splits:
    root = find_difficulty_dir(Path(source).expanduser(), self.image_size, self.difficulty)
    entries = read_index(root)
    n = len(entries)
    if self.path:
      cuts = (int(round(0.8 * n)), int(round(0.9 * n)))  # LRA's 80/10/10
    else:
      sizes = [self.gen_options[k] for k in SIZE_OPTIONS.values()]
      if n != sum(sizes):
        raise DataError(f"{root}: {n} images listed, expected {sum(sizes)}; delete it")
      cuts = (sizes[0], sizes[0] + sizes[1])
    bounds = dict(zip(SPLITS, zip((0, *cuts), (*cuts, n), strict=True), strict=True))
    splits, empty = {}, {}
    for split, (lo, hi) in bounds.items():
      splits[split], empty[split] = read_images(entries[lo:hi], self.image_size)
      if not len(splits[split]["label"]):
        raise DataError(f"{root}: the {split} split is empty ({n} images listed in all)")
    skipped = [f for s in SPLITS for f in empty[s]]
    if skipped:
      warnings.warn(
        f"{self.registered_name}: skipped {len(skipped)} empty image file(s), e.g. {skipped[0]} "
        f"(a known defect of the LRA release)",
        stacklevel=3,  # the caller of setup()
      )
    self._info.update(
      source=str(root),
      split="80/10/10 of the index order" if self.path else "generated counts",
      skipped_empty={s: len(empty[s]) for s in SPLITS},
    )
    return splits

  @classmethod
  def generate(
    cls,
    out: Path,
    *,
    seed: int = 0,
    num_train: int = 160_000,
    num_val: int = 20_000,
    num_test: int = 20_000,
    difficulty: str = "curv_contour_length_14",
  ) -> list[Path]:
    """Write generated images in the release layout (LRA's 160k/20k/20k by default, which
    the 80/10/10 split of a release folder reproduces); return the metadata files."""
    return pathfinder_gen.write_dataset(
      Path(out),
      size=cls.image_size,
      difficulty=difficulty,
      num_images=num_train + num_val + num_test,
      seed=seed,
    )


@register("task", "pathx")
class PathX(Pathfinder):
  """Path-X: the same task on 128x128 images (16384 tokens)."""

  image_size = 128

  def __init__(
    self,
    *,
    path: str = "",
    difficulty: str = "curv_contour_length_14",
    num_train: int = 400,
    num_val: int = 50,
    num_test: int = 50,
    seed: int = 0,
  ):
    super().__init__(
      path=path,
      difficulty=difficulty,
      num_train=num_train,
      num_val=num_val,
      num_test=num_test,
      seed=seed,
    )
