"""Studies: grids of ordinary training runs that compare mixers at matched budgets.

A study file (``experiments/studies/<name>.py``) defines ``get_study(scale) -> dict``::

  dict(
    name="local_vs_conv",
    question="...",                      # one paragraph, printed at the top of REPORT.md
    seeds=[0, 1, 2],
    rules=["params", "flops"],           # budget-matching rules (lrm/analysis/budget.py)
    heads=4,                             # attention heads / dynamic-conv heads
    tasks={
      "recall": dict(
        config="experiments/recall.py", arg="size=small",     # an ordinary experiment config
        overrides={"train.steps": 300},                        # flattened config overrides
        mixers=["conv", "local", "conv+conv+global"],         # lrm.mixers.presets names
        windows=[4, 16],                                       # radius w (conv: same field)
        reference=dict(mixer="local", window=4),               # budget = this model's cost
        # optional per task: rules=[...], seeds=[...], block=<BigBird block size>
      ),
    },
    content=dict(task="recall", window=4, mixers=["conv", "local"]),  # kernel-variation panel
  )

Modules, each with one job:

- ``grid``: what to run: the study file, its cells (``Cell`` names each cell's run directory
  ``<out>/runs/<task>/<mixer>[-w<w>]/<rule>/seed<s>``) and each cell's budget-matched config.
- ``run``: trains every unfinished cell with the ordinary trainer, then measures the trained
  model (costs, receptive field, effective kernels of the tested layers) into its cell.json.
- ``report``: REPORT.md, summary.json and the plots, from the JSON files alone (it imports
  neither JAX nor flax, so a report can be rewritten anywhere).

Every cell is an ordinary run directory (config.json, checkpoints, results.json), so any cell
can be re-evaluated with ``scripts/evaluate.py`` or resumed; finished cells are skipped when
the study is rerun.
"""

from __future__ import annotations

import importlib
from typing import Any

# Re-exported lazily: importing ``lrm.study.report`` must not import the JAX side.
_EXPORTS = {
  "Cell": "grid",
  "expand": "grid",
  "load_module": "grid",
  "load_study": "grid",
  "run_study": "run",
  "write_report": "report",
}


def __getattr__(name: str) -> Any:
  if name in _EXPORTS:
    return getattr(importlib.import_module(f"lrm.study.{_EXPORTS[name]}"), name)
  raise AttributeError(f"module 'lrm.study' has no attribute '{name}'")
