#!/usr/bin/env bash
# Run one training command on every worker of a Cloud TPU VM slice (e.g. a v4-32 pod slice).
#
#   TPU_NAME=my-v4-32 ZONE=us-central2-b scripts/launch_tpu_pod.sh \
#       --config=experiments/text.py:mixer=local,size=full --workdir=/mnt/runs/text_local
#
#   SETUP=1 ...   first ship the code to every worker and install it: `git archive` of the
#                 committed HEAD (tracked files only: no .venv, runs/ or data) unpacked into
#                 a fresh REPO_DIR (default ~/lrm) that replaces the previous copy whole,
#                 then `pip install -e '.[tpu]'` there. Commit before SETUP: uncommitted
#                 changes are not shipped (the script says so). REPO_DIR/COMMIT names it.
#   CHECK=1 ...   run scripts/check_devices.py instead: each worker prints its layout and the
#                 global device list (all should report the same device count)
#   DRY_RUN=1 ... print each worker's process layout (python -m lrm.train.runtime) and stop
#
# Every worker runs `python scripts/train.py --multihost <your flags>`; lrm/train/runtime.py
# reads the worker's id and the slice's addresses from the TPU VM metadata and passes them
# to jax.distributed.initialize, one mesh spans all chips, and each worker reads its own
# shard of the data (batch_size / #workers rows). --workdir must be an absolute path on
# storage that every worker sees at the same path (a gcsfuse-mounted bucket, Filestore/NFS),
# never inside REPO_DIR (SETUP replaces it): checkpoints are written collectively, config
# and metrics by worker 0. Preemption: SIGTERM reaches every worker; they agree on a step,
# save, and exit 0; rerun the same command to resume (a queued resource does not restart it).
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME to the TPU VM name}" "${ZONE:?set ZONE to its zone}"
REPO_DIR=${REPO_DIR:-lrm}                    # the code on each worker ($HOME-relative unless absolute)
PYTHON=${PYTHON:-python3}
GCLOUD=${GCLOUD:-gcloud}
gcloud_args=(--zone="$ZONE" --worker=all)
[[ -n "${PROJECT:-}" ]] && gcloud_args+=(--project="$PROJECT")

on_all_workers() {  # run a shell command on every worker at once
  "$GCLOUD" compute tpus tpu-vm ssh "$TPU_NAME" "${gcloud_args[@]}" --command="$1"
}

for arg in "$@"; do
  if [[ "$arg" == --workdir=* && "${arg#--workdir=}" != /* ]]; then
    echo "error: $arg must be an absolute path on storage every worker mounts" >&2
    exit 2
  fi
done

if [[ "${SETUP:-0}" == 1 ]]; then
  repo=$(cd "$(dirname "$0")/.." && pwd)
  commit=$(git -C "$repo" rev-parse HEAD)
  if [[ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]]; then
    echo "warning: uncommitted changes are not shipped; shipping commit $commit" >&2
  fi
  tmp=$(mktemp -d)
  git -C "$repo" archive --format=tar.gz -o "$tmp/lrm-code.tar.gz" "$commit"
  "$GCLOUD" compute tpus tpu-vm scp "$tmp/lrm-code.tar.gz" "$TPU_NAME:lrm-code.tar.gz" \
    "${gcloud_args[@]}"  # into each worker's home
  rm -rf "$tmp"
  # Unpack next to the old copy, then swap: a failed unpack leaves the old copy in place.
  on_all_workers "set -e; cd ~; rm -rf $REPO_DIR.new; mkdir -p $REPO_DIR.new; \
tar -xzf lrm-code.tar.gz -C $REPO_DIR.new; echo $commit > $REPO_DIR.new/COMMIT; \
rm -rf $REPO_DIR; mv $REPO_DIR.new $REPO_DIR; rm -f lrm-code.tar.gz; \
cd $REPO_DIR && $PYTHON -m pip install -q -e '.[tpu]'"
  [[ $# -eq 0 ]] && exit 0  # setup only
fi

if [[ "${DRY_RUN:-0}" == 1 ]]; then
  on_all_workers "cd $REPO_DIR && $PYTHON -m lrm.train.runtime"
  exit
fi
if [[ "${CHECK:-0}" == 1 ]]; then
  on_all_workers "cd $REPO_DIR && $PYTHON scripts/check_devices.py --multihost"
  exit
fi

flags=$(printf ' %q' "$@")                     # quote the user's flags for the remote shell
on_all_workers "cd $REPO_DIR && $PYTHON scripts/train.py --multihost$flags"
