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
