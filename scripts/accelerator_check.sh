#!/usr/bin/env bash
# The first minutes on a GPU or TPU machine (under 8 minutes; every stage has a time limit):
#
#   bash scripts/accelerator_check.sh          # on the accelerator, from the repository root
#   bash scripts/accelerator_check.sh --cpu    # a tiny smoke version on CPU (the tests run it)
#   OUT=/tmp/x PYTHON=.venv/bin/python bash scripts/accelerator_check.sh
#
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

stage() {  # stage NAME SECONDS COMMAND...: run with a time limit, log, record exit code and time
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  echo "== $name (at most ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@" >"$work/$name.log" 2>&1
  rc=$?
  echo "$name $rc $(($(date +%s) - start))" >>"$work/stages"
  tail -n 4 "$work/$name.log"
  echo "== $name: exit $rc after $(($(date +%s) - start))s (log $work/$name.log)"
}

$PYTHON -c "import jax; d = jax.devices(); print(jax.default_backend(), d[0].device_kind, len(d), sep='\t')" \
  >"$work/device.txt" || { echo "error: JAX does not start; see above" >&2; exit 2; }
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
  limits=(100 150 60 110)  # tests, bench, bench_causal, train: 7.5 minutes at most
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

$PYTHON scripts/accelerator_report.py --work="$work" --mode=$mode --run="$work/listops" \
  --bench="$OUT/fwdbwd_bf16_$slug.jsonl" --bench="$OUT/fwdbwd_bf16_causal_$slug.jsonl" \
  --out="$OUT/accelerator_$slug.json"
