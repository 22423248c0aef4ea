"""LRA Image: CIFAR-10 as sequences of 1024 grayscale pixels (vocab 256), 10 classes.

Data (``path``):
  * a hub name, ``cifar10`` (columns ``img`` (image), ``label``; splits train/test);
  * a local ``save_to_disk`` DatasetDict (or a single saved Dataset, a folder of split files,
    a hub snapshot with ``data/train-*.parquet``; ``lrm.data.tables``) with the same schema;
    ``image_column`` / ``label_column`` name other columns (the hub's ``uoft-cs/cifar10`` has
    ``img``, other copies ``image``), ``hub_config`` picks a hub configuration;
  * ``""``: an offline synthetic stand-in (``ImageTask.generate``) saved with the same schema
    (``datasets.Image()`` + ``ClassLabel``): 32x32 RGB sine gratings whose class is one of 10
    orientations (0, 18, ..., 162 degrees) with random frequency, phase, colours and noise.
    It is NOT CIFAR-10; telling orientations apart needs pixels that lie rows (32+ positions)
    apart in the flattened sequence.

Splits as in LRA (``image/input_pipeline.py``): train = ``train[:90%]``, validation =
``train[90%:]`` (45k / 5k for CIFAR-10, in the order the source stores them, which for the hub
copy need not be TFDS's order), test = ``test`` (10k). A source with its own validation split
(the generated one) uses it as is.

Pixels: RGB -> gray exactly as ``tf.image.rgb_to_grayscale`` (used by LRA): float32 ``x/255``,
weights (0.2989, 0.5870, 0.1140), then ``uint8(y * 255.5)`` (truncating cast), row-major
flattening. The token id is the intensity itself; padding masks come from ``lengths`` (always
1024 here), never from ``id > 0`` (black pixels are 0).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from lrm.data import DataError
from lrm.data.tables import Table, checked_labels, open_splits, require_columns
from lrm.registry import register
from lrm.tasks.classify import Splits, TableTask

GENERATED_CLASSES = tuple(f"orientation_{18 * k:03d}deg" for k in range(10))
GRAY_WEIGHTS = np.asarray([0.2989, 0.5870, 0.1140], np.float32)


def lra_grayscale(rgb: np.ndarray) -> np.ndarray:
  """``[..., 3] uint8 -> [...] uint8``, reproducing ``tf.image.rgb_to_grayscale``."""
  x = rgb.astype(np.float32) * np.float32(1.0 / 255.0)
  y = (x * GRAY_WEIGHTS).sum(axis=-1, dtype=np.float32)
  return (y * np.float32(255.5)).astype(np.uint8)


def decode_images(table: Table, column: str, size: int) -> np.ndarray:
  """Every image of a split as ``[N, size, size, 3] uint8`` RGB; bad rows raise DataError."""
  import datasets
  from PIL import Image

  feature = table.rows.features.get(column)
  if not isinstance(feature, datasets.Image):
    raise DataError(f"{table.source}: column '{column}' is {feature!r}, expected an Image feature")
  raw = table.rows.cast_column(column, datasets.Image(decode=False))[column]
  out = np.empty((len(raw), size, size, 3), np.uint8)
  for i, item in enumerate(raw):
    try:
      src = io.BytesIO(item["bytes"]) if item.get("bytes") else item["path"]
      with Image.open(src) as im:
        arr = np.asarray(im.convert("RGB"))
    except Exception as e:  # PIL raises many types for corrupt files
      raise DataError(f"{table.where(i)}: unreadable image ({type(e).__name__}: {e})") from None
    if arr.shape != (size, size, 3):
      raise DataError(
        f"{table.where(i)}: image is {arr.shape[1]}x{arr.shape[0]}, expected {size}x{size}"
      )
    out[i] = arr
  return out


@register("task", "image")
class ImageTask(TableTask):
  """Sequential grayscale CIFAR-10 (LRA Image)."""

  num_classes = 10
  validation_fallback = "train_tail"
  DEFAULT_SIZES = {"num_train": 4_500, "num_val": 500, "num_test": 1_000}

  def __init__(
    self,
    *,
    path: str = "",
    image_size: int = 32,
    image_column: str = "img",
    label_column: str = "label",
    hub_config: str = "",
    seed: int = 0,
    num_train: int = DEFAULT_SIZES["num_train"],
    num_val: int = DEFAULT_SIZES["num_val"],
    num_test: int = DEFAULT_SIZES["num_test"],
  ):
    if image_size < 1:
      raise DataError(f"image: image_size must be at least 1, got {image_size}")
    self.image_size, self.image_column = image_size, image_column
    self.label_column, self.hub_config = label_column, hub_config
    sizes = {"num_train": num_train, "num_val": num_val, "num_test": num_test}
    gen = {"seed": seed, **sizes, "image_size": image_size}
    super().__init__(path=path, seq_len=image_size * image_size, gen_options=gen)

  @property
  def vocab_size(self) -> int:
    return 256

  def vocab(self) -> dict[str, Any]:
    return {
      "kind": "pixels",
      "size": 256,
      "rule": "id = grayscale intensity 0..255 (tf.image.rgb_to_grayscale), row-major",
      "image_size": self.image_size,
      "data": self._info,
    }

  def read(self, source: str) -> Splits:
    splits, classes = {}, None
    image, label = (self.image_column, self.label_column) if self.path else ("img", "label")
    for split, table in open_splits(source, what="image", hub_config=self.hub_config).items():
      require_columns(table, {image: "image_column", label: "label_column"})
      feature = table.rows.features.get(label)
      classes = getattr(feature, "names", None) or classes
      labels = checked_labels(table, self.num_classes, label)
      pixels = lra_grayscale(decode_images(table, image, self.image_size))
      n = len(labels)
      splits[split] = {
        "inputs": pixels.reshape(n, self.seq_len),  # [N, H*W] row-major
        "lengths": np.full(n, self.seq_len, np.int32),
        "label": labels,
      }
    self._info["classes"] = classes
    return splits

  # ---- offline generator ---------------------------------------------------------------------
  @classmethod
  def generate(cls, out: Path, *, seed: int = 0, image_size: int = 32, **sizes: int) -> list[Path]:
    """Save a DatasetDict (train/validation/test) of synthetic gratings to ``out`` (``sizes``
    as in ``generated_splits``)."""
    import datasets
    from PIL import Image

    feats = datasets.Features(
      {"img": datasets.Image(), "label": datasets.ClassLabel(names=list(GENERATED_CLASSES))}
    )
    splits = {}
    for split, n, rng in cls.generated_splits(seed, sizes):
      labels = rng.integers(10, size=n)
      imgs = [Image.fromarray(grating(rng, int(c), image_size)) for c in labels]
      splits[split] = datasets.Dataset.from_dict(
        {"img": imgs, "label": labels.tolist()}, features=feats
      )
    datasets.DatasetDict(splits).save_to_disk(str(out))
    return sorted(p for p in Path(out).rglob("*") if p.is_file())


def grating(rng: np.random.Generator, cls: int, size: int) -> np.ndarray:
  """A ``[size, size, 3] uint8`` sine grating at orientation ``cls * 18`` degrees."""
  theta = np.pi * cls / 10 + rng.normal(0.0, 0.03)
  freq = rng.uniform(2.0, 4.5)  # cycles per image
  phase = rng.uniform(0.0, 2 * np.pi)
  while True:  # two colours whose gray levels differ enough to keep the pattern after LRA's gray
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    if abs(float((c1 - c2) @ GRAY_WEIGHTS)) > 60:
      break
  yy, xx = np.mgrid[0:size, 0:size] / size  # [H, W]
  wave = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)
  img = c1 + (c2 - c1) * wave[..., None] + rng.normal(0.0, 12.0, (size, size, 3))  # [H, W, 3]
  return np.clip(np.rint(img), 0, 255).astype(np.uint8)
