"""Data parallelism with JAX's own sharding: the only file that names mesh axes.

One program runs everywhere: a 1-D mesh ``("data",)`` over every device of every process.
Parameters and optimizer state are replicated; each batch is split along its first axis.
Each process draws the same global batches and contributes its ``batch_size /
process_count`` rows of each (``host_rows``); ``jax.make_array_from_process_local_data``
assembles them. On one CPU this is a mesh of one device and costs nothing.

Multi-host runs (TPU pods, several GPU nodes) call ``initialize_distributed()`` first: the
process layout (coordinator, process count and id, local devices) is computed from the
environment by ``lrm.train.launch.layout`` (SLURM, TPU VMs, or ``LRM_COORDINATOR=host:port``,
``LRM_NUM_PROCESSES``, ``LRM_PROCESS_ID``) and passed to ``jax.distributed.initialize``
explicitly, never left to JAX's own guess.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lrm.train import launch

AXIS = "data"


def initialize_distributed() -> launch.Layout:
  """Join a multi-process run; must be called before any other JAX call. Raises
  ``launch.LayoutError`` (one line) when the environment describes no such run."""
  lay = launch.layout(os.environ)
  print(f"[lrm] {lay.describe()}", file=sys.stderr, flush=True)
  jax.distributed.initialize(
    coordinator_address=lay.coordinator,
    num_processes=lay.num_processes,
    process_id=lay.process_id,
    local_device_ids=None if lay.local_device_ids is None else list(lay.local_device_ids),
  )
  return lay


def make_mesh() -> Mesh:
  """A 1-D mesh over all devices of all processes.

  Axis type ``Auto`` lets XLA propagate shardings through the model (the mixers need no
  annotations); ``Explicit`` (the ``make_mesh`` default) would make every reshape in the
  micro-batch split spell out its sharding.
  """
  return jax.make_mesh((jax.device_count(),), (AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Rows split over the data axis."""
  return NamedSharding(mesh, P(AXIS))


def check_batch_size(name: str, size: int, grad_accum: int = 1) -> None:
  """Raise a one-line error unless ``size`` splits evenly over processes and devices."""
  devices, procs = jax.device_count(), jax.process_count()
  if size < 1:
    raise ValueError(f"{name}={size} must be positive")
  if grad_accum < 1 or size % grad_accum:
    raise ValueError(
      f"{name}={size} is not divisible by train.grad_accum={grad_accum}; "
      f"choose a batch size that is a multiple of it"
    )
  micro = size // grad_accum
  if micro % devices or size % procs:
    what = f"the micro-batch {micro} ({name}/grad_accum)" if grad_accum > 1 else f"{name}={size}"
    raise ValueError(
      f"{what} is not divisible by the {devices} devices ({procs} processes); "
      f"set --config.{name} to a multiple of {devices * grad_accum}"
    )


def host_rows(
  batches: Iterator[dict[str, np.ndarray]], index: int, count: int
) -> Iterator[dict[str, np.ndarray]]:
  """This process's rows of each global batch: the ``index``-th of ``count`` equal slices.

  Every process draws the same global batches, so a run sees the same examples at each step
  whatever its process count, and matches a single-process run (the loss is a mean over
  rows, so it does not depend on which device holds which row).
  """
  for batch in batches:
    rows = len(next(iter(batch.values()))) // count
    yield {k: v[index * rows : (index + 1) * rows] for k, v in batch.items()}


def put_batch(batch: Mapping[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """This process's rows -> global arrays sharded along the batch axis."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Copy a pytree of host-identical arrays onto every device (multi-process safe)."""
  sh = replicated(mesh)

  def put(x: Any) -> jax.Array:
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):  # typed keys: move the raw bits
      return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sh, lambda idx: x[idx])

  return jax.tree.map(put, tree)


def abstract_replicated(tree: Any, mesh: Mesh) -> Any:
  """``ShapeDtypeStruct`` leaves carrying the replicated sharding, for sharded restores."""
  sh = replicated(mesh)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), tree)


def describe() -> str:
  """Process index/count and every device seen, for checking a cluster launch."""
  lines = [
    f"process {jax.process_index()} of {jax.process_count()}: "
    f"{jax.local_device_count()} local / {jax.device_count()} global devices "
    f"(backend {jax.default_backend()})"
  ]
  for d in jax.devices():
    lines.append(f"  {d} process={d.process_index} kind={d.device_kind}")
  return "\n".join(lines)
