"""The benchmark harness: speed, memory and FLOPs of lrm's mixers and of its training step.

Not part of the installed package (it imports ``lrm``, never the reverse); run it from a
checkout of the repository:

  python benchmarks/run.py --out=results/bench/main.jsonl [...]   # measure (one process/cell)
  python benchmarks/table.py results/bench/main.jsonl [...]       # tables from JSONL

  cells.py      labels -> mixer specs (presets), the default labels, cells, ratio pairs
  baselines.py  dpa_full, dpa_local, xla_conv: the baselines, registered as mixers here only
  runner.py     the parent: one fresh ``worker.py`` process per cell, malloc settings, JSONL
  worker.py     one cell: a mixer (or hybrid stack), lrm's training step, or the matmul peak
  report.py     markdown tables, ratios, growth per doubling of L, plots
"""
