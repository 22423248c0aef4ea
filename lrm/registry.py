"""A tiny registry: short names -> classes, chosen from plain config data.

Kinds used in lrm: ``"mixer"``, ``"task"``. Specs are plain dicts with a ``name`` key and
the constructor's options; shared arguments (``dim``, ``causal``, ``rngs`` ...) are supplied
by the caller and never written in configs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

_REGISTRY: dict[str, dict[str, Callable[..., Any]]] = {}


def register(kind: str, name: str) -> Callable[[Any], Any]:
  """Class decorator: ``@register("mixer", "local")``."""

  def deco(obj: Any) -> Any:
    table = _REGISTRY.setdefault(kind, {})
    if name in table and table[name] is not obj:
      raise KeyError(f"{kind} '{name}' is already registered by {table[name].__qualname__}")
    table[name] = obj
    obj.registered_name = name
    return obj

  return deco


def unregister(kind: str, name: str) -> None:
  """Remove a name (for tests that register a throwaway class)."""
  _REGISTRY.get(kind, {}).pop(name, None)


def names(kind: str) -> list[str]:
  return sorted(_REGISTRY.get(kind, {}))


def lookup(kind: str, name: str) -> Any:
  try:
    return _REGISTRY[kind][name]
  except KeyError:
    raise KeyError(f"unknown {kind} '{name}'; known {kind}s: {', '.join(names(kind))}") from None


def options(cls: Any, shared: Mapping[str, Any] = ()) -> list[str]:
  """The keyword options a registered class accepts from a spec (shared args excluded)."""
  sig = inspect.signature(cls.__init__)
  skip = {"self", *shared}
  return [
    p.name
    for p in sig.parameters.values()
    if p.name not in skip and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
  ]


def check_spec(kind: str, spec: Mapping[str, Any], shared: Mapping[str, Any] = ()) -> Any:
  """Validate a spec's name and options; return the registered class."""
  if not isinstance(spec, Mapping) or "name" not in spec:
    raise ValueError(f"a {kind} spec must be a dict with a 'name' key, got {spec!r}")
  cls = lookup(kind, spec["name"])
  known = options(cls, shared)
  unknown = sorted(set(spec) - {"name"} - set(known))
  if unknown:
    raise ValueError(
      f"unknown option(s) {unknown} for {kind} '{spec['name']}'; known options: {', '.join(known)}"
    )
  return cls


def build(kind: str, spec: Mapping[str, Any], **shared: Any) -> Any:
  """Build ``spec`` (``{"name": ..., **options}``) with the shared keyword arguments."""
  cls = check_spec(kind, spec, shared)
  opts = {k: v for k, v in dict(spec).items() if k != "name"}
  return cls(**shared, **opts)
