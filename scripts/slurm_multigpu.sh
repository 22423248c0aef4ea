#!/usr/bin/env bash
# Multi-GPU / multi-node training under SLURM, requeued until the run is finished.
#
#   sbatch scripts/slurm_multigpu.sh --config=experiments/text.py:mixer=local,size=full \
#       --workdir=$HOME/runs/text_local             # 2 nodes, one process per node (8 GPUs)
#   sbatch --nodes=1 scripts/slurm_multigpu.sh ...  # one node, all its GPUs
#   sbatch --ntasks-per-node=8 scripts/slurm_multigpu.sh ...   # one process per GPU
#   CHECK=1 sbatch scripts/slurm_multigpu.sh       # only print each process's devices
#   DRY_RUN=1 sbatch scripts/slurm_multigpu.sh     # only print each process's layout (JSON)
#
# srun starts one task per process; `train.py --multihost` computes its layout (coordinator =
# first node, process id = task rank, local GPUs = this task's share of its node's GPUs) with
# lrm/train/runtime.py and passes it to jax.distributed.initialize. --workdir must be on a
# filesystem that every node sees at the same path.
#
# Requeue: 5 minutes before the time limit SLURM sends SIGTERM to the tasks (--signal, not
# to this script); they agree on a step, save a checkpoint and exit 0. This script then sees
# that the workdir has no results.json yet and calls `scontrol requeue`: the job goes back
# to the queue with the same id and resumes from the checkpoint. The same happens after exit
# code 143 (SIGTERM during set-up or the final evaluation, where nothing needed saving). It
# does not requeue after 2 (bad input), 3 (diverged) or 4 (I/O failure): those need a person;
# nor once results.json exists, nor after MAX_REQUEUES (default 20) restarts. `scancel`
# stops the job for good (it also ends this script, before it can requeue).
#
#SBATCH --job-name=lrm
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=16
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-.}"
PYTHON=${PYTHON:-python}
if [[ "${DRY_RUN:-0}" == 1 ]]; then exec srun "$PYTHON" -m lrm.train.runtime; fi
if [[ "${CHECK:-0}" == 1 ]]; then exec srun "$PYTHON" scripts/check_devices.py --multihost; fi

workdir=""
prev=""
for arg in "$@"; do  # --workdir=DIR or --workdir DIR
  [[ "$prev" == --workdir ]] && workdir=$arg
  [[ "$arg" == --workdir=* ]] && workdir=${arg#--workdir=}
  prev=$arg
done
: "${workdir:?give --workdir=<dir on a shared filesystem>}"

rc=0
srun "$PYTHON" scripts/train.py --multihost "$@" || rc=$?
restarts=${SLURM_RESTART_COUNT:-0}
if [[ ($rc == 0 || $rc == 143) && ! -f "$workdir/results.json" ]]; then
  if ((restarts < ${MAX_REQUEUES:-20})); then
    echo "lrm: stopped before the end (exit $rc); requeueing job $SLURM_JOB_ID (restart $((restarts + 1)))"
    scontrol requeue "$SLURM_JOB_ID"
  else
    echo "lrm: not finished after $restarts restarts; not requeueing (MAX_REQUEUES)" >&2
    rc=1
  fi
fi
exit "$rc"
