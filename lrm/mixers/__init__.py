"""Token mixers: conv, local/global/random/BigBird attention, dynamic conv, involution.

Public API::

  lrm.mixers.names()                        # registered short names
  lrm.mixers.build({"name": "local", "window": 64, "num_heads": 4},
                   dim=128, causal=False, rngs=nnx.Rngs(0), layer_idx=0)

See ``lrm/mixers/base.py`` for the contract and the dimension legend. To add a mixer,
write one file with a class decorated ``@register("mixer", "<name>")`` that subclasses
``Mixer``, import it below, and it is picked up by the generic tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flax import nnx

from lrm import registry
from lrm.mixers.base import Mixer, param_count

# Importing the modules registers their mixers.
from lrm.mixers import attention as _attention  # noqa: F401,E402  isort: skip
from lrm.mixers import conv as _conv  # noqa: F401,E402  isort: skip
from lrm.mixers import dynamic as _dynamic  # noqa: F401,E402  isort: skip

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


__all__ = ["Mixer", "build", "check", "names", "param_count"]
