"""Hybrid stacks written with ``+`` train end to end: each trains a couple of steps on the recall
config (its small size, shrunk data), in process; one goes through ``scripts/train.py`` as a
user would run it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import finish

from lrm.mixers import presets
from lrm.train import loop

REPO = Path(__file__).resolve().parents[1]
HYBRIDS = [
  "conv+conv+global",
  "gated_conv+gated_conv+global",
  "local+local+global",
  "conv+bigbird",
  "local+bigbird",
  "hyena+local_global",
]
SHRINK = {  # a few seconds each: tiny data, two steps
  "data.num_train": 64,
  "data.num_val": 16,
  "data.num_test": 16,
  "train.steps": 2,
  "train.batch_size": 8,
  "train.eval_batch_size": 16,
  "train.eval_every": 2,
  "train.checkpoint_every": 2,
}


def recall_config(arg: str):
  spec = importlib.util.spec_from_file_location("cfg_recall", REPO / "experiments" / "recall.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  cfg = module.get_config(arg)
  cfg.update_from_flattened_dict(SHRINK)
  return cfg


@pytest.mark.usefixtures("fast_compile")
@pytest.mark.parametrize("hybrid", HYBRIDS)
def test_hybrid_trains_end_to_end(hybrid, tmp_path, data_cache):
  cfg = recall_config(f"mixer={hybrid},size=small")
  parts = presets.parts(hybrid)
  names = [s["name"] for s in cfg.model.mixer]
  assert names == ["conv", *(presets.spec(p)["name"] for p in parts)]  # short conv, then parts
  res = loop.run(cfg, tmp_path)
  assert np.isfinite(res["final"]["test"][res["main_metric"]])
  saved = json.loads((tmp_path / "config.json").read_text())
  assert len(saved["model"]["mixer"]) == cfg.model.depth == len(parts) + 1
  if "bigbird" in hybrid:  # the pattern follows the run's seed, recorded with the run
    assert saved["model"]["mixer"][-1]["seed"] == saved["seed"]


def test_conv_global_trains_from_the_command_line(cli, tmp_path):
  overrides = [f"--config.{k}={v}" for k, v in SHRINK.items()]
  proc = cli(
    "train.py",
    "--config=experiments/recall.py:mixer=conv+global,size=small",
    f"--workdir={tmp_path / 'run'}",
    *overrides,
  )
  rc, out, err = finish(proc)
  assert rc == 0, err[-3000:]
  results = json.loads((tmp_path / "run" / "results.json").read_text())
  assert np.isfinite(results["final"]["test"]["accuracy"])
