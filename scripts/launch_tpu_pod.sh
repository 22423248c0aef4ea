#!/usr/bin/env bash
# Run one training command on every worker of a Cloud TPU VM slice (e.g. a v4-32 pod slice).
#
#   TPU_NAME=my-v4-32 ZONE=us-central2-b scripts/launch_tpu_pod.sh \
#       --config=experiments/text.py:mixer=local,size=full --workdir=/mnt/runs/text_local
#
#   SETUP=1 ...   first copy this checkout to every worker and `pip install -e .[tpu]` there
#   CHECK=1 ...   run scripts/check_devices.py instead: each worker prints its process index
#                 and the global device list (all should report the same device count)
#
# Every worker runs `python scripts/train.py --multihost <your flags>`: on TPU VMs
# jax.distributed.initialize() finds the other workers by itself, builds one mesh over all
# chips, and each worker reads its own shard of the data (batch_size / #workers rows).
# --workdir must be storage that every worker sees at the same path (a gcsfuse-mounted
# bucket, Filestore/NFS): checkpoints are written collectively, config/metrics by worker 0.
# Preemption: SIGTERM reaches every worker; they agree on a step, save, and exit 0; rerun
# the same command to resume.
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME to the TPU VM name}" "${ZONE:?set ZONE to its zone}"
REPO_DIR=${REPO_DIR:-lrm}                    # where the code lives on each worker ($HOME-relative)
PYTHON=${PYTHON:-python3}
gcloud_args=(--zone="$ZONE" --worker=all)
[[ -n "${PROJECT:-}" ]] && gcloud_args+=(--project="$PROJECT")

on_all_workers() {  # run a shell command on every worker at once
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${gcloud_args[@]}" --command="$1"
}

if [[ "${SETUP:-0}" == 1 ]]; then
  gcloud compute tpus tpu-vm scp --recurse "$(cd "$(dirname "$0")/.." && pwd)" \
    "$TPU_NAME:$REPO_DIR" "${gcloud_args[@]}"
  on_all_workers "cd $REPO_DIR && $PYTHON -m pip install -q -e '.[tpu]'"
fi

if [[ "${CHECK:-0}" == 1 ]]; then
  on_all_workers "cd $REPO_DIR && $PYTHON scripts/check_devices.py --multihost"
  exit
fi

flags=$(printf ' %q' "$@")                     # quote the user's flags for the remote shell
on_all_workers "cd $REPO_DIR && $PYTHON scripts/train.py --multihost$flags"
