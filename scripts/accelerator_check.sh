#!/usr/bin/env bash
# The first minutes on a GPU or TPU machine: at most 10 minutes wall-clock (BUDGET seconds,
# default 600) including installing the [gpu] or [tpu] extra; every stage has its own time
# limit, cut further so that the whole never runs past the budget:
#
#   bash scripts/accelerator_check.sh          # on the accelerator, from the repository root
#   bash scripts/accelerator_check.sh --cpu    # a tiny smoke version on CPU (the tests run it)
#   OUT=/tmp/x PYTHON=.venv/bin/python EXTRA=tpu bash scripts/accelerator_check.sh
#
# 0. install   pip install -e ".[gpu]" or ".[tpu]" (EXTRA=gpu|tpu|none; default: gpu if
#              nvidia-smi lists a GPU, tpu if the machine has Google TPU chips, else none);
#              skipped by --cpu
# 1. devices   every device JAX sees (scripts/check_devices.py)
# 2. tests     the mixer oracle tests on the accelerator, matmuls at full float32 precision
#              (attention: XLA / cuDNN / splash vs dense; conv and dynamic-conv kernels; the
#              dispatch decisions; remat's compiled memory at L = 8K)
# 3. bench     benchmarks/run.py forward+backward in bfloat16 at 4K-32K: local, conv, global
#              (impl=auto: cuDNN flash on GPU, splash on TPU) against global:impl=xla and the
#              cuDNN flash baseline dpa_full:implementation=cudnn; then causal local (auto:
#              cuDNN's sliding window) against the blocked kernel and dpa_local on cuDNN
# 4. train     the full-size ListOps model (experiments/listops.py:size=full; 9600 generated
#              training expressions, smaller eval splits) for 300 steps in bfloat16
# 5. report    $OUT/accelerator_<device>.json: stage status and time, test counts, benchmark
#              medians and impls, training tokens/s and the fraction of the chip's bf16 peak
#
# Limits (seconds): install 120, JAX start 45, devices 30, tests 90, bench 130, bench_causal
# 50, train 110, report 15: 590 in all. A stage that would end past the budget gets only the
# time left (and is recorded as a timeout when it runs out); one with under 5 s left is not
# started. What only a device shows is measured here (speed, cuDNN, XLA's compilation for the
# chip); which kernel each layer gets and that the train step lowers for TPU and GPU are
# proven on CPU (scripts/export_step.py, tests/test_export.py).
#
# Exit code 0 if every stage passed. Results go to $OUT (default results/bench): commit the
# JSON, JSONL, .md and .png there when this ran on an accelerator.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUT=${OUT:-results/bench}
mode=accelerator
if [[ "${1:-}" == --cpu ]]; then
  mode=cpu
  export JAX_PLATFORMS=cpu
elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--cpu]" >&2
  exit 2
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/lrm_accel.XXXXXX")
mkdir -p "$OUT"
BUDGET=${BUDGET:-600}
REPORT_RESERVE=15  # seconds kept for the report at the end
deadline=$(($(date +%s) + BUDGET))

left() {  # seconds a stage may still take: LIMIT, or less near the end of the budget
  local rest=$((deadline - REPORT_RESERVE - $(date +%s)))
  ((rest < $1)) && echo "$rest" || echo "$1"
}

stage() {  # stage NAME SECONDS COMMAND...: run with a time limit, log, record exit code and time
  local name=$1 limit start rc
  limit=$(left "$2")
  shift 2
  start=$(date +%s)
  if ((limit < 5)); then
    echo "== $name: not started, the ${BUDGET}s budget is spent"
    echo "$name 124 0" >>"$work/stages"
    return
  fi
  echo "== $name (at most ${limit}s): $*"
  timeout --kill-after=3 "$limit" "$@" >"$work/$name.log" 2>&1
  rc=$?
  echo "$name $rc $(($(date +%s) - start))" >>"$work/stages"
  tail -n 4 "$work/$name.log"
  echo "== $name: exit $rc after $(($(date +%s) - start))s (log $work/$name.log)"
}

extra() {  # the pip extra for this machine's accelerator (before JAX can tell)
  if [[ -n ${EXTRA:-} ]]; then
    echo "$EXTRA"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then
    echo gpu
  elif grep -qs 0x1ae0 /sys/bus/pci/devices/*/vendor || ls /dev/accel0 /dev/vfio/0 >/dev/null 2>&1; then
    echo tpu  # Google's PCI vendor id (lrm/train/runtime.py), or the TPU device files
  else
    echo none
  fi
}

if [[ $mode == accelerator ]]; then
  pip_extra=$(extra)
  if [[ $pip_extra == gpu || $pip_extra == tpu ]]; then
    stage install 120 $PYTHON -m pip install --quiet -e ".[$pip_extra]"
  else
    echo "== install: no GPU or TPU found (EXTRA=$pip_extra); using the JAX that is installed"
  fi
fi

timeout --kill-after=3 "$(left 45)" $PYTHON -c \
  "import jax; d = jax.devices(); print(jax.default_backend(), d[0].device_kind, len(d), sep='\t')" \
  >"$work/device.txt" || { echo "error: JAX does not start (or took over 45s); see above" >&2; exit 2; }
backend=$(cut -f1 "$work/device.txt")
slug=$(cut -f2 "$work/device.txt" | tr 'A-Z' 'a-z' | tr -cs 'a-z0-9' '_' | sed 's/_*$//')
[[ $mode == cpu ]] && slug=cpu_smoke

if [[ $mode == cpu ]]; then
  tests=(tests/test_dispatch.py -k "decision or resolve")
  bench=(--lengths=128 --dim=32 --heads=2 --window=8 --block=16 --repeats=1 --warmup=0
    --peak_size=256)
  mixers=local+global causal_mixers=""  # one cell (a hybrid stack), no causal run
  train=(--config=experiments/listops.py:size=small --config.train.steps=2
    --config.model.depth=1 --config.data.num_train=64 --config.data.num_val=32
    --config.data.num_test=32 --config.train.eval_batch_size=32)
  limits=(60 60 60 90)
else
  tests=(tests/test_attention.py tests/test_dispatch.py tests/test_conv.py tests/test_dynamic.py
    tests/test_remat.py -k "oracle or decision or resolve or cudnn or remat_lowers")
  bench=(--lengths=4096,8192,16384,32768 --dim=256 --heads=4 --window=128 --repeats=3
    --timeout=60)
  mixers=local,conv,global,global:impl=xla causal_mixers=local,local:impl=blocked
  if [[ $backend == gpu ]]; then
    mixers+=,dpa_full:implementation=cudnn causal_mixers+=,dpa_local:implementation=cudnn
  fi
  train=(--config=experiments/listops.py:size=full --config.train.steps=300
    --config.train.dtype=bfloat16 --config.data.num_train=9600 --config.data.num_val=320
    --config.data.num_test=320 --config.train.eval_every=100)
  limits=(90 130 50 110)  # tests, bench, bench_causal, train (see the header)
fi

stage devices 30 $PYTHON scripts/check_devices.py
stage tests "${limits[0]}" env JAX_DEFAULT_MATMUL_PRECISION=highest \
  $PYTHON -m pytest -o addopts= -q -s -p no:cacheprovider "${tests[@]}"
stage bench "${limits[1]}" $PYTHON benchmarks/run.py --mode=fwdbwd --dtype=bfloat16 "${bench[@]}" \
  --mixers=$mixers --out="$OUT/fwdbwd_bf16_$slug.jsonl"
if [[ -n $causal_mixers ]]; then
  stage bench_causal "${limits[2]}" $PYTHON benchmarks/run.py --mode=fwdbwd --dtype=bfloat16 \
    --causal "${bench[@]/--lengths=4096,8192,16384,32768/--lengths=8192,32768}" \
    --mixers=$causal_mixers --out="$OUT/fwdbwd_bf16_causal_$slug.jsonl"
fi
stage train "${limits[3]}" $PYTHON scripts/train.py "${train[@]}" --workdir="$work/listops"

timeout --kill-after=3 "$REPORT_RESERVE" \
  $PYTHON scripts/accelerator_report.py --work="$work" --mode=$mode --run="$work/listops" \
  --bench="$OUT/fwdbwd_bf16_$slug.jsonl" --bench="$OUT/fwdbwd_bf16_causal_$slug.jsonl" \
  --budget="$BUDGET" --out="$OUT/accelerator_$slug.json"
