"""Token mixers: conv, gated conv, Hyena, local/global/random/BigBird attention, dynamic conv,
involution.

Public API::

  lrm.mixers.names()                        # registered short names
  lrm.mixers.build({"name": "local", "window": 64, "num_heads": 4},
                   dim=128, causal=False, rngs=nnx.Rngs(0), layer_idx=0)

  lrm.mixers.presets.spec("conv+conv+global", window=8, causal=True)   # presets by short name

See ``lrm/mixers/base.py`` for the contract and the dimension legend, and
``lrm/mixers/presets.py`` for presets (one receptive-field rule for every mixer, ``+`` for
hybrid stacks). To add a mixer, write one file in this folder with a class decorated
``@register("mixer", "<name>")`` that subclasses ``Mixer`` and call
``presets.register("<name>", ...)`` beside it; it is imported automatically and picked up by
configs, studies, benchmarks and the generic tests.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping, Sequence
from typing import Any

from flax import nnx

from lrm import registry
from lrm.mixers import presets
from lrm.mixers.base import DecodeError, Mixer, param_count


def _import_all() -> None:
  """Import every module of this package so that its ``@register`` decorators run."""
  for info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{info.name}")


_import_all()

SHARED = ("dim", "causal", "rngs", "layer_idx")


def names() -> list[str]:
  """The registered mixer names."""
  return registry.names("mixer")


def check(spec: Mapping[str, Any]) -> None:
  """Raise a clear error if ``spec`` names an unknown mixer or option."""
  registry.check_spec("mixer", spec, SHARED)


def build(
  spec: Mapping[str, Any], *, dim: int, causal: bool, rngs: nnx.Rngs, layer_idx: int = 0
) -> Mixer:
  """Build the mixer described by ``spec`` (``{"name": ..., **options}``)."""
  return registry.build("mixer", spec, dim=dim, causal=causal, rngs=rngs, layer_idx=layer_idx)


def seeded(
  mixer: Mapping[str, Any] | Sequence[Mapping[str, Any]], seed: int
) -> dict[str, Any] | list[dict[str, Any]]:
  """``model.mixer`` (one spec or a list) with ``seed`` set in every spec whose mixer takes a
  ``seed`` option (fixed random patterns: a function of this seed and the layer index) and
  does not set it already. ``lrm.run.Run`` fills the run's seed, so config.json records it."""

  def fill(spec: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(spec)
    try:
      cls = registry.lookup("mixer", out.get("name", ""))
    except KeyError:
      return out  # building names the known mixers
    if "seed" in registry.options(cls, SHARED):
      out.setdefault("seed", int(seed))
    return out

  return fill(mixer) if isinstance(mixer, Mapping) else [fill(s) for s in mixer]


__all__ = ["DecodeError", "Mixer", "build", "check", "names", "param_count", "presets", "seeded"]
