"""What the benchmark measures: labels -> mixer specs, the default labels, cells, ratio pairs.

A label is a preset of ``lrm.mixers.presets`` (the experiment configs' receptive-field rule:
window radius w, conv kernel 2w+1 or w+1 causal, blocks of ``block`` tokens) with optional
``:key=value`` overrides of its spec, e.g. ``local``, ``conv:impl=fft``, ``local:impl=dense``
or ``dpa_local`` (a baseline, ``benchmarks/baselines.py``). Presets joined with ``+`` are a
hybrid stack, each part with its own overrides: ``conv:impl=fft+global``. A named stack
(``presets.stacks()``, e.g. ``griffin``) is one label standing for its presets, alone or inside
a ``+``; it takes no overrides (write its layers to set one).

Nothing here names a mixer: the default labels and the ratio pairs are derived from the
registries (which presets exist, which mixer builds with ``impl="dense"``, which preset a
baseline stands beside).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from flax import nnx

from benchmarks import baselines  # noqa: F401  (registers the baselines)
from lrm import mixers, registry, tasks
from lrm.study import load_module
from lrm.train import rundir

ROOT = Path(__file__).resolve().parents[1]
MODES = ("fwd", "fwdbwd")
DTYPES = ("float32", "bfloat16")
DENSE = "dense"  # lrm's convention: every efficient kernel has an impl="dense" oracle
# The LRA ListOps setting (Tay et al. 2021, "Long Range Arena"): 4 layers, width 512, 8 heads.
TRAIN_CONFIG = "experiments/listops.py:size=full"
Spec = dict[str, Any]


def _value(text: str) -> Any:
  """Option value: int, float, true/false, else the string itself."""
  for cast in (int, float):
    try:
      return cast(text)
    except ValueError:
      pass
  return {"true": True, "false": False}.get(text.lower(), text)


def split_label(label: str) -> list[tuple[str, dict[str, Any]]]:
  """``"conv:impl=fft+global"`` -> ``[("conv", {"impl": "fft"}), ("global", {})]``; a named
  stack is its presets (``"griffin"`` -> ``rglru``, ``rglru``, ``local``, each with ``{}``)."""
  out = []
  for part in str(label).split(mixers.presets.HYBRID):
    name, *opts = part.strip().split(":")
    overrides = {}
    for opt in opts:
      key, sep, value = opt.partition("=")
      if not sep or not key:
        raise ValueError(f"bad mixer option '{opt}' in '{label}'; write preset:key=value[:...]")
      overrides[key] = _value(value)
    names = mixers.presets.parts(name)  # a one-line error listing the presets and stacks
    if overrides and len(names) > 1:  # which layer would an option set?
      written = mixers.presets.HYBRID.join(f"{n}:{':'.join(opts)}" for n in names)
      raise ValueError(
        f"'{name}' in '{label}' is a stack of {len(names)} layers, so ':{':'.join(opts)}' is "
        f"ambiguous; write its layers, e.g. {written}"
      )
    out += [(n, overrides) for n in names]
  return out


def parse_label(
  label: str, *, window: int, heads: int, block: int = 64, causal: bool = False
) -> list[Spec]:
  """One validated mixer spec per hybrid part of ``label`` at the given reach."""
  reach = dict(window=window, heads=heads, block=block, causal=causal)
  specs = [mixers.presets.spec(name, **reach) | opts for name, opts in split_label(label)]
  for spec in specs:
    mixers.check(spec)
  return specs


def record_spec(specs: Sequence[Spec]) -> Spec | list[Spec]:
  """What a record stores: one spec dict, or the list of a hybrid stack."""
  return dict(specs[0]) if len(specs) == 1 else [dict(s) for s in specs]


def spec_list(spec: Spec | Sequence[Spec]) -> list[Spec]:
  return [spec] if isinstance(spec, Mapping) else list(spec)


def baseline_of(spec: Spec | Sequence[Spec]) -> str | None:
  """The preset a baseline mixer stands beside (None: not a single baseline, or unknown)."""
  specs = spec_list(spec)
  if len(specs) != 1:
    return None
  try:
    cls = registry.lookup("mixer", specs[0].get("name", ""))
  except KeyError:
    return None
  return getattr(cls, "baseline_of", None) or None


def is_dense(spec: Spec | Sequence[Spec]) -> bool:
  return any(s.get("impl") == DENSE for s in spec_list(spec))


def _without_impl(spec: Spec | Sequence[Spec]) -> list[Spec]:
  return [{k: v for k, v in s.items() if k != "impl"} for s in spec_list(spec)]


def has_dense(spec: Spec, dim: int) -> bool:
  """Whether the mixer of ``spec`` builds with ``impl="dense"`` (asked of the class itself;
  ``nnx.eval_shape`` runs its constructor's checks without computing anything)."""
  cls = registry.lookup("mixer", spec["name"])
  if "impl" not in registry.options(cls, mixers.SHARED):
    return False
  dense = dict(spec) | {"impl": DENSE}
  try:
    nnx.eval_shape(lambda: mixers.build(dense, dim=dim, causal=False, rngs=nnx.Rngs(0)))
  except ValueError:
    return False
  return True


def default_labels(*, dim: int, heads: int, window: int, block: int = 64) -> list[str]:
  """Every preset; ``<preset>:impl=dense`` for each mixer with a dense oracle (its first
  preset); then every registered baseline."""
  reach = dict(window=window, heads=heads, block=block)
  plain, dense, base, seen = [], [], [], set()
  for name in mixers.presets.names():
    spec = mixers.presets.spec(name, **reach)
    if baseline_of(spec):
      base.append(name)
      continue
    plain.append(name)
    if spec["name"] not in seen and has_dense(spec, dim):
      seen.add(spec["name"])
      dense.append(f"{name}:impl={DENSE}")
  return plain + dense + base


def pairs(
  specs: Mapping[str, Spec | Sequence[Spec]], reference: Sequence[str] = ()
) -> list[tuple[str, str]]:
  """``(a, b)`` label pairs whose speed and memory ratios are worth printing.

  ``specs`` maps each label to its spec (or hybrid list), in label order. Derived:
  * ``X`` vs ``X:impl=dense``: a kernel against its dense oracle (same spec but ``impl``);
  * ``P`` vs ``B``: a baseline against the preset it is a baseline of;
  * each windowed label vs each ``reference`` label, or, without one, every two windowed
    presets given by name (labels with options would multiply the pairs).
  """
  labels = list(specs)
  out: list[tuple[str, str]] = []
  for d in labels:
    if not is_dense(specs[d]):
      continue
    same = [x for x in labels if x != d and not is_dense(specs[x])]
    same = [x for x in same if _without_impl(specs[x]) == _without_impl(specs[d])]
    plain = [x for x in same if not any("impl" in s for s in spec_list(specs[x]))]
    if same:
      out.append(((plain or same)[0], d))
  for b in labels:
    target = baseline_of(specs[b])
    if target in specs:
      out.append((target, b))
  windowed = [x for x in labels if _windowed(x, specs[x])]
  if reference:
    out += [(x, r) for r in reference if r in specs for x in windowed if x != r]
  else:
    named = [x for x in windowed if x in mixers.presets.names()]
    out += list(itertools.combinations(named, 2))
  return list(dict.fromkeys(out))


def _windowed(label: str, spec: Spec | Sequence[Spec]) -> bool:
  """A label whose reach follows the window: not a dense oracle, not a baseline."""
  if is_dense(spec) or baseline_of(spec):
    return False
  try:
    return mixers.presets.windowed(mixers.presets.HYBRID.join(n for n, _ in split_label(label)))
  except ValueError:  # a label of an old record whose preset no longer exists
    return False


# ---- cells ------------------------------------------------------------------------------------


def mixer_cells(
  labels: Iterable[str],
  lengths: Sequence[int],
  *,
  dim: int,
  heads: int,
  window: int,
  batch: int = 1,
  mode: str = "fwdbwd",
  dtype: str = "float32",
  block: int = 64,
  causal: bool = False,
  repeats: int = 5,
  warmup: int = 1,
) -> list[dict]:
  """One cell per (label, length), lengths ascending within each label."""
  if mode not in MODES:
    raise ValueError(f"unknown mode '{mode}'; choose one of {', '.join(MODES)}")
  if not lengths or min(lengths) < 1:
    raise ValueError(f"lengths must be positive integers, got {list(lengths)}")
  common = dict(kind="mixer", dim=dim, heads=heads, window=window, batch=batch, mode=mode)
  common |= dict(dtype=dtype, causal=causal, repeats=repeats, warmup=warmup)
  cells = []
  for label in labels:
    specs = parse_label(label, window=window, heads=heads, block=block, causal=causal)
    spec = record_spec(specs)
    cells += [common | {"mixer": label, "spec": spec, "length": L} for L in sorted(lengths)]
  return cells


def load_config(arg: str) -> Any:
  """``path.py[:variant]`` -> the experiment's ConfigDict (a relative path may be relative to
  the repository root)."""
  path, _, variant = arg.partition(":")
  file = Path(path)
  if not file.is_file() and (ROOT / path).is_file():
    file = ROOT / path
  module = load_module(file)
  if not hasattr(module, "get_config"):
    raise ValueError(f"{file} defines no get_config(arg); give an experiment config file")
  return module.get_config(variant or None)


def train_config(
  label: str, *, config_arg: str, window: int, batch: int, dtype: str, length: int = 0
) -> dict:
  """The experiment config of ``config_arg`` with ``label``'s mixer (the experiment's own
  preset call: its heads and blocks, window ``window``), batch size, dtype and, if
  ``length``, its data's ``max_len``; as a plain dict, what the trainer would run."""
  parts = split_label(label)
  path, _, variant = config_arg.partition(":")
  mixer = "+".join(name for name, _ in parts)
  variant = ",".join(filter(None, [variant, f"mixer={mixer}", f"window={window}"]))
  cfg = rundir.config_to_dict(load_config(f"{path}:{variant}"))
  if any(opts for _, opts in parts):  # options apply to the specs the presets became
    specs = spec_list(cfg["model"]["mixer"])
    if len(specs) != len(parts):
      raise ValueError(
        f"{config_arg} builds {len(specs)} mixer specs from the {len(parts)} presets of "
        f"'{label}', so its :key=value options cannot be placed; drop them"
      )
    specs = [s | opts for s, (_, opts) in zip(specs, parts, strict=True)]
    for spec in specs:
      mixers.check(spec)
    cfg["model"]["mixer"] = record_spec(specs)
  cfg["train"] |= dict(batch_size=batch, dtype=dtype)
  if length:
    if "max_len" not in cfg["data"]:
      raise ValueError(f"{config_arg}: data has no max_len to set; drop --train_length")
    cfg["data"]["max_len"] = length
    if "min_len" in cfg["data"]:  # generators need min_len < length < max_len to be possible
      cfg["data"]["min_len"] = min(cfg["data"]["min_len"], length // 2)
  return cfg


def train_cells(
  labels: Iterable[str],
  *,
  window: int,
  batch: int,
  config_arg: str = TRAIN_CONFIG,
  length: int = 0,
  dtype: str = "float32",
  repeats: int = 5,
  warmup: int = 1,
) -> list[dict]:
  """One cell per label: a step of lrm's trainer on the experiment's model with that mixer."""
  cells = []
  for label in labels:
    cfg = train_config(
      label, config_arg=config_arg, window=window, batch=batch, dtype=dtype, length=length
    )
    m, specs = cfg["model"], spec_list(cfg["model"]["mixer"])
    task = tasks.build({"name": cfg["task"], **cfg["data"]})  # cheap: setup() loads data
    heads = [s["num_heads"] for s in specs if "num_heads" in s]
    cells.append(
      dict(kind="train", mode="train", mixer=label, spec=cfg["model"]["mixer"], config=cfg)
      | dict(config_arg=config_arg, length=task.seq_len, batch=batch, dtype=dtype)
      | dict(dim=m["dim"], depth=m["depth"], heads=max(heads, default=None), window=window)
      | dict(mlp_ratio=m.get("mlp_ratio"), dropout=m.get("dropout"), pool=m.get("pool"))
      | dict(repeats=repeats, warmup=warmup)
    )
  return cells
