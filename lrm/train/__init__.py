"""The one trainer, its checkpoints and the evaluator (entry points: ``scripts/train.py``,
``scripts/evaluate.py``); the run they act on (task, model, optimizer) is ``lrm/run.py``.

  loop.py        run(config, workdir): prepare (all input checks; new run, resume or
                 --extend; warm-up warning), then the loop: set-up, resume, the steps with
                 their evaluation and save points, finish (final test, results.json, plots)
  step.py        the jitted train/eval steps on a state pytree (grad accumulation, bfloat16);
                 evaluate: the metrics of one split for a model state (the trainer's and
                 lrm/run.py's, which restores checkpoints)
  optim.py       AdamW with a weight-decay mask, warm-up + cosine / rsqrt / constant, clipping
  checkpoint.py  orbax CheckpointManager: newest N + best, atomic saves
  rundir.py      the run directory layout, config.json conflicts, results.json helpers; what
                 protects it: one writer (lock), exit codes, SIGTERM handling, I/O failures
  runtime.py     the process: its multi-process layout from the environment (``python -m
                 lrm.train.runtime`` prints it), glibc malloc tunables for CPU runs, the
                 data-parallel mesh, batch placement, multi-host initialisation
  report.py      what a run reports: metrics.jsonl, TensorBoard (config, hyperparameters) and
                 wandb; the start/progress/validation/closing lines; tokens per second and
                 time left; plots/curves.png; train.profile_steps' profiler trace
  console.py     stdout for progress, stderr for warnings, both teed into train.log
  export.py      the real train step lowered for a platform this machine need not have (TPU,
                 GPU): the kernel of each layer, the StableHLO (scripts/export_step.py)

The modules before this layout (``lrm.train.guard``, ``lrm.train.monitor``, ...) still
resolve, to the module that holds their contents now, with a ``DeprecationWarning``.
"""

import importlib
import types
import warnings

MOVED = {  # old module -> the module that holds its contents now
  "evaluate": "step",
  "extend": "loop",
  "finish": "loop",
  "guard": "rundir",
  "launch": "runtime",
  "malloc": "runtime",
  "monitor": "report",
  "plots": "report",
  "sharding": "runtime",
  "timing": "report",
  "trace": "report",
  "tracking": "report",
}


def __getattr__(name: str) -> types.ModuleType:
  if name not in MOVED:
    raise AttributeError(f"module 'lrm.train' has no attribute '{name}'")
  new = f"lrm.train.{MOVED[name]}"
  warnings.warn(f"lrm.train.{name} is now {new}", DeprecationWarning, stacklevel=2)
  return importlib.import_module(new)
