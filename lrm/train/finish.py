"""The end of a run: test metrics of the final and the best checkpoints, results.json, plots.

Called by ``lrm.train.loop`` once training reached its last step (or a resumed run finds it
already there). ``train_time_s`` in results.json is the time spent in training steps only:
compilation (each session's first step) and evaluation are left out; ``wall_time_s`` is
everything, summed over sessions.
"""

from __future__ import annotations

from typing import Any

import jax

from lrm.run import Run
from lrm.train import rundir
from lrm.train.checkpoint import Checkpoints
from lrm.train.evaluate import evaluate
from lrm.train.guard import Interrupted, Preemption
from lrm.train.monitor import Monitor


def finish(
  r: Run,
  state: dict,
  ckpts: Checkpoints,
  meta: dict,
  monitor: Monitor,
  final_val: dict | None,
  step: int,
  preempt: Preemption,
) -> dict[str, Any]:
  """Test metrics of the final and best checkpoints, results.json and the plots. A SIGTERM
  here stops before results.json is written (raising ``Interrupted``); a rerun evaluates
  again from the saved checkpoints."""
  task, tc, wd, steps = r.task, r.config.train, r.workdir, r.steps

  def test(model_state: Any, split: str = "test") -> dict[str, float]:
    out = evaluate(
      steps,
      model_state,
      task.dataset(split),
      batch_size=tc.eval_batch_size,
      note=monitor.message,
      stop=preempt.is_set,
    )
    if out is None:
      ckpts.close()
      monitor.close()
      raise Interrupted(
        f"stopped by SIGTERM during the final evaluation; training is saved at step {step} in "
        f"{wd}; rerun the same command to evaluate and write results.json"
      )
    return out

  if final_val is None:  # resumed a run whose training had finished
    final_val = test(state["model"], "validation")
  final = {"step": step, "validation": final_val, "test": test(state["model"])}
  best_step = ckpts.best_step()
  best = {"step": step, "metrics": final_val}
  if best_step is not None and best_step != step:
    best = {"step": best_step, "metrics": ckpts.metrics(best_step)}
    best_test = test(ckpts.restore(best_step, model=steps.abstract(steps.model_shape))["model"])
  else:
    best_test = final["test"]
  ckpts.close()
  monitor.log(step, "test", final["test"])
  results = {
    "task": r.config.task,
    "main_metric": task.main_metric,
    "final": final,
    "best": {"step": best["step"], "validation": best["metrics"], "test": best_test},
    **r.costs(),
    "impl": r.impls(),  # the kernel each layer ran (impl="auto" resolved)
    "tokens_per_s": meta.get("tokens", 0) / max(meta.get("train_time_s", 0.0), 1e-9),
    "train_time_s": meta.get("train_time_s", 0.0),
    "wall_time_s": meta.get("elapsed_s", 0.0),
    "devices": jax.device_count(),
    "processes": jax.process_count(),
    "config_hash": rundir.config_hash(r.plain),
    "versions": rundir.versions(),
    **({"extended": meta["extended"]} if meta.get("extended") else {}),
  }
  if jax.process_index() == 0:
    rundir.write_json(wd / "results.json", results)
    monitor.plot(r.plain, step, task.reference_levels())
  monitor.close()
  return results
