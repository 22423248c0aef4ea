"""Mixer presets: how each mixer is built for a given receptive field, by short name.

A preset turns the reach of one layer into a mixer spec::

  spec("conv", window=8, heads=4, block=16, causal=True)
  # {"name": "conv", "kernel_size": 9, "depthwise": True}

``window`` is the radius w of local attention (keys |i-j| <= w, or i-w <= j <= i when
causal); a windowed convolution gets kernel 2w+1 (centred) or w+1 (causal), i.e. the same
receptive field per layer. Presets whose pattern is set by blocks or by the whole sequence
(``windowed=False``) ignore ``window``; ``block`` is the block size of block-sparse patterns.

Attention presets use rotary positions (RoPE, Su et al. 2021) by default: a convolution's
taps are relative offsets, so it knows "three tokens back" whatever the absolute positions;
attention with only absolute position embeddings has to learn that from their dot products.
RoPE gives attention the same relative information, so neither family is handicapped.
``rotary=False`` is the ablation with the encoder's absolute positions only.

Presets joined with ``+`` form a hybrid stack: ``"conv+conv+global"`` gives a list of three
specs, which the encoder cycles over depth. Experiment configs, studies, benchmarks and the
generic mixer tests ask this registry; nothing outside ``lrm/mixers/`` (and the experiment
files that choose one) names a mixer.

A new mixer registers its presets next to its class::

  presets.register("my_mixer", lambda r: dict(name="my_mixer", kernel_size=r.kernel))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

HYBRID = "+"


@dataclass(frozen=True)
class Reach:
  """What a preset may use: the window radius w, heads, block size, causality and whether
  attention presets use rotary positions."""

  window: int
  heads: int
  block: int
  causal: bool
  rotary: bool = True

  @property
  def kernel(self) -> int:
    """Convolution kernel with the same per-layer field as local attention of radius w."""
    return self.window + 1 if self.causal else 2 * self.window + 1


@dataclass(frozen=True)
class Preset:
  name: str
  build: Callable[[Reach], dict]
  windowed: bool  # the receptive field follows ``window``


_PRESETS: dict[str, Preset] = {}


def register(name: str, build: Callable[[Reach], dict], *, windowed: bool = True) -> None:
  """Register ``build(reach) -> spec`` under ``name`` (a name may be registered once)."""
  if HYBRID in name or not name:
    raise ValueError(f"a preset name must be non-empty and cannot contain '{HYBRID}': {name!r}")
  if name in _PRESETS and _PRESETS[name].build is not build:
    raise KeyError(f"mixer preset '{name}' is already registered")
  _PRESETS[name] = Preset(name, build, windowed)


def unregister(name: str) -> None:
  """Remove a preset (for tests that register a throwaway one)."""
  _PRESETS.pop(name, None)


def names() -> list[str]:
  """Every registered preset name (hybrids are written by joining them with ``+``)."""
  return sorted(_PRESETS)


def parts(name: str) -> list[str]:
  """``"conv+conv+global"`` -> ``["conv", "conv", "global"]``, each a known preset."""
  out = [p.strip() for p in str(name).split(HYBRID)]
  for p in out:
    if p not in _PRESETS:
      raise ValueError(
        f"unknown mixer preset '{p}'"
        + (f" in '{name}'" if len(out) > 1 else "")
        + f"; known: {', '.join(names())} (join presets with '+' for a hybrid stack)"
      )
  return out


def is_hybrid(name: str) -> bool:
  return HYBRID in str(name)


def windowed(name: str) -> bool:
  """Whether the preset's (or any hybrid part's) receptive field follows ``window``."""
  return any(_PRESETS[p].windowed for p in parts(name))


def spec(
  name: str,
  *,
  window: int = 128,
  heads: int = 4,
  block: int = 64,
  causal: bool = False,
  rotary: bool = True,
) -> dict | list[dict]:
  """The mixer spec of preset ``name``; a list of specs for a hybrid ``a+b+c``."""
  reach = Reach(int(window), int(heads), int(block), bool(causal), bool(rotary))
  specs = [dict(_PRESETS[p].build(reach)) for p in parts(name)]
  return specs if is_hybrid(name) else specs[0]


def spec_list(name: str, **reach: int | bool) -> list[dict]:
  """Like ``spec`` but always a list (one spec per hybrid part)."""
  out = spec(name, **reach)
  return out if isinstance(out, list) else [out]


# ---- the built-in presets: one receptive field rule for every mixer -------------------------
register("conv", lambda r: dict(name="conv", kernel_size=r.kernel, depthwise=True))
register("conv_full", lambda r: dict(name="conv", kernel_size=r.kernel, depthwise=False))
register(
  "dynamic_conv", lambda r: dict(name="dynamic_conv", kernel_size=r.kernel, num_heads=r.heads)
)
register("involution", lambda r: dict(name="involution", kernel_size=r.kernel, num_heads=r.heads))
register("local", lambda r: dict(name="local", window=r.window, num_heads=r.heads, rotary=r.rotary))
register(
  "local_global",
  lambda r: dict(
    name="local",
    window=r.window,
    num_heads=r.heads,
    global_tokens=2,
    global_mode="summary",  # reaches everything (the whole past, causal) in one layer
    rotary=r.rotary,
  ),
)
register(
  "global", lambda r: dict(name="global", num_heads=r.heads, rotary=r.rotary), windowed=False
)
register(
  "random",
  lambda r: dict(
    name="random", block_size=r.block, num_random_blocks=3, num_heads=r.heads, rotary=r.rotary
  ),
  windowed=False,
)


def _bigbird(global_blocks: int) -> Callable[[Reach], dict]:
  def build(r: Reach) -> dict:
    return dict(
      name="bigbird",
      block_size=r.block,
      window_blocks=3,
      global_blocks=global_blocks,
      random_blocks=3,
      num_heads=r.heads,
      rotary=r.rotary,
    )

  return build


register("local_random", _bigbird(0), windowed=False)
register("bigbird", _bigbird(2), windowed=False)
