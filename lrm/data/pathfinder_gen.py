"""Pathfinder-style images (Linsley et al. 2018; LRA's Pathfinder and Path-X), made offline.

An image shows dashed curves (chains of short "paddles" with gaps) in white on black. Two
curve ends carry markers (filled discs). Label 1: the markers sit on the two ends of one
curve; label 0: on one end each of two different curves. Every image is drawn the same way
up to the markers (two target curves of ``contour_length`` paddles plus shorter distractor
curves, as in the release: distractors of ``contour_length // 3`` paddles, ``budget //
that`` of them), so only the markers' placement depends on the label.

Correct by construction: consecutive pixels of one curve (across a dash gap too) are at
Chebyshev distance <= ``link = floor(gap) + 1``, and every pixel of another curve, with its
reserved marker discs, is kept more than ``link`` away. Linking pixels within ``link`` of
each other therefore joins exactly each curve with its own markers; the tests check the
label this way on the written PNGs.

Files follow the release layout: ``pathfinder{32,128}/<difficulty>/imgs/<k>/sample_<i>.png``
(grayscale PNG, 1000 per folder) and ``metadata/<k>.npy``, a TEXT file (despite the name)
with one line per image: ``imgs/<k> sample_<i>.png <i> <label> <contour_length>
<distractor_length> <paddle_length> <gap> <thickness> <marker_radius> <distractors>``.
Image ``j`` is drawn from ``np.random.default_rng([seed, size, contour_length, j])``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

DIFFICULTIES = {"curv_baseline": 6, "curv_contour_length_9": 9, "curv_contour_length_14": 14}
IMAGES_PER_FOLDER = 1000
INK = 255
PAD = 1  # blank border, like the release's ``padding=1``
SEARCH = (4, 2, 1, 1)  # placement rounds: the search shrunk by these factors
IMAGE_TRIES = 1000  # fresh canvases before render gives up (a few are needed at 32 px)


@dataclass(frozen=True)
class Style:
  """Drawing parameters for one image size (pixels; angles in radians)."""

  size: int
  paddle_len: float
  gap: float
  thickness: int
  marker_radius: float
  max_turn: float  # largest change of direction between consecutive paddles
  distractor_budget: int  # distractors = budget // distractor length (release docstrings)
  shapes: int  # random shapes per placement round (Canvas.place)
  offsets: int  # random positions per shape and round

  @property
  def link(self) -> int:
    """Largest Chebyshev distance between consecutive pixels of one curve."""
    return int(self.gap) + 1


# 32 px after LRA's pathfinder32 (paddle 2, margin 1, marker radius 1.5, ~1 px lines, 20 //
# length distractors), with paddle 1.5 + gap 1.5 so that the gaps show and two 14-paddle targets
# still fit with their clearance; 128 px after pathfinder128 (paddle margin 2-3, thickness 1.5,
# marker radius 3, 35 // length distractors).
STYLES = {
  32: Style(32, paddle_len=1.5, gap=1.5, thickness=1, marker_radius=1.5, max_turn=1.0,
            distractor_budget=20, shapes=16, offsets=32),
  128: Style(128, paddle_len=5.0, gap=2.5, thickness=2, marker_radius=3.0, max_turn=0.45,
             distractor_budget=35, shapes=4, offsets=8),
}  # fmt: skip


def _offsets(radius: int, disc: float | None = None) -> np.ndarray:
  """``[K, 2]`` integer offsets in a square of ``radius`` (or within a Euclidean disc)."""
  r = np.arange(-radius, radius + 1)
  off = np.stack(np.meshgrid(r, r, indexing="ij"), -1).reshape(-1, 2)  # [K, 2]
  return off if disc is None else off[(off**2).sum(1) <= disc**2]


class Canvas:
  """Places non-touching curves on a ``size x size`` grid; pixels are (row, col) pairs."""

  def __init__(self, style: Style):
    s = self.style = style
    # ``blocked`` marks cells within ``link`` of a placed curve (or its marker discs); it has
    # a margin of ``link`` cells around the grid so halos need no clipping.
    self.blocked = np.zeros((s.size + 2 * s.link,) * 2, bool)
    self.curves: list[np.ndarray] = []  # [K, 2] pixels of each placed curve
    self._thick = np.indices((s.thickness, s.thickness)).reshape(2, -1).T  # [t*t, 2]
    self._disc = _offsets(int(np.ceil(s.marker_radius)), s.marker_radius)
    halo = _offsets(s.link)  # [H, 2]
    self._halo_flat = halo[:, 0] * len(self.blocked) + halo[:, 1]  # [H]
    n = int(round(2 * s.paddle_len))
    self._t = np.linspace(0.0, s.paddle_len, n + 1)  # samples <= 0.5 px apart along a paddle

  def disc(self, centre: np.ndarray) -> np.ndarray:
    return centre + self._disc  # [K, 2]

  def shapes(self, rng: np.random.Generator, paddles: int, n: int) -> tuple:
    """``n`` random curves: pixels ``[n, K, 2]`` and end pixels ``[n, 2, 2]``, local coords.

    Paddle i points along ``theta_i``; each turn is uniform in ``+-max_turn``.
    """
    s = self.style
    turns = rng.uniform(-s.max_turn, s.max_turn, (n, paddles))
    theta = rng.uniform(0, 2 * np.pi, (n, 1)) + np.cumsum(turns, 1)  # [n, P]
    d = np.stack([np.sin(theta), np.cos(theta)], -1)  # [n, P, 2] unit (row, col) directions
    hops = d * (s.paddle_len + s.gap)  # [n, P, 2] from one paddle's start to the next
    starts = rng.uniform(0, 1, (n, 1, 2)) + np.cumsum(hops, 1) - hops  # [n, P, 2]
    pts = starts[:, :, None] + self._t[:, None] * d[:, :, None]  # [n, P, T, 2]
    anchors = np.floor(pts).astype(np.int32).reshape(n, -1, 2)  # [n, P*T, 2]
    pix = (anchors[:, :, None] + self._thick).reshape(n, -1, 2)  # [n, K, 2]
    return pix, anchors[:, [0, -1]]

  def place(self, rng: np.random.Generator, paddles: int, with_markers: bool) -> np.ndarray | None:
    """Put one curve of ``paddles`` dashes where it keeps clear of the others.

    Each round draws random shapes and, for each, random positions where it fits in the
    image, and takes the first free one; rounds grow up to ``style.shapes x style.offsets``
    (most curves fit in the first, small one). Returns the end pixels ``[2, 2]`` (their
    marker discs are reserved if ``with_markers``), or None.
    """
    s, width = self.style, len(self.blocked)
    flat = self.blocked.reshape(-1)  # a view: cells are addressed as row * width + col
    for frac in SEARCH:
      n, m = max(s.shapes // frac, 1), max(s.offsets // frac, 1)
      pix, ends = self.shapes(rng, paddles, n)  # [n, K, 2], [n, 2, 2]
      footprint, ok = pix, np.ones(n, bool)
      if with_markers:  # reserve the discs; markers closer than this would be one blob
        ok = np.abs(ends[:, 0] - ends[:, 1]).max(-1) > 2 * np.ceil(s.marker_radius) + 1
        discs = (ends[:, :, None] + self._disc).reshape(n, -1, 2)  # [n, 2*D, 2]
        footprint = np.concatenate([pix, discs], 1)  # [n, K', 2]
      low = footprint.min(1)  # [n, 2]
      room = s.size - 2 * PAD - (footprint.max(1) - low)  # [n, 2] positions per axis
      ok &= (room > 0).all(-1)
      shifts = PAD - low[:, None] + rng.integers(0, np.maximum(room, 1)[:, None], (n, m, 2))
      local = footprint[..., 0] * width + footprint[..., 1]  # [n, K']
      moves = (shifts[..., 0] + s.link) * width + shifts[..., 1] + s.link  # [n, M]
      cells = np.minimum(local[:, None] + moves[..., None], flat.size - 1)  # [n, M, K']
      free = ~flat[cells].any(-1) & ok[:, None]  # [n, M]; shapes that do not fit are not ok
      hits = np.flatnonzero(free)
      if len(hits):
        i, j = divmod(int(hits[0]), m)
        flat[(cells[i, j][:, None] + self._halo_flat).reshape(-1)] = True
        self.curves.append(pix[i] + shifts[i, j])
        return ends[i] + shifts[i, j]
    return None

  def image(self, markers: list[np.ndarray]) -> np.ndarray:
    img = np.zeros((self.style.size,) * 2, np.uint8)  # [S, S]
    for px in [*self.curves, *(self.disc(m) for m in markers)]:
      img[px[:, 0], px[:, 1]] = INK
    return img


def render(rng: np.random.Generator, style: Style, contour_length: int, label: int) -> tuple:
  """One image ``[S, S]`` uint8 with ``label`` (1 = markers on one curve), and the number of
  distractor curves drawn."""
  distractor_len = max(contour_length // 3, 1)
  wanted = style.distractor_budget // distractor_len
  for _ in range(IMAGE_TRIES):
    canvas = Canvas(style)
    a = canvas.place(rng, contour_length, with_markers=True)
    b = canvas.place(rng, contour_length, with_markers=True) if a is not None else None
    if b is None:
      continue  # no room for the second target: start the image again
    drawn = sum(canvas.place(rng, distractor_len, False) is not None for _ in range(wanted))
    if label:
      markers = [a[0], a[1]]
    else:
      markers = [a[rng.integers(2)], b[rng.integers(2)]]
    return canvas.image(markers), drawn
  raise RuntimeError(f"two curves of {contour_length} paddles do not fit in {style}")


def write_dataset(
  out: Path, *, size: int, difficulty: str, num_images: int, seed: int
) -> list[Path]:
  """Write ``num_images`` images (labels 0/1 with equal chance) in the release layout under
  ``out/pathfinder<size>/<difficulty>``; return the metadata files."""
  if size not in STYLES:
    raise ValueError(f"no Pathfinder style for {size} px; choose one of {sorted(STYLES)}")
  if difficulty not in DIFFICULTIES:
    raise ValueError(f"unknown difficulty '{difficulty}'; choose one of {', '.join(DIFFICULTIES)}")
  style, length = STYLES[size], DIFFICULTIES[difficulty]
  root = Path(out) / f"pathfinder{size}" / difficulty
  (root / "metadata").mkdir(parents=True, exist_ok=True)
  files = []
  for k in range(-(-num_images // IMAGES_PER_FOLDER)):
    folder = root / "imgs" / str(k)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(min(IMAGES_PER_FOLDER, num_images - k * IMAGES_PER_FOLDER)):
      rng = np.random.default_rng([seed, size, length, k * IMAGES_PER_FOLDER + i])
      label = int(rng.integers(2))
      img, drawn = render(rng, style, length, label)
      Image.fromarray(img).save(folder / f"sample_{i}.png", format="PNG")
      lines.append(
        f"imgs/{k} sample_{i}.png {i} {label} {length} {max(length // 3, 1)} "
        f"{style.paddle_len:g} {style.gap:g} {style.thickness} {style.marker_radius:g} {drawn}\n"
      )
    files.append(root / "metadata" / f"{k}.npy")
    files[-1].write_text("".join(lines))
  return files
