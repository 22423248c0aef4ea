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
specs, which the encoder cycles over depth. A named stack is such a list under one name, for a
design of the field (``griffin`` = ``rglru+rglru+local``, registered beside ``rglru``); it
expands wherever a preset may stand, also inside a ``+`` (``"griffin+global"``). Experiment
configs, studies, benchmarks and the generic mixer tests ask this registry; nothing outside
``lrm/mixers/`` (and the experiment files that choose one) names a mixer.

A new mixer registers its presets next to its class::

  presets.register("my_mixer", lambda r: dict(name="my_mixer", kernel_size=r.kernel))
  presets.register_stack("my_design", ("my_mixer", "my_mixer", "local"))
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
_STACKS: dict[str, tuple[str, ...]] = {}  # named stacks: name -> its presets, bottom first


def _check_name(name: str, kind: str) -> None:
  if HYBRID in name or not name:
    raise ValueError(f"a {kind} name must be non-empty and cannot contain '{HYBRID}': {name!r}")


def register(name: str, build: Callable[[Reach], dict], *, windowed: bool = True) -> None:
  """Register ``build(reach) -> spec`` under ``name`` (a name may be registered once)."""
  _check_name(name, "preset")
  if name in _STACKS or (name in _PRESETS and _PRESETS[name].build is not build):
    raise KeyError(f"mixer preset '{name}' is already registered")
  _PRESETS[name] = Preset(name, build, windowed)


def register_stack(name: str, layers: tuple[str, ...]) -> None:
  """Register a named stack: ``name`` stands for the presets ``layers`` joined with ``+``."""
  _check_name(name, "stack")
  layers = tuple(layers)
  if name in _PRESETS or (name in _STACKS and _STACKS[name] != layers):
    raise KeyError(f"mixer preset '{name}' is already registered")
  unknown = [p for p in layers if p not in _PRESETS]
  if len(layers) < 2 or unknown:
    raise ValueError(
      f"stack '{name}' needs two or more registered presets, got {list(layers)}"
      + (f" (unknown: {', '.join(unknown)})" if unknown else "")
    )
  _STACKS[name] = layers


def unregister(name: str) -> None:
  """Remove a preset or a named stack (for tests that register a throwaway one)."""
  _PRESETS.pop(name, None)
  _STACKS.pop(name, None)


def names() -> list[str]:
  """Every registered single-mixer preset (hybrids are written by joining them with ``+``)."""
  return sorted(_PRESETS)


def stacks() -> dict[str, str]:
  """Every named stack, with what it stands for: ``{"griffin": "rglru+rglru+local", ...}``."""
  return {name: HYBRID.join(layers) for name, layers in sorted(_STACKS.items())}


def parts(name: str) -> list[str]:
  """``"conv+conv+global"`` -> ``["conv", "conv", "global"]``, each a known preset; a named
  stack expands to its presets (``"griffin+global"`` -> ``rglru, rglru, local, global``)."""
  given = [p.strip() for p in str(name).split(HYBRID)]
  out = []
  for p in given:
    if p in _STACKS:
      out.extend(_STACKS[p])
    elif p in _PRESETS:
      out.append(p)
    else:
      raise ValueError(
        f"unknown mixer preset '{p}'"
        + (f" in '{name}'" if len(given) > 1 else "")
        + f"; known: {', '.join(names())}; stacks: {', '.join(stacks()) or 'none'} "
        "(join presets with '+' for a hybrid stack)"
      )
  return out


def is_hybrid(name: str) -> bool:
  """Whether ``name`` stands for several layers (a ``+`` hybrid or a named stack)."""
  return HYBRID in str(name) or str(name).strip() in _STACKS


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
  """The mixer spec of preset ``name``; a list of specs for a hybrid ``a+b+c`` or a stack."""
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
