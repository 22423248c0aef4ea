"""Measured seconds -> dollars at a price per machine-hour (no JAX: reports import it).

The price is an input, never a measurement: every table that shows dollars states the price
and the machine it assumes (``Price.statement``). The default is an assumption about the
machine lrm's CPU numbers were measured on, a 2-vCPU x86 cloud VM, at $0.10 per hour: about
the on-demand list price of such VMs (e.g. AWS m5.large, GCP n2-standard-2, both about
$0.096-0.097/h in US regions). Its real price is unknown; pass ``--price_per_hour`` (and
``--machine``) to price another machine, e.g. a GPU at its hourly rate with times measured on
it.

Training: a step of ``tokens_per_step`` tokens (batch x sequence length) that takes ``step_s``
seconds costs ``price * step_s / 3600``, i.e. ``price * step_s / 3600 / tokens_per_step`` per
token. Inference by decoding: one decode step generates one token for each of the ``batch``
sequences, so a token costs ``price * step_s / 3600 / batch``, at the context length the
step was measured at (decoding cost per token grows with the context for full attention).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PRICE_PER_HOUR = 0.10
DEFAULT_MACHINE = "a 2-vCPU x86 cloud VM (assumed on-demand price, not a bill)"
MILLION = 1_000_000
SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class Price:
  """A price per machine-hour and the machine it is for."""

  per_hour: float = DEFAULT_PRICE_PER_HOUR
  machine: str = DEFAULT_MACHINE

  def __post_init__(self) -> None:
    if not self.per_hour > 0:
      raise ValueError(f"price per hour must be > 0 dollars, got {self.per_hour!r}")

  @property
  def per_second(self) -> float:
    return self.per_hour / SECONDS_PER_HOUR

  def statement(self) -> str:
    """One line for a table's caption: the price and the machine it assumes."""
    return f"${self.per_hour:.4g} per hour for {self.machine}"


def dollars(seconds: float, price: Price) -> float:
  """The cost of ``seconds`` of the machine."""
  if seconds < 0:
    raise ValueError(f"seconds must be >= 0, got {seconds!r}")
  return seconds * price.per_second


def train_cost_per_token(step_s: float, tokens_per_step: float, price: Price) -> float:
  """Dollars per training token: one step of ``tokens_per_step`` tokens takes ``step_s``."""
  if tokens_per_step <= 0:
    raise ValueError(f"tokens per step must be > 0, got {tokens_per_step!r}")
  return dollars(step_s, price) / tokens_per_step


def cost_per_token_at_throughput(tokens_per_s: float, price: Price) -> float:
  """Dollars per token of a process running ``tokens_per_s`` tokens a second."""
  if tokens_per_s <= 0:
    raise ValueError(f"tokens per second must be > 0, got {tokens_per_s!r}")
  return price.per_second / tokens_per_s


def decode_cost_per_token(step_s: float, batch: int, price: Price) -> float:
  """Dollars per generated token: one decode step of ``step_s`` gives ``batch`` tokens."""
  if batch <= 0:
    raise ValueError(f"batch must be > 0, got {batch!r}")
  return dollars(step_s, price) / batch


def per_million(cost_per_token: float) -> float:
  """Dollars per 1M tokens from dollars per token."""
  return cost_per_token * MILLION


def fmt_dollars(value: float | None) -> str:
  """``$0.0123``, ``$12.3``, ``$1.2e-07``: three significant digits, n/a for None."""
  if value is None:
    return "n/a"
  if value == 0:
    return "$0"
  if abs(value) < 1e-4:
    return f"${value:.2e}"
  return f"${value:.3g}" if abs(value) < 1000 else f"${value:,.0f}"


# ---- a study's cost table (lrm/study/report.py passes one dict per finished run) -------------


def run_costs(run: dict, price: Price) -> dict[str, float | str | None]:
  """Dollars of one finished run from its results.json (and cell.json) fields.

  ``tokens_per_s`` (training tokens over time in training steps) gives the training cost per
  token. Inference per token is measured where the run has a ``decode`` record (``ms_per_step``
  at ``batch``, from a decode benchmark of the trained model); otherwise it is estimated as a
  forward pass: the training time per token scaled by ``forward_flops_per_token /
  train_flops_per_token`` (the same FLOP/s as training is assumed).
  """
  tps = run.get("tokens_per_s") or 0.0
  train = cost_per_token_at_throughput(tps, price) if tps > 0 else None
  wall = run.get("wall_time_s")
  out: dict[str, float | str | None] = {
    "train_per_million": None if train is None else per_million(train),
    "run_dollars": None if wall is None else dollars(wall, price),
    "infer_per_million": None,
    "infer_how": "n/a",
  }
  dec = run.get("decode")
  fwd, trn = run.get("forward_flops_per_token"), run.get("train_flops_per_token")
  if dec and dec.get("ms_per_step"):
    out["infer_per_million"] = per_million(
      decode_cost_per_token(dec["ms_per_step"] / 1e3, int(dec["batch"]), price)
    )
    out["infer_how"] = f"decode, {dec.get('context', '?')} ctx"
  elif train is not None and fwd and trn:
    out["infer_per_million"] = per_million(train * fwd / trn)
    out["infer_how"] = "≈ forward"
  return out


def _mean(values: list) -> float | None:
  return None if not values or any(v is None for v in values) else sum(values) / len(values)


def study_table(runs: list[dict], price: Price) -> list[str]:
  """Markdown lines: training and inference dollars per 1M tokens per (task, rule, mixer),
  mean over seeds. Each run dict has ``task``, ``rule``, ``label`` and the fields that
  ``run_costs`` reads."""
  if not runs:
    return []
  groups: dict[tuple, list[dict]] = {}
  for r in runs:
    groups.setdefault((r["task"], r["rule"], r["label"]), []).append(r | run_costs(r, price))
  lines = [
    "### Dollars per 1M tokens, every budget rule",
    "",
    f"At {price.statement()} (a study's `price_per_hour` and `price_machine`, or the caller's "
    "price). Training $ / 1M tokens from "
    "the time in training steps (tokens_per_s of results.json); run $ is the whole run's "
    "wall time (compiles and evaluations included). Inference $ / 1M tokens: measured "
    "decoding where a cell has it, else ≈ a forward pass, estimated as the training time "
    "scaled by forward / training FLOPs. Mean over seeds.",
    "",
    "| task | budget | mixer | n | train $ / 1M tokens | run $ | inference $ / 1M tokens | how |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for (task, rule, label), rs in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
    hows = sorted({str(r["infer_how"]) for r in rs})
    lines.append(
      f"| {task} | {rule} | {label} | {len(rs)} | "
      f"{fmt_dollars(_mean([r['train_per_million'] for r in rs]))} | "
      f"{fmt_dollars(_mean([r['run_dollars'] for r in rs]))} | "
      f"{fmt_dollars(_mean([r['infer_per_million'] for r in rs]))} | {', '.join(hows)} |"
    )
  return lines + [""]
