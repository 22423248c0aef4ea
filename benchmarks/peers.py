"""lrm's local and BigBird attention and its RG-LRU (``rglru``) side by side with
implementations no one here wrote.

  python benchmarks/peers.py --out=results/bench/peers_cpu.jsonl [--lengths=4096,16384] \
      [--rounds=7] [--peers=dpa_local,lucidrains,flex,hf_bigbird,recurrentgemma]
  python benchmarks/peers.py --out=results/bench/peers_cpu.jsonl --rebuild   # .md/.png again

One process, one length at a time: every contestant is built from the same weights (an lrm
mixer's, copied: QKV and output projections, or every weight of the RG-LRU block), its output
(and input gradient) is compared with lrm's (max abs error printed and recorded), then, after
three warm-up rounds, the contestants are timed in alternating rounds (each round calls each
once, with a short pause between calls so that one library's idle threads do not spin while
the next runs), so load on the machine hits all alike. The load average is recorded before
and after each length, and the matmul peak in the same run.
Peers are optional (``pip install -e ".[peers]"``; recurrentgemma as ``peer_impls.py`` says;
never a test dependency): one that is not installed or cannot run is skipped with the reason.
``rglru`` is built causal (recurrentgemma's block has no bidirectional form; ``lrm rglru`` runs
only beside ``recurrentgemma``), the attention mixers bidirectional. Writes JSON lines,
``<out>.md`` (times and each peer's ratio to lrm: > 1 means lrm is faster) and ``<out>.png``.
Contestants and what each computes: ``benchmarks/peer_impls.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: import ``benchmarks`` from the repository root
  sys.path[0] = str(Path(__file__).resolve().parents[1])

import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks import peer_impls as P  # noqa: E402
from benchmarks import runner, worker  # noqa: E402
from lrm import mixers  # noqa: E402
from lrm.mixers import presets  # noqa: E402
from lrm.train.runtime import TUNED_MALLOC  # noqa: E402

PEERS = ("dpa_local", "lucidrains", "flex", "hf_bigbird", "recurrentgemma")
_OUT = flags.DEFINE_string("out", "results/bench/peers_cpu.jsonl", "output JSONL")
_LENGTHS = flags.DEFINE_list("lengths", "4096,16384", "sequence lengths")
_PEERS = flags.DEFINE_list("peers", ",".join(PEERS), "peers to run")
_ROUNDS = flags.DEFINE_integer("rounds", 7, "timed alternating rounds (the median is reported)")
_DIM = flags.DEFINE_integer("dim", 256, "model width D")
_HEADS = flags.DEFINE_integer("heads", 4, "attention heads")
_WINDOW = flags.DEFINE_integer("window", 128, "local window radius w")
_BLOCK = flags.DEFINE_integer("block", 64, "BigBird block size")
_PAUSE = flags.DEFINE_float("pause", 0.2, "seconds of rest before each timed call")
_MALLOC = flags.DEFINE_enum("malloc", "tuned", ["tuned", "default"], "glibc malloc tunables")
_MEM = flags.DEFINE_float("mem_cap_gb", 0, "skip a JAX peer needing more (0: 60% MemAvailable)")
_REBUILD = flags.DEFINE_bool("rebuild", False, "only rewrite <out>.md and .png from <out> (JSONL)")


def loadavg() -> list[float]:
  return [round(v, 2) for v in os.getloadavg()]


def contestants(L: int, peers: list[str], mem_cap: int) -> tuple[list[P.Entry], list[dict]]:
  """The entries at length L (lrm first in each group) and the skipped peers with reasons."""
  D, N, w = _DIM.value, _HEADS.value, _WINDOW.value
  reach = dict(window=w, heads=N, block=_BLOCK.value, causal=False)
  build = lambda name: mixers.build(  # noqa: E731
    presets.spec(name, **reach) | {"rotary": False}, dim=D, causal=False, rngs=nnx.Rngs(0)
  )
  local, bird = build("local"), build("bigbird")
  rglru = mixers.build(presets.spec("rglru", **reach), dim=D, causal=True, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  x = rng.standard_normal((1, L, D), dtype=np.float32)
  ct = rng.standard_normal((1, L, D), dtype=np.float32)
  wl, wb = P.Weights.of(local), P.Weights.of(bird)
  todo = [
    ("lrm local", lambda: P.lrm_entry("lrm local", local, x, ct, "fwdbwd")),
    ("dpa_local", lambda: P.dpa_local(local, x, ct, "fwdbwd", mem_cap)),
    ("lucidrains", lambda: P.lucidrains(N, w, wl, x, ct, "fwdbwd", mem_cap)),
    ("lrm local fwd", lambda: P.lrm_entry("lrm local", local, x, ct, "fwd")),
    ("flex", lambda: P.flex(N, w, wl, x, ct, "fwd", mem_cap)),
    ("lrm bigbird", lambda: P.lrm_entry("lrm bigbird", bird, x, ct, "fwdbwd")),
    ("hf_bigbird", lambda: P.hf_bigbird(bird, wb, x, ct, "fwdbwd", mem_cap)),
    ("lrm rglru", lambda: P.lrm_entry(f"lrm rglru {rglru.impl}", rglru, x, ct, "fwdbwd")),
    ("recurrentgemma", lambda: P.recurrentgemma(rglru, x, ct, "fwdbwd", mem_cap)),
  ]
  entries, skipped = [], []
  for key, make in todo:
    if not key.startswith("lrm") and key not in peers:
      continue
    if key == "lrm local fwd" and "flex" not in peers:
      continue
    if key == "lrm rglru" and "recurrentgemma" not in peers:
      continue
    try:
      entries.append(make())
    except P.Skip as e:
      skipped.append({"peer": key, "status": "skipped", "reason": str(e), "length": L})
      print(f"  skip {key}: {e}")
  return entries, skipped


def compare(entries: list[P.Entry]) -> dict[str, dict]:
  """Max abs error of each entry's output (and input gradient) against lrm's of its group."""
  ref: dict[str, P.Entry] = {}
  ys: dict[str, np.ndarray] = {}
  out = {}
  for e in entries:
    ys[e.name] = y = e.forward()
    base = ref.setdefault(e.group, e)
    err = {"max_abs_err_y": float(np.abs(y - ys[base.name]).max()), "reference": base.name}
    if e.mode == "fwdbwd" and e is not base and e.grad_x and base.grad_x:
      err["max_abs_err_dx"] = float(np.abs(e.grad_x() - base.grad_x()).max())
    out[f"{e.name}|{e.mode}"] = err
  return out


def time_rounds(entries: list[P.Entry], rounds: int, pause: float) -> dict[str, list[float]]:
  for _ in range(3):  # warm-up rounds: compiles, then the heap's first-touch page faults
    for e in entries:
      e.step()
  times: dict[str, list[float]] = {f"{e.name}|{e.mode}": [] for e in entries}
  for _ in range(rounds):
    for e in entries:
      time.sleep(pause)
      t0 = time.perf_counter()
      e.step()
      times[f"{e.name}|{e.mode}"].append(1e3 * (time.perf_counter() - t0))
  return times


def measure_length(L: int, peers: list[str], mem_cap: int, peak: float) -> list[dict]:
  print(f"L={L}: building and compiling")
  entries, records = contestants(L, peers, mem_cap)
  errs = compare(entries)
  before = loadavg()
  times = time_rounds(entries, _ROUNDS.value, _PAUSE.value)
  after = loadavg()
  medians = {k: statistics.median(v) for k, v in times.items()}
  base = {}
  for e in entries:
    key = f"{e.name}|{e.mode}"
    ref_key = f"{errs[key]['reference']}|{e.mode}"
    base.setdefault((e.group, e.mode), medians[ref_key])
    rec = dict(peer=e.name, group=e.group, framework=e.framework, version=e.version, mode=e.mode)
    rec["causal"] = e.causal
    rec |= dict(length=L, status="ok", times_ms=times[key], median_ms=medians[key])
    rec |= dict(ratio_to_lrm=medians[key] / medians[ref_key], load_before=before, load_after=after)
    rec |= errs[key] | {"peak_gflops": peak}
    if e.flops_fwd:
      flops = e.flops_fwd * (3 if e.mode == "fwdbwd" else 1)
      rec["frac_peak_impl"] = flops / (medians[key] / 1e3) / (peak * 1e9)
    if e.xla_bytes is not None:
      rec["xla_total_bytes"] = e.xla_bytes
    records.append(rec)
    print(
      f"  {e.name:34s} {e.mode:6s} {medians[key]:8.1f} ms  x{rec['ratio_to_lrm']:.2f} of lrm"
      f"  err y {rec['max_abs_err_y']:.1e}"
      + (f" dx {rec['max_abs_err_dx']:.1e}" if "max_abs_err_dx" in rec else "")
    )
  print(f"  load average before {before}, after {after}")
  return records


def markdown(records: list[dict]) -> str:
  ok = [r for r in records if r.get("status") == "ok"]
  lengths = sorted({r["length"] for r in records})
  peak = next((r["peak_gflops"] for r in ok), 0)
  load = sorted({tuple(r["load_before"]) for r in ok} | {tuple(r["load_after"]) for r in ok})
  info = ok[0].get("machine", {}) if ok else {}
  lines = [
    f"Machine: {info.get('cpu_model', '?')}, {info.get('cpu_affinity', '?')} cores; "
    f"matmul peak in this run {peak:.0f} GFLOP/s (2048^3 float32); malloc "
    f"{'tuned' if info.get('glibc_tunables') else 'default'}.",
    f"Load average (1, 5, 15 min) around the timed rounds: {', '.join(map(str, load))}.",
    "",
    "Median ms over alternating rounds; in brackets the time relative to lrm's mixer in the "
    "same group and mode (< 1: the peer is faster); max abs error of the output (and input "
    "gradient) against lrm's.",
    "",
    "| group | mode | implementation | "
    + " | ".join(f"L={L}" for L in lengths)
    + " | max abs err |",
    "|---|---|---|" + "---:|" * len(lengths) + "---|",
  ]
  names = list(dict.fromkeys((r["group"], r["mode"], r["peer"]) for r in ok))
  by_key = {(r["group"], r["mode"], r["peer"], r["length"]): r for r in ok}
  for group, mode, peer in names:
    cells, errs = [], []
    for L in lengths:
      r = by_key.get((group, mode, peer, L))
      cells.append("" if r is None else f"{r['median_ms']:.0f} ({r['ratio_to_lrm']:.2f}x)")
      if r is not None and r["peer"] != r["reference"]:
        e = f"{r['max_abs_err_y']:.0e}" + (
          f" / {r['max_abs_err_dx']:.0e}" if "max_abs_err_dx" in r else ""
        )
        errs.append(e)
    ver = next(r["version"] for r in ok if r["peer"] == peer)
    lines.append(
      f"| {group} | {mode} | {peer} ({ver}) | " + " | ".join(cells) + f" | {'; '.join(errs)} |"
    )
  causal = sorted({r["group"] for r in ok if r.get("causal")})
  if causal:
    lines.append(f"\nCausal: {', '.join(causal)}; the other groups are bidirectional.")
  skipped = {(r["peer"], r["reason"]) for r in records if r.get("status") != "ok"}
  for peer, reason in sorted(skipped):
    lines.append(f"\nSkipped {peer}: {reason}")
  frac = [r for r in ok if "frac_peak_impl" in r and r["mode"] == "fwdbwd"]
  if frac:
    parts = [f"{r['peer']} L={r['length']}: {100 * r['frac_peak_impl']:.1f}%" for r in frac]
    lines.append("\n% of the matmul peak (FLOPs the kernel executes): " + ", ".join(parts))
  return "\n".join(lines) + "\n"


def plot(records: list[dict], path: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  ok = [r for r in records if r.get("status") == "ok"]
  panels = list(dict.fromkeys((r["group"], r["mode"]) for r in ok))
  compared = [p for p in panels if len({r["peer"] for r in ok if (r["group"], r["mode"]) == p}) > 1]
  panels = (
    compared or panels
  )  # a group with lrm alone has nothing to compare: drawn only if all are
  fig, axes = plt.subplots(
    1, max(len(panels), 1), figsize=(5 * max(len(panels), 1), 4), squeeze=False
  )
  for ax, (group, mode) in zip(axes[0], panels, strict=False):
    for peer in dict.fromkeys(r["peer"] for r in ok if (r["group"], r["mode"]) == (group, mode)):
      rs = sorted(
        (r for r in ok if (r["group"], r["mode"], r["peer"]) == (group, mode, peer)),
        key=lambda r: r["length"],
      )
      ax.plot([r["length"] for r in rs], [r["median_ms"] for r in rs], marker="o", label=peer)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_title(f"{group}, {mode}", fontsize=9)
    ax.set_xlabel("sequence length L")
    ax.set_ylabel("median ms")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
    return 2
  if _REBUILD.value:
    with open(_OUT.value) as f:
      write_report([json.loads(line) for line in f if line.strip()], _OUT.value)
    return 0
  unknown = set(_PEERS.value) - set(PEERS)
  if unknown:
    print(
      f"error: unknown peers {sorted(unknown)}; choose from {', '.join(PEERS)}", file=sys.stderr
    )
    return 2
  want = TUNED_MALLOC if _MALLOC.value == "tuned" else ""
  if os.environ.get("GLIBC_TUNABLES", "") != want:  # glibc reads them only at start-up
    env = runner.malloc_env(_MALLOC.value)
    os.execve(sys.executable, [sys.executable, *sys.argv], env)
  mem_cap = int(_MEM.value * 2**30) or int(0.6 * runner.mem_available_bytes())
  peak = worker.measure_peak(dict(size=2048, dtype="float32", repeats=10, warmup=2))["peak_gflops"]
  print(f"matmul peak {peak:.1f} GFLOP/s; load average {loadavg()}")
  machine = worker.machine_info() | {"torch": P.version("torch")}
  records = []
  for L in sorted(int(v) for v in _LENGTHS.value):
    records += [r | {"machine": machine} for r in measure_length(L, _PEERS.value, mem_cap, peak)]
  common = dict(dim=_DIM.value, heads=_HEADS.value, window=_WINDOW.value, block=_BLOCK.value)
  common |= dict(batch=1, dtype="float32", rounds=_ROUNDS.value)
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  with open(_OUT.value, "w") as f:
    for r in records:
      f.write(json.dumps(common | r) + "\n")
  md = write_report(records, _OUT.value)
  print("\n" + md + f"\nwrote {_OUT.value} and its .md, .png")
  return 0


def write_report(records: list[dict], jsonl_path: str) -> str:
  """``<stem>.md`` (the markdown, returned) and ``<stem>.png`` next to the JSONL."""
  stem = os.path.splitext(jsonl_path)[0]
  md = markdown(records)
  Path(stem + ".md").write_text(md)
  plot(records, stem + ".png")
  return md


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
