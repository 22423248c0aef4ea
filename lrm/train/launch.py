"""The process layout of a multi-process run, computed from the environment and nothing else.

  layout = launch.layout(os.environ)   # coordinator, process count and id, local device ids
  python -m lrm.train.launch           # print this process's layout as JSON (a dry run)

``lrm.train.sharding.initialize_distributed`` passes every field to
``jax.distributed.initialize`` explicitly, so what runs is what this function (and its tests)
say, on every cluster; the launch scripts only start processes. Sources, first match wins:

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
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

TPU_PORT = 8482  # JAX's coordinator port on TPU slices
GOOGLE_PCI_VENDOR = "0x1ae0"  # TPU chips show up as PCI devices of this vendor
Metadata = Callable[[str], str | None]


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
