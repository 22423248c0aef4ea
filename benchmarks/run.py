"""Speed, memory and FLOPs of every mixer as the sequence grows (one fresh process per cell).

  python benchmarks/run.py --out=results/bench/main.jsonl \
      [--mixers=local,conv:impl=fft,dpa_local,conv+global] [--lengths=1024,...,32768] \
      [--dim=256 --heads=4 --window=128 --batch=1] [--mode=fwd|fwdbwd] [--dtype=float32] \
      [--reference=local]
  python benchmarks/run.py --train --out=results/bench/train.jsonl   # lrm's training step
  python benchmarks/run.py --malloc=both ...                         # glibc malloc A/B
  python benchmarks/run.py --process=both ...      # + each label's lengths in one process

Labels are mixer presets (``lrm.mixers.presets``) with ``:key=value`` overrides, joined with
``+`` for a hybrid stack; the default is every preset, the dense oracle of every mixer that
has one and the baselines of ``benchmarks/baselines.py``. ``--train`` times one step of lrm's
own trainer on the model of ``--train_config`` (default: LRA ListOps, ``size=full``) with
each label as its mixer. Writes one JSON line per measurement, then ``<out>.md`` (tables,
ratios, growth per doubling) and ``<out>.png`` next to it; ``benchmarks/table.py`` rebuilds
the tables from JSONL files.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: import ``benchmarks`` from the repository root
  sys.path[0] = str(Path(__file__).resolve().parents[1])

from absl import app, flags  # noqa: E402

from benchmarks import cells, report, runner  # noqa: E402

_OUT = flags.DEFINE_string("out", None, "output JSONL file (the .md and .png go next to it)")
_MIXERS = flags.DEFINE_list(
  "mixers",
  None,
  "labels, e.g. local,conv:impl=fft,dpa_local,conv+global "
  "(default: every preset, the dense oracles and the baselines)",
)
_LENGTHS = flags.DEFINE_list("lengths", "1024,2048,4096,8192,16384,32768", "sequence lengths")
_DIM = flags.DEFINE_integer("dim", 256, "model width D")
_HEADS = flags.DEFINE_integer("heads", 4, "attention heads")
_WINDOW = flags.DEFINE_integer("window", 128, "window radius w (conv kernels are 2w+1)")
_BLOCK = flags.DEFINE_integer("block", 64, "block size of random/BigBird attention")
_BATCH = flags.DEFINE_integer("batch", 1, "batch size")
_MODE = flags.DEFINE_enum("mode", "fwdbwd", cells.MODES, "forward only, or forward+backward")
_DTYPE = flags.DEFINE_enum("dtype", "float32", cells.DTYPES, "parameter and activation dtype")
_CAUSAL = flags.DEFINE_bool("causal", False, "build causal mixers")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed runs per cell (the median is reported)")
_WARMUP = flags.DEFINE_integer("warmup", 1, "untimed runs after compiling")
_MALLOC = flags.DEFINE_enum(
  "malloc",
  "auto",
  ["auto", "default", "tuned", "both"],
  "glibc malloc tunables of each cell (auto: tuned on CPU)",
)
_REFERENCE = flags.DEFINE_list(
  "reference", [], "labels every windowed label is compared with (default: with each other)"
)
_PROCESS = flags.DEFINE_enum(
  "process",
  "fresh",
  ["fresh", "shared", "both"],
  "fresh: each cell in its own process; shared: all lengths of a label in one process, "
  "alternating rounds (use --warmup=3 or more: the heap settles over the first rounds)",
)
_TRAIN = flags.DEFINE_bool("train", False, "time lrm's whole training step instead")
_TRAIN_CONFIG = flags.DEFINE_string(
  "train_config", cells.TRAIN_CONFIG, "experiment config (and variant) of --train"
)
_TRAIN_BATCH = flags.DEFINE_integer("train_batch", 4, "batch size of --train")
_TRAIN_LENGTH = flags.DEFINE_integer(
  "train_length", 0, "sequence length of --train (the data's max_len; 0: the config's)"
)
_TIMEOUT = flags.DEFINE_float("timeout", 900, "seconds before a cell is recorded as timeout")
_MEM = flags.DEFINE_float("mem_limit_gb", 0, "memory cap per cell (0: 85 percent of MemAvailable)")
_PEAK = flags.DEFINE_integer("peak_size", 2048, "n of the n^3 matmul that measures the peak")


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    print(f"error: unexpected arguments {argv[1:]}; options are --flags", file=sys.stderr)
    return 2
  if not _OUT.value:
    print("error: --out is required, e.g. --out=results/bench/main.jsonl", file=sys.stderr)
    return 2
  try:
    reach = dict(heads=_HEADS.value, window=_WINDOW.value, block=_BLOCK.value)
    labels = _MIXERS.value or cells.default_labels(dim=_DIM.value, **reach)
    common = dict(dtype=_DTYPE.value, repeats=_REPEATS.value, warmup=_WARMUP.value)
    if _TRAIN.value:
      todo = cells.train_cells(
        labels,
        window=_WINDOW.value,
        batch=_TRAIN_BATCH.value,
        config_arg=_TRAIN_CONFIG.value,
        length=_TRAIN_LENGTH.value,
        **common,
      )
    else:
      todo = cells.mixer_cells(
        labels,
        [int(v) for v in _LENGTHS.value],
        dim=_DIM.value,
        batch=_BATCH.value,
        mode=_MODE.value,
        causal=_CAUSAL.value,
        **reach,
        **common,
      )
    malloc = runner.resolve_malloc(_MALLOC.value)
  except (KeyError, ValueError, FileNotFoundError) as e:
    print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
    return 2
  limit = int(_MEM.value * 2**30) or int(0.85 * runner.mem_available_bytes())
  print(f"{len(todo)} cells x malloc {','.join(malloc)}; memory cap {limit / 2**30:.1f} GiB")
  common = dict(malloc=malloc, timeout=_TIMEOUT.value, mem_limit_bytes=limit, peak_size=_PEAK.value)
  records = []
  if _PROCESS.value in ("fresh", "both"):
    records += runner.run_cells(todo, _OUT.value, **common)
  if _PROCESS.value in ("shared", "both"):
    if _TRAIN.value:
      print("error: --train cells run in fresh processes only", file=sys.stderr)
      return 2
    records += runner.run_shared(todo, _OUT.value, append=bool(records), **common)
  md, png = report.write_report(records, _OUT.value, _REFERENCE.value)
  print()
  print(report.markdown(records, brief=True))
  for line in report.ratios(records, _REFERENCE.value) + report.growth(records):
    print(line)
  print(f"wrote {_OUT.value}, {md}, {png}")
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
