"""How this process runs: its place in a multi-process run, its allocator and its devices.

  layout = runtime.layout(os.environ)  # coordinator, process count and id, local device ids
  python -m lrm.train.runtime          # print this process's layout as JSON (a dry run)
  runtime.initialize_distributed()     # --multihost: join the run with exactly that layout
  mesh = runtime.make_mesh()           # the data-parallel mesh over every device

Process layout, computed from the environment and nothing else. ``initialize_distributed``
passes every field to ``jax.distributed.initialize`` explicitly, so what runs is what
``layout`` (and its tests) say, on every cluster; the launch scripts only start processes.
Sources, first match wins:

* ``LRM_COORDINATOR=host:port`` with ``LRM_NUM_PROCESSES``, ``LRM_PROCESS_ID`` and optionally
  ``LRM_LOCAL_DEVICE_IDS=0,1`` (any machine, any launcher).
* SLURM (``SLURM_JOB_ID`` and ``SLURM_PROCID`` set): one process per task. The coordinator
  is the step's first node on the port JAX itself would pick (``LRM_COORDINATOR_PORT``
  overrides it). Local devices: the GPUs this task sees (``CUDA_VISIBLE_DEVICES``, else
  ``SLURM_GPUS_ON_NODE``) are split evenly over the node's tasks in local-rank order, so one
  task per node drives all of them and one task per GPU drives GPU ``SLURM_LOCALID`` (or GPU 0
  when SLURM already restricted the task to its own GPU, ``--gpus-per-task=1``). JAX's own
  SLURM detection always asks for GPU ``SLURM_LOCALID`` alone, which is wrong for the first
  layout and for the last.
* A Cloud TPU VM slice: worker ids and addresses from ``TPU_WORKER_ID`` and
  ``TPU_WORKER_HOSTNAMES`` (GKE) or from the VM's metadata server (``agent-worker-number``,
  ``worker-network-endpoints``), as JAX reads them; every chip of a worker is local.

Allocator: ``TUNED_MALLOC``, the glibc malloc tunables for CPU runs, used by
``scripts/train.py`` (``LRM_MALLOC_TUNING=1``) and by the benchmark harness (``benchmarks/``,
``--malloc``). XLA on CPU allocates fresh temporaries on every step. With glibc's defaults,
blocks above the mmap threshold go through mmap/munmap each time (page faults and zeroing on
every step); these settings keep them in the heap: a 4 GiB mmap threshold, a 64 GiB trim
threshold (the heap is not handed back between steps), transparent huge pages for the heap,
and one arena: XLA allocates from its worker threads, and a thread's own arena grows in heaps
of at most 64 MiB, so a larger block fell back to mmap on every step whatever the threshold
(measured: BigBird fwd+bwd in one process grew x4.4 from 8K to 16K, x2.0 with one arena).
glibc reads ``GLIBC_TUNABLES`` only when a process starts, so they go into the environment of
a new one.

Devices: data parallelism with JAX's own sharding; this is the only file that names mesh
axes. One program runs everywhere: a 1-D mesh ``("data",)`` over every device of every
process. Parameters and optimizer state are replicated; each batch is split along its first
axis. Each process draws the same global batches and contributes its ``batch_size /
process_count`` rows of each (``host_rows``); ``jax.make_array_from_process_local_data``
assembles them. On one CPU this is a mesh of one device and costs nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

TPU_PORT = 8482  # JAX's coordinator port on TPU slices
GOOGLE_PCI_VENDOR = "0x1ae0"  # TPU chips show up as PCI devices of this vendor
Metadata = Callable[[str], str | None]

AXIS = "data"
TUNED_MALLOC = (  # see the module docstring
  "glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=4294967296"
  ":glibc.malloc.trim_threshold=68719476736:glibc.malloc.arena_max=1"
)


# ---- process layout ------------------------------------------------------------------------------
class LayoutError(ValueError):
  """The environment does not describe a consistent multi-process run (one line)."""


@dataclasses.dataclass(frozen=True)
class Layout:
  """Arguments of ``jax.distributed.initialize`` for this process."""

  coordinator: str  # host:port of process 0
  num_processes: int
  process_id: int
  local_device_ids: tuple[int, ...] | None  # None: every device this process sees
  source: str  # "explicit" | "slurm" | "tpu"

  def describe(self) -> str:
    devices = "all" if self.local_device_ids is None else list(self.local_device_ids)
    return (
      f"process {self.process_id} of {self.num_processes} ({self.source}), coordinator "
      f"{self.coordinator}, local devices {devices}"
    )


def layout(env: Mapping[str, str] | None = None, *, metadata: Metadata | None = None) -> Layout:
  """This process's layout from ``env`` (default ``os.environ``).

  ``metadata(key)`` answers Cloud TPU metadata queries (the tests pass a dict's ``get``); by
  default the metadata server is asked only on a machine with TPU chips.
  """
  env = os.environ if env is None else env
  if env.get("LRM_COORDINATOR"):
    return _explicit(env)
  if "SLURM_JOB_ID" in env and "SLURM_PROCID" in env:
    return _slurm(env)
  if env.get("TPU_WORKER_HOSTNAMES") or env.get("TPU_PROCESS_ADDRESSES"):
    hosts = env.get("TPU_PROCESS_ADDRESSES") or env["TPU_WORKER_HOSTNAMES"]
    return _tpu(hosts, _int(env, "TPU_WORKER_ID"), env)
  if metadata is None and _has_tpu_chips():
    metadata = _gce_metadata
  if metadata is not None and metadata("agent-worker-number") is not None:
    endpoints = metadata("worker-network-endpoints") or ""
    return _tpu(endpoints, int(metadata("agent-worker-number")), env)
  raise LayoutError(
    "--multihost: no multi-process environment found (not a SLURM task or a TPU VM slice); "
    "set LRM_COORDINATOR=host:port, LRM_NUM_PROCESSES and LRM_PROCESS_ID"
  )


def _int(env: Mapping[str, str], name: str) -> int:
  try:
    return int(env[name])
  except KeyError:
    raise LayoutError(f"--multihost: {name} is not set") from None
  except ValueError:
    raise LayoutError(f"--multihost: {name}={env[name]!r} is not an integer") from None


def _ids(text: str, name: str) -> tuple[int, ...]:
  try:
    return tuple(int(x) for x in text.split(",") if x.strip())
  except ValueError:
    raise LayoutError(f"--multihost: {name}={text!r} is not a comma-separated id list") from None


def _checked(coordinator: str, n: int, pid: int, ids: tuple[int, ...] | None, src: str) -> Layout:
  if n < 1 or not 0 <= pid < n:
    raise LayoutError(f"--multihost ({src}): process id {pid} is not in 0..{n - 1}")
  if ids is not None and not ids:
    raise LayoutError(f"--multihost ({src}): process {pid} was given no local devices")
  return Layout(coordinator, n, pid, ids, src)


def _explicit(env: Mapping[str, str]) -> Layout:
  addr = env["LRM_COORDINATOR"]
  if ":" not in addr:
    raise LayoutError(f"--multihost: LRM_COORDINATOR={addr!r} must be host:port")
  ids = env.get("LRM_LOCAL_DEVICE_IDS")
  local = _ids(ids, "LRM_LOCAL_DEVICE_IDS") if ids else None
  n, pid = _int(env, "LRM_NUM_PROCESSES"), _int(env, "LRM_PROCESS_ID")
  return _checked(addr, n, pid, local, "explicit")


# ---- SLURM -------------------------------------------------------------------------------------
def first_host(nodelist: str) -> str:
  """The first host of a SLURM hostlist: ``"gpu[07-09,12],cpu1"`` -> ``"gpu07"``."""
  m = re.match(r"([^,\[]*)(?:\[([^\]]*)\])?([^,]*)", nodelist.strip())
  if not m or not (m.group(1) or m.group(2)):
    raise LayoutError(f"--multihost: cannot read the SLURM node list {nodelist!r}")
  first = re.split(r"[,-]", m.group(2))[0] if m.group(2) else ""
  return f"{m.group(1)}{first}{m.group(3)}"


def tasks_per_node(spec: str) -> list[int]:
  """SLURM's compressed counts: ``"8(x3),4"`` -> ``[8, 8, 8, 4]``."""
  out: list[int] = []
  for part in filter(None, spec.split(",")):
    m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
    if not m:
      raise LayoutError(f"--multihost: cannot read SLURM's tasks per node {spec!r}")
    out += [int(m.group(1))] * int(m.group(2) or 1)
  return out


def _slurm(env: Mapping[str, str]) -> Layout:
  nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
  if not nodelist:
    raise LayoutError("--multihost: SLURM_STEP_NODELIST is not set; start the processes with srun")
  port = env.get("LRM_COORDINATOR_PORT") or str(_int(env, "SLURM_JOB_ID") % 4096 + 61440)
  coordinator = f"{first_host(nodelist)}:{port}"  # JAX's port choice, in 61440..65535
  n = _int(env, "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else "SLURM_NTASKS")
  pid, local_rank = _int(env, "SLURM_PROCID"), _int(env, "SLURM_LOCALID")
  counts = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
  if counts:
    per_node = tasks_per_node(counts)
    node = _int(env, "SLURM_NODEID")
    if node >= len(per_node):
      raise LayoutError(f"--multihost: SLURM_NODEID={node} but tasks per node are {counts!r}")
    on_node = per_node[node]
  else:
    on_node = int(env.get("SLURM_NTASKS_PER_NODE", "1"))
  return _checked(coordinator, n, pid, _slurm_devices(env, local_rank, on_node), "slurm")


def _slurm_devices(env: Mapping[str, str], local_rank: int, on_node: int) -> tuple[int, ...] | None:
  visible = env.get("CUDA_VISIBLE_DEVICES")
  if visible is not None:
    gpus = len([x for x in visible.split(",") if x.strip()])
  elif env.get("SLURM_GPUS_ON_NODE"):
    gpus = _int(env, "SLURM_GPUS_ON_NODE")
  else:
    return None  # no GPUs allocated (a CPU job): every device the process sees
  if gpus == 0:
    return None
  if gpus % on_node and gpus != 1:
    raise LayoutError(
      f"--multihost: {on_node} tasks on this node cannot share {gpus} GPUs evenly; use one "
      f"task per node or one per GPU (--ntasks-per-node)"
    )
  if gpus == 1 and on_node > 1:  # SLURM bound this task to its own GPU (--gpus-per-task=1)
    return (0,)
  each = gpus // on_node
  return tuple(range(local_rank * each, (local_rank + 1) * each))


# ---- Cloud TPU VM --------------------------------------------------------------------------------
def _tpu(endpoints: str, worker: int, env: Mapping[str, str]) -> Layout:
  hosts = []
  for item in filter(None, endpoints.split(",")):
    parts = item.split(":")  # "host" or the older "name:id:ip"
    hosts.append(parts[2] if len(parts) == 3 else parts[0])
  if not hosts:
    raise LayoutError("--multihost: the TPU slice lists no workers (worker-network-endpoints)")
  slices, slice_id = int(env.get("MEGASCALE_NUM_SLICES", 1)), int(env.get("MEGASCALE_SLICE_ID", 0))
  head = env.get("MEGASCALE_COORDINATOR_ADDRESS") or hosts[0]
  coordinator = f"{head.split(':')[0]}:{env.get('LRM_COORDINATOR_PORT') or TPU_PORT}"
  n, pid = len(hosts) * slices, worker + slice_id * len(hosts)
  return _checked(coordinator, n, pid, None, "tpu")


def _has_tpu_chips() -> bool:
  for vendor in Path("/sys/bus/pci/devices").glob("*/vendor"):
    try:
      if vendor.read_text().strip() == GOOGLE_PCI_VENDOR:
        return True
    except OSError:
      continue
  return False


def _gce_metadata(key: str) -> str | None:
  import urllib.error
  import urllib.request

  host = os.environ.get("GCE_METADATA_IP", "metadata.google.internal")
  url = f"http://{host}/computeMetadata/v1/instance/attributes/{key}"
  req = urllib.request.Request(url, headers={"Metadata-Flavor": "Google"})
  try:
    with urllib.request.urlopen(req, timeout=10) as r:
      return r.read().decode()
  except (urllib.error.URLError, OSError):
    return None


# ---- devices: joining the run, the mesh, batch placement ----------------------------------------
def initialize_distributed() -> Layout:
  """Join a multi-process run; must be called before any other JAX call. Raises
  ``LayoutError`` (one line) when the environment describes no such run."""
  lay = layout(os.environ)
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


def main() -> int:
  """Print this process's layout (one JSON line), or the reason there is none."""
  try:
    lay = layout()
  except LayoutError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps({**dataclasses.asdict(lay), "host": os.uname().nodename}), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
