"""The process layout of every launcher, from fake environments: SLURM with one process per
node and one per GPU (4 nodes x 8 GPUs), a Cloud TPU VM slice, explicit LRM_* variables."""

from __future__ import annotations

import pytest

from lrm.train.runtime import LayoutError, first_host, layout, tasks_per_node

EIGHT = "0,1,2,3,4,5,6,7"


def slurm(**over: str) -> dict[str, str]:
  """An srun task of a 4-node job with 8 GPUs per node, one task per node."""
  env = {
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NODELIST": "gpu[07-09,12]",
    "SLURM_STEP_NODELIST": "gpu[07-09,12]",
    "SLURM_NTASKS": "4",
    "SLURM_STEP_NUM_TASKS": "4",
    "SLURM_STEP_TASKS_PER_NODE": "1(x4)",
    "SLURM_PROCID": "2",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "2",
    "SLURM_GPUS_ON_NODE": "8",
    "CUDA_VISIBLE_DEVICES": EIGHT,
  }
  return {**env, **over}


def test_slurm_one_process_per_node_drives_all_eight_gpus():
  for node in range(4):
    lay = layout(slurm(SLURM_PROCID=str(node), SLURM_NODEID=str(node)))
    assert lay.coordinator == "gpu07:61586"  # JAX's own port rule: 4242 % 4096 + 61440
    assert (lay.num_processes, lay.process_id) == (4, node)
    assert lay.local_device_ids == tuple(range(8))
    assert lay.source == "slurm"


def test_slurm_one_process_per_gpu():
  """32 tasks (--ntasks-per-node=8): task 8n+r drives GPU r of node n, whether each task
  sees all eight GPUs or SLURM bound it to its own (--gpus-per-task=1)."""
  seen = set()
  for node in range(4):
    for rank in range(8):
      pid = 8 * node + rank
      env = slurm(
        SLURM_NTASKS="32",
        SLURM_STEP_NUM_TASKS="32",
        SLURM_STEP_TASKS_PER_NODE="8(x4)",
        SLURM_PROCID=str(pid),
        SLURM_LOCALID=str(rank),
        SLURM_NODEID=str(node),
      )
      lay = layout(env)
      assert lay.coordinator == "gpu07:61586"
      assert (lay.num_processes, lay.process_id, lay.local_device_ids) == (32, pid, (rank,))
      seen.add((node, lay.local_device_ids))
      bound = layout({**env, "CUDA_VISIBLE_DEVICES": str(rank)})
      assert bound.local_device_ids == (0,) and bound.process_id == pid
  assert len(seen) == 32  # every GPU of every node exactly once


def test_slurm_other_layouts_and_errors():
  two = slurm(SLURM_STEP_TASKS_PER_NODE="2(x4)", SLURM_LOCALID="1", SLURM_NTASKS="8")
  two["SLURM_STEP_NUM_TASKS"] = "8"
  assert layout(two).local_device_ids == (4, 5, 6, 7)  # two tasks of 4 GPUs each
  no_cuda = slurm()
  del no_cuda["CUDA_VISIBLE_DEVICES"]
  assert layout(no_cuda).local_device_ids == tuple(range(8))  # SLURM_GPUS_ON_NODE
  cpu = {k: v for k, v in no_cuda.items() if k != "SLURM_GPUS_ON_NODE"}
  assert layout(cpu).local_device_ids is None  # a CPU job: all local devices
  assert layout(slurm(LRM_COORDINATOR_PORT="5000")).coordinator == "gpu07:5000"
  with pytest.raises(LayoutError, match="cannot share 8 GPUs"):
    layout(slurm(SLURM_STEP_TASKS_PER_NODE="3(x4)"))
  with pytest.raises(LayoutError, match="SLURM_PROCID"):
    layout(slurm(SLURM_PROCID="x"))
  with pytest.raises(LayoutError, match="not in 0..3"):
    layout(slurm(SLURM_PROCID="4"))


def test_slurm_hostlists():
  assert first_host("node01") == "node01"
  assert first_host("node01,node02") == "node01"
  assert first_host("node[001-016],login") == "node001"
  assert first_host("gpu[7,9-12]") == "gpu7"
  assert first_host("rack1-n[3-4]-ib") == "rack1-n3-ib"
  assert tasks_per_node("8(x3),4") == [8, 8, 8, 4]
  assert tasks_per_node("1") == [1]


def test_tpu_vm_slice_from_metadata_and_from_gke_variables():
  meta = {
    "agent-worker-number": "3",
    "worker-network-endpoints": "w0:0:10.0.0.5,w1:1:10.0.0.6,w2:2:10.0.0.7,w3:3:10.0.0.8",
  }
  lay = layout({}, metadata=meta.get)
  assert lay.coordinator == "10.0.0.5:8482"
  assert (lay.num_processes, lay.process_id, lay.local_device_ids) == (4, 3, None)
  assert lay.source == "tpu"
  gke = layout({"TPU_WORKER_HOSTNAMES": "t-0,t-1", "TPU_WORKER_ID": "1"})
  assert (gke.coordinator, gke.num_processes, gke.process_id) == ("t-0:8482", 2, 1)
  two_slices = layout({"MEGASCALE_NUM_SLICES": "2", "MEGASCALE_SLICE_ID": "1"}, metadata=meta.get)
  assert (two_slices.num_processes, two_slices.process_id) == (8, 7)


def test_explicit_variables_win_and_missing_environment_is_one_line():
  env = slurm(LRM_COORDINATOR="10.1.1.1:1234", LRM_NUM_PROCESSES="2", LRM_PROCESS_ID="1")
  lay = layout({**env, "LRM_LOCAL_DEVICE_IDS": "2,3"})
  assert (lay.coordinator, lay.num_processes, lay.process_id) == ("10.1.1.1:1234", 2, 1)
  assert lay.local_device_ids == (2, 3) and lay.source == "explicit"
  assert layout(env).local_device_ids is None
  with pytest.raises(LayoutError, match="LRM_NUM_PROCESSES is not set"):
    layout({"LRM_COORDINATOR": "h:1", "LRM_PROCESS_ID": "0"})
  with pytest.raises(LayoutError, match="set LRM_COORDINATOR"):
    layout({}, metadata={}.get)
