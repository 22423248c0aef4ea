"""Token mixers: conv, gated conv, Hyena, local/global/random/BigBird attention, dynamic conv,
involution, and local attention's recurrent partners: RG-LRU (Griffin), Mamba-2's SSD and
Based's linear attention.

Public API::

  lrm.mixers.names()                        # registered short names
  lrm.mixers.build({"name": "local", "window": 64, "num_heads": 4},
                   dim=128, causal=False, rngs=nnx.Rngs(0), layer_idx=0)

  lrm.mixers.presets.spec("conv+conv+global", window=8, causal=True)   # presets by short name

  with lrm.mixers.for_platform("tpu"):      # trace for another platform (kernels follow it)
    jax.jit(f).trace(x).lower(lowering_platforms=("tpu",))

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
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from flax import nnx

from lrm import registry
from lrm.mixers import presets
from lrm.mixers.base import DecodeError, Mixer, Target, for_platform, impl_of, param_count, target


def _import_all() -> None:
  """Import every module of this package so that its ``@register`` decorators run."""
  for info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{info.name}")


_import_all()

# Modules merged into the file of their concept (one-line deprecation aliases): the old name
# still imports, with a warning naming the new place.
MOVED = {
  "attention_cache": "attention",
  "block_core": "attention",
  "blocked": "attention",
  "dispatch": "attention",
  "summary": "local",
  "local_cache": "local",
  "sparse_cache": "sparse",
  "conv_kernels": "conv",
  "conv_fft": "conv",
  "hyena_cache": "hyena",
  "dynamic_kernels": "dynamic",
}


def __getattr__(name: str):
  if name in MOVED:
    new = f"{__name__}.{MOVED[name]}"
    warnings.warn(f"{__name__}.{name} moved to {new}", DeprecationWarning, stacklevel=2)
    return importlib.import_module(new)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


def with_run_options(
  mixer: Mapping[str, Any] | Sequence[Mapping[str, Any]], *, seed: int, rotary: bool
) -> dict[str, Any] | list[dict[str, Any]]:
  """``model.mixer`` (one spec or a list) with the run-level options written in explicitly.

  A mixer class declares them in ``Mixer.RUN_OPTIONS``: ``"seed"`` (fixed random patterns, a
  function of the run's seed and the layer index) and ``"rotary"`` (set when
  ``model.positions == "rotary"``). A spec that sets an option already keeps its value.
  ``lrm.config.complete`` (the command line, ``--print_config``) and ``lrm.run.Run`` (every
  run, so config.json records it) call this; the encoder builds exactly the specs it gets.
  """
  values = {"seed": int(seed), "rotary": True}

  def fill(spec: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(spec)
    try:
      cls = registry.lookup("mixer", out.get("name", ""))
    except KeyError:
      return out  # building names the known mixers
    for option in cls.RUN_OPTIONS:
      if option == "seed" or (option == "rotary" and rotary):
        out.setdefault(option, values[option])
    return out

  return fill(mixer) if isinstance(mixer, Mapping) else [fill(s) for s in mixer]


def seeded(
  mixer: Mapping[str, Any] | Sequence[Mapping[str, Any]], seed: int
) -> dict[str, Any] | list[dict[str, Any]]:
  """Deprecated: ``with_run_options(mixer, seed=seed, rotary=False)``."""
  return with_run_options(mixer, seed=seed, rotary=False)


__all__ = [
  "DecodeError",
  "Mixer",
  "Target",
  "build",
  "check",
  "for_platform",
  "impl_of",
  "names",
  "param_count",
  "presets",
  "seeded",
  "target",
  "with_run_options",
]
