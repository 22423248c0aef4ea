"""A run directory written before the concepts regroup still evaluates and resumes the same.

``tests/data/legacy/run`` was made by lrm at commit dc52ccb (before ``lrm/mixers/`` and
``lrm/train/`` were regrouped) with ``scripts/train.py --config=tests/data/legacy/config.py``
(6 steps; local attention with rotary positions, a seeded BigBird pattern, hyena and a conv).
``expected/`` holds what that code then printed for it: ``scripts/evaluate.py`` of its best
and latest checkpoints, and the same directory extended to 12 steps (``--extend``): its
results.json, metrics.jsonl and a SHA-256 of every parameter array. Each was computed with
``JAX_DISABLE_MOST_OPTIMIZATIONS=1``, as the test subprocesses run. Its config.json predates
explicit run options (the encoder then added ``rotary=True`` to attention specs itself): the
saved config is compared after ``rundir.with_run_options`` writes them in.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO, finish, metric_records, read_params

LEGACY = REPO / "tests" / "data" / "legacy"
EXPECTED = LEGACY / "expected"

pytestmark = pytest.mark.slow


@pytest.fixture
def old_run(tmp_path: Path) -> Path:
  workdir = tmp_path / "legacy"
  shutil.copytree(LEGACY / "run", workdir)
  return workdir


@pytest.mark.parametrize("which", ["best", "latest"])
def test_an_old_checkpoint_evaluates_to_the_metrics_it_had(cli, old_run: Path, which: str):
  rc, out, err = finish(cli("evaluate.py", f"--workdir={old_run}", f"--checkpoint={which}"))
  assert rc == 0, err[-3000:]
  got = json.loads((old_run / f"eval_test_{which}.json").read_text())
  want = json.loads((EXPECTED / f"eval_test_{which}.json").read_text())
  assert got["step"] == want["step"]
  assert got["metrics"] == want["metrics"]


def test_an_old_run_extends_exactly_as_the_old_code_did(cli, old_run: Path):
  config = LEGACY / "config.py"
  rc, out, err = finish(
    cli("train.py", f"--config={config}:steps=12", f"--workdir={old_run}", "--extend")
  )
  assert rc == 0, err[-3000:]
  want_records = [json.loads(x) for x in (EXPECTED / "metrics_12.jsonl").read_text().splitlines()]
  for r in want_records:
    r.pop("tokens_per_s", None)
    r.pop("step_s", None)
  assert metric_records(old_run) == want_records
  got, want = (
    json.loads(p.read_text()) for p in (old_run / "results.json", EXPECTED / "results_12.json")
  )
  for key in ("final", "best", "params"):
    assert got[key] == want[key], key
  # the old encoder injected rotary=True behind the config; the run's config now spells it out
  # (so its hash differs from the old one, and the rest is the same run)
  specs = json.loads((old_run / "config.json").read_text())["model"]["mixer"]
  assert [s.get("rotary") for s in specs] == [True, True, None, None]
  assert specs[1]["seed"] == 3
  digests = {
    k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in read_params(old_run, 12).items()
  }
  assert digests == json.loads((EXPECTED / "params_12.json").read_text())
