"""Studies: grids of ordinary training runs that compare mixers at matched budgets.

A study file (``experiments/studies/<name>.py``) defines ``get_study(scale) -> dict``::

  dict(
    name="local_vs_conv",
    question="...",                      # one paragraph, printed at the top of REPORT.md
    seeds=[0, 1, 2],
    rules=["params_non_embedding", "flops"],   # budget-matching rules (lrm/analysis/budget.py)
    rule_sizes={"flops": ["m"]},         # optional: a rule at some sizes only
    sizes={"s": 32, "m": 48, "l": 64},   # optional: the reference model's width per size
    lrs=[1e-3, 3e-3, 1e-2],              # optional: swept at the middle size, chosen on validation
    sweep_seeds=[0, 1],                  # optional: sweep at these seeds, choose on their mean
    lr_extend=dict(factor=2.0, rounds=2, down=True),  # optional: a rate beyond an edge winner
    comparisons=[dict(question="Q1", task="recall", a="local", b="conv",
                      rule="params_non_embedding", size="l")],   # pre-registered, paired by seed
    heads=4,                             # attention heads / dynamic-conv heads
    tasks={
      "recall": dict(
        config="experiments/recall.py", arg="size=small",     # an ordinary experiment config
        overrides={"train.steps": 300},                        # flattened config overrides
        mixers=["conv", "local", "conv+conv+global"],         # lrm.mixers.presets names
        windows=[4, 16],                                       # radius w (conv: same field)
        reference=dict(mixer="local", window=4),               # budget = this model's cost
        # optional per task: rules=[...], seeds=[...], block=<BigBird block size>,
        # more_seeds=[dict(mixers=["local"], seeds=[3, 4], sizes=["m"])]  (headline arms)
      ),
    },
    content=dict(tasks=["recall"], radius=6),  # kernel-variation panel (middle size)
    sections=lambda rows, out: [...],      # optional: REPORT.md lines after the answers
  )

Modules, each with one job:

- ``grid``: what to run: the study file, its cells (``Cell`` names each cell's run directory
  ``<out>/runs/<task>/<mixer>[-w<w>]/<rule>[/<size>][/lr<lr>]/seed<s>``) and each cell's
  budget-matched config.
- ``run``: trains every unfinished cell with the ordinary trainer (the learning-rate sweep
  first), then measures the trained model (costs, receptive field, effective kernels of the
  tested layers, XLA's FLOP count) into its cell.json.
- ``sweep``: reads the sweep's cells and chooses each arm's rate on the mean validation over
  its sweep seeds; ``extend`` adds a higher rate to an arm whose best is its highest (and,
  with ``down``, a lower one to an arm whose best is its lowest: ``lr_extend``).
- ``mad_score``: MAD's score (best run per setting, mean over settings, then tasks), the
  ``sections`` of ``experiments/studies/mad.py``.
- ``report`` (with ``tables``, ``plots``, ``verdicts``, ``stats``): REPORT.md, summary.json
  and the plots, from the JSON files alone (none imports JAX or flax, so a report can be
  rewritten anywhere).

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
