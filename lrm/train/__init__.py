"""The one trainer, its checkpoints and the evaluator (entry points: ``scripts/train.py``,
``scripts/evaluate.py``); the run they act on (task, model, optimizer) is ``lrm/run.py``.

  loop.py        run(config, workdir): prepare (all input checks) then train; resume; finish
  step.py        the jitted train/eval steps on a state pytree (grad accumulation, bfloat16)
  optim.py       AdamW with a weight-decay mask, warm-up + cosine / rsqrt / constant, clipping
  sharding.py    the data-parallel mesh, batch placement, multi-host initialisation
  checkpoint.py  orbax CheckpointManager: newest N + best, atomic saves
  evaluate.py    the metrics of one split for a model state (lrm/run.py restores checkpoints)
  rundir.py      the run directory layout, config.json conflicts, results.json helpers
  guard.py       one writer per workdir (lock), exit codes, SIGTERM handling, I/O failures
  malloc.py      the glibc malloc tunables for CPU runs (train.py and the benchmarks)
  monitor.py     metrics.jsonl, TensorBoard, the start/progress/validation/closing lines
  console.py     stdout for progress, stderr for warnings, both teed into train.log
  timing.py      tokens per second (compilation left out), time left (evaluations included)
  plots.py       plots/curves.png: loss (train + validation), main metric, chance levels
  tracking.py    the config as TensorBoard text and hyperparameters; optional wandb
  trace.py       train.profile_steps: a jax.profiler trace of chosen steps
  extend.py      new run, resume or --extend (to a larger train.steps); warm-up warning
"""
