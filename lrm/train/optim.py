"""The optimizer from the ``optim`` config section: warm-up + decay, clipping, masked AdamW.

Weight decay applies only to weight matrices and kernels (parameters with 2 or more axes)
other than lookup tables. Not decayed: biases and norm scales (1-D; decaying them only
shrinks the function's offsets and scales), the token embedding table ``embedding`` and the
learned position table ``pos`` (a row only gets gradient when its token/position occurs, so
decay would pull rare rows towards zero between their updates).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("cosine", "rsqrt", "constant")
NO_DECAY_NAMES = ("embedding", "pos")  # lookup tables (see the module docstring)


def learning_rate(optim: Mapping[str, Any], total_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 at step 0 to exactly ``lr`` at ``warmup_steps``, then the decay.

  cosine: to ``lr * end_lr_ratio`` at ``total_steps``; rsqrt: ``lr * sqrt(warmup / step)``
  (inverse square root, as in the original Transformer); constant: stays at ``lr``. Every
  schedule is optax's, with the same warm-up, so all three peak at the same step.
  """
  lr, warmup, kind = float(optim["lr"]), int(optim["warmup_steps"]), optim["schedule"]
  if kind not in SCHEDULES:
    raise ValueError(
      f"unknown optim.schedule '{kind}'; set --config.optim.schedule to one of "
      f"{', '.join(SCHEDULES)}"
    )
  if warmup < 0 or lr <= 0:
    raise ValueError(f"optim.lr ({lr}) must be > 0 and optim.warmup_steps ({warmup}) >= 0")
  if kind == "cosine":
    return optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=lr,
      warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1),  # includes the warm-up
      end_value=lr * float(optim["end_lr_ratio"]),
    )
  if kind == "constant":
    decay = optax.constant_schedule(lr)
  else:
    w = max(warmup, 1)  # steps after the warm-up count from ``warmup`` (join_schedules)
    decay = lambda t: lr * jnp.sqrt(w / jnp.maximum(t + warmup, w))  # noqa: E731
  if warmup == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def decay_mask(params: Any) -> Any:
  """True for the leaves that get weight decay (see the module docstring)."""

  def decays(path: tuple, x: jax.Array) -> bool:
    names = [getattr(k, "key", getattr(k, "name", None)) for k in path]
    names = [n for n in names if n not in (None, "value")]
    return x.ndim >= 2 and (not names or names[-1] not in NO_DECAY_NAMES)

  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(
  optim: Mapping[str, Any], total_steps: int
) -> tuple[optax.GradientTransformation, Callable[[jax.Array], jax.Array]]:
  """``(transform, schedule)``: global-norm clipping (if ``clip_norm > 0``) then AdamW."""
  schedule = learning_rate(optim, total_steps)
  parts = []
  if float(optim["clip_norm"]) > 0:
    parts.append(optax.clip_by_global_norm(float(optim["clip_norm"])))
  parts.append(
    optax.adamw(
      schedule,
      b1=float(optim["b1"]),
      b2=float(optim["b2"]),
      weight_decay=float(optim["weight_decay"]),
      mask=decay_mask,
    )
  )
  return optax.chain(*parts), schedule
