#!/usr/bin/env bash
# Multi-GPU / multi-node training under SLURM: one process per node driving all its GPUs.
#
#   sbatch scripts/slurm_multigpu.sh --config=experiments/text.py:mixer=local,size=full \
#       --workdir=$HOME/runs/text_local
#   sbatch --nodes=1 scripts/slurm_multigpu.sh ...      # one node, all its GPUs
#   PER_GPU=1 sbatch --ntasks-per-node=8 scripts/slurm_multigpu.sh ...   # a process per GPU
#   CHECK=1 sbatch scripts/slurm_multigpu.sh            # only print processes and devices
#
# srun starts the same command on every task; `train.py --multihost` calls
# jax.distributed.initialize(), which reads the SLURM environment (coordinator = first
# node, process id = task rank), builds one data-parallel mesh over every GPU of the job,
# and each process reads its own shard of the data. --workdir must be on a filesystem all
# nodes share. Before the time limit SLURM sends SIGTERM (--signal below): the processes
# agree on a step, save a checkpoint and exit; the job is requeued and resumes from it.
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
script=scripts/train.py
[[ "${CHECK:-0}" == 1 ]] && script=scripts/check_devices.py && set --

if [[ "${PER_GPU:-0}" == 1 ]]; then
  # One process per GPU: each task sees only the GPU matching its node-local rank.
  srun bash -c "CUDA_VISIBLE_DEVICES=\$SLURM_LOCALID exec $PYTHON $script --multihost $(printf '%q ' "$@")"
else
  srun "$PYTHON" "$script" --multihost "$@"
fi
