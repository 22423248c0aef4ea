"""Speed, memory and FLOPs of every mixer as the sequence grows (one fresh process per cell).

  python scripts/benchmark.py --out=results/bench/main.jsonl \
      [--mixers=local,conv:impl=fft,dpa_local] [--lengths=1024,...,32768] \
      [--dim=256 --heads=4 --window=128 --batch=1] [--mode=fwd|fwdbwd] [--dtype=float32]
  python scripts/benchmark.py --train --out=results/bench/train.jsonl   # whole training step
  python scripts/benchmark.py --malloc=both ...                         # glibc malloc A/B

Writes one JSON line per measurement, then ``<out>.md`` (tables, ratios, targets) and
``<out>.png`` next to it. ``scripts/bench_table.py`` rebuilds the tables from JSONL files.
"""

from __future__ import annotations

import sys

from absl import app, flags

from lrm.analysis import bench_report, bench_runner
from lrm.analysis.benchmark import DTYPES, MODES

_OUT = flags.DEFINE_string("out", None, "output JSONL file (the .md and .png go next to it)")
_MIXERS = flags.DEFINE_list(
  "mixers",
  None,
  "mixer labels, e.g. local,conv:impl=fft,dpa_local "
  "(default: every registered mixer, dense oracles and baselines)",
)
_LENGTHS = flags.DEFINE_list("lengths", "1024,2048,4096,8192,16384,32768", "sequence lengths")
_DIM = flags.DEFINE_integer("dim", 256, "model width D")
_HEADS = flags.DEFINE_integer("heads", 4, "attention heads")
_WINDOW = flags.DEFINE_integer("window", 128, "window radius w (conv kernels are 2w+1)")
_BLOCK = flags.DEFINE_integer("block", 64, "block size of random/BigBird attention")
_BATCH = flags.DEFINE_integer("batch", 1, "batch size")
_MODE = flags.DEFINE_enum("mode", "fwdbwd", MODES, "forward only, or forward+backward")
_DTYPE = flags.DEFINE_enum("dtype", "float32", DTYPES, "parameter and activation dtype")
_CAUSAL = flags.DEFINE_bool("causal", False, "build causal mixers")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed runs per cell (the median is reported)")
_WARMUP = flags.DEFINE_integer("warmup", 1, "untimed runs after compiling")
_MALLOC = flags.DEFINE_enum(
  "malloc",
  "auto",
  ["auto", "default", "tuned", "both"],
  "glibc malloc tunables of each cell (auto: tuned on CPU)",
)
_TRAIN = flags.DEFINE_bool("train", False, "time a whole training step at the ListOps size")
_TRAIN_BATCH = flags.DEFINE_integer("train_batch", 4, "batch size of --train")
_TRAIN_LENGTH = flags.DEFINE_integer("train_length", 2000, "sequence length of --train")
_TIMEOUT = flags.DEFINE_float("timeout", 900, "seconds before a cell is recorded as timeout")
_MEM = flags.DEFINE_float("mem_limit_gb", 0, "memory cap per cell (0: 85 percent of MemAvailable)")
_PEAK = flags.DEFINE_integer("peak_size", 2048, "n of the n^3 matmul that measures the peak")


def main(argv: list[str]) -> int:
  del argv
  if not _OUT.value:
    print("error: --out is required, e.g. --out=results/bench/main.jsonl", file=sys.stderr)
    return 2
  try:
    labels = _MIXERS.value or bench_runner.default_mixers()
    lengths = [int(v) for v in _LENGTHS.value]
    common = dict(
      window=_WINDOW.value,
      dtype=_DTYPE.value,
      block=_BLOCK.value,
      repeats=_REPEATS.value,
      warmup=_WARMUP.value,
    )
    if _TRAIN.value:
      cells = bench_runner.train_cells(
        labels, batch=_TRAIN_BATCH.value, length=_TRAIN_LENGTH.value, **common
      )
    else:
      cells = bench_runner.mixer_cells(
        labels,
        lengths,
        dim=_DIM.value,
        heads=_HEADS.value,
        batch=_BATCH.value,
        mode=_MODE.value,
        causal=_CAUSAL.value,
        **common,
      )
    malloc = bench_runner.resolve_malloc(_MALLOC.value)
  except (KeyError, ValueError) as e:
    print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
    return 2
  limit = int(_MEM.value * 2**30) or int(0.85 * bench_runner.mem_available_bytes())
  print(f"{len(cells)} cells x malloc {','.join(malloc)}; memory cap {limit / 2**30:.1f} GiB")
  records = bench_runner.run_cells(
    cells,
    _OUT.value,
    malloc=malloc,
    timeout=_TIMEOUT.value,
    mem_limit_bytes=limit,
    peak_size=_PEAK.value,
  )
  md, png = bench_report.write_report(records, _OUT.value)
  print()
  print(bench_report.markdown(records, brief=True))
  for line in bench_report.ratios(records):
    print(line)
  print(bench_report.targets_text(records))
  print(f"wrote {_OUT.value}, {md}, {png}")
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
