"""What a config builds, in words: the per-layer table of ``scripts/train.py --dry_run``.

  print(describe(run))    # run = lrm.run.Run(config): task, data, layers, totals, schedule

Every number is analytic (``Mixer.flops``, ``Mixer.receptive_field``, parameter shapes of the
abstract model); nothing is compiled or run. ``impl`` is the kernel each layer will run on
this backend at the task's length and dtype (``Run.impls``). ``mixer_summary`` names a
model's mixers in one short string (``"conv+global"``), for titles and start lines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
from flax import nnx

from lrm.mixers.base import UNBOUNDED

OPTION_NAMES = {"kernel_size": "k", "window": "w", "num_heads": "heads", "block_size": "block"}


def mixer_summary(mixer: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> str:
  """``{"name": "local", ...}`` -> ``"local"``; a stack -> ``"conv+local+global"``."""
  specs = [mixer] if isinstance(mixer, Mapping) else list(mixer)
  return "+".join(str(s.get("name", "?")) for s in specs)


def _options(spec: Mapping[str, Any]) -> str:
  shown = [(OPTION_NAMES.get(k, k), v) for k, v in spec.items() if k != "name"]
  return " ".join(f"{k}={v}" for k, v in shown)


def _field(rf: tuple[int, int] | None) -> str:
  """Per-layer reach of output i: ``i-8..i+8``; None = every position, ``UNBOUNDED`` on the
  left = the whole past (a causal mixer without a bound)."""
  if rf is None:
    return "whole sequence"
  left, right = rf
  if left >= UNBOUNDED:
    return "whole past" + (f", i+{right}" if right else "")
  return f"i-{left}..i" + (f"+{right}" if right else "")


def _si(x: float) -> str:
  for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
    if abs(x) >= scale:
      return f"{x / scale:.1f}{unit}"
  return f"{x:.0f}"


def _params_under(model: nnx.Module) -> dict[tuple, int]:
  """Parameter count per path prefix: ``("encoder", "blocks", 0)`` -> n, etc."""
  out: dict[tuple, int] = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param)):
    keys = tuple(getattr(k, "key", getattr(k, "idx", None)) for k in path)
    for depth in range(1, 4):
      out[keys[:depth]] = out.get(keys[:depth], 0) + int(leaf.size)
  return out


def layer_rows(run: Any) -> list[tuple[str, ...]]:
  """``(layer, mixer, options, impl, params, FLOPs/token, receptive field)`` per block."""
  enc, length = run.model.encoder, run.task.seq_len
  counts = _params_under(run.model)
  specs = enc_specs(run.plain["model"]["mixer"], enc.depth)
  impls = run.impls() if hasattr(run, "impls") else [b.mixer.impl for b in enc.blocks]
  rows = []
  for i, (block, spec) in enumerate(zip(enc.blocks, specs, strict=True)):
    m = block.mixer
    flops = m.flops(length)
    if block.mlp is not None:
      flops += 2 * 2 * length * enc.dim * block.mlp.up.out_features
    rows.append(
      (
        str(i),
        m.mixer_name(),
        _options(spec),
        impls[i],
        f"{counts.get(('encoder', 'blocks', i), 0):,}",
        _si(flops / length),
        _field(m.receptive_field()),
      )
    )
  return rows


def enc_specs(mixer: Any, depth: int) -> list[dict]:
  from lrm.model import layer_specs

  return layer_specs(mixer, depth)


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> list[str]:
  widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
  right = {0, 4, 5}  # numbers
  fmt = lambda r: "  ".join(  # noqa: E731
    c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
  )
  return [fmt(header).rstrip(), *(fmt(r).rstrip() for r in rows)]


def describe(run: Any) -> str:
  """The task, the per-layer table with totals, and what training will do."""
  from lrm.tasks import SPLITS

  cfg, task, model = run.plain, run.task, run.model
  mc, tc, oc = cfg["model"], cfg["train"], cfg["optim"]
  costs, counts = run.costs(), _params_under(model)
  sizes = {s: len(task.dataset(s)) for s in SPLITS}
  lines = [
    f"task {cfg['task']}: sequence length {task.seq_len}, vocabulary {task.vocab_size}, "
    f"{'causal' if task.causal else 'bidirectional'}; examples: "
    + ", ".join(f"{s} {n:,}" for s, n in sizes.items()),
    f"model: width {mc['dim']}, depth {mc['depth']}, positions {mc.get('positions', 'learned')}"
    f", mixer {mixer_summary(mc['mixer'])}",
    "",
  ]
  header = ("layer", "mixer", "options", "impl", "params", "FLOPs/token", "receptive field")
  rows = layer_rows(run)
  enc = counts.get(("encoder",), 0)
  other = enc - sum(counts.get(("encoder", "blocks", i), 0) for i in range(len(rows)))
  head = costs["params"] - enc
  head_flops = costs["forward_flops_per_token"] - costs["encoder_forward_flops_per_token"]
  rows += [
    ("", "embedding", "token + position tables, final norm", "", f"{other:,}", "0", ""),
    ("", "head", type(model).__name__, "", f"{head:,}", _si(head_flops), ""),
  ]
  lines += _table(rows, header)
  steps, batch = int(tc["steps"]), int(tc["batch_size"])
  lines += [
    "",
    f"total: {costs['params']:,} parameters ({costs['params_non_embedding']:,} without token "
    f"and position tables); forward {_si(costs['forward_flops_per_token'])} FLOPs/token, "
    f"training {_si(costs['train_flops_per_token'])} FLOPs/token (analytic, at length "
    f"{task.seq_len}; params and FLOPs per layer include its norms and MLP)",
    f"training: {steps:,} steps of batch {batch} ({steps * batch / max(sizes['train'], 1):.1f} "
    f"epochs), validation every {tc['eval_every']} steps, lr {oc['lr']:g} {oc['schedule']} "
    f"with {oc['warmup_steps']} warm-up steps",
  ]
  return "\n".join(lines)
