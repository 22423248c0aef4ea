"""A run directory travels: copied to another path and read with another $LRM_DATA_CACHE
(as on another machine), it evaluates to the same metrics and resumes to the same end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, finish, read_params

from lrm.run import vocab_content

CONFIG = "task=listops,steps=4,ckpt=2"  # data generated into the cache, vocab.json names it


@pytest.mark.slow
def test_moved_run_with_another_cache_evaluates_and_resumes(
  cli, session_env, tiny_config, tmp_path
):
  first = tmp_path / "machine_a" / "run"
  rc, _, err = finish(cli("train.py", f"--config={tiny_config}:{CONFIG}", f"--workdir={first}"))
  assert rc == 0, err[-3000:]
  results = json.loads((first / "results.json").read_text())
  vocab = json.loads((first / "vocab.json").read_text())
  assert session_env["LRM_DATA_CACHE"] in vocab["data"]["source"]  # recorded, not compared

  moved, cache_b = tmp_path / "machine_b" / "copied", tmp_path / "cache_b"
  shutil.copytree(first, moved)
  original = first.rename(tmp_path / "original")  # nothing may still be read from the old path

  def elsewhere(script: str, *args: str) -> tuple[int, str, str]:
    env = {**session_env, "LRM_DATA_CACHE": str(cache_b)}
    cmd = [sys.executable, str(REPO / "scripts" / script), *args]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr

  rc, out, err = elsewhere("evaluate.py", f"--workdir={moved}", "--checkpoint=latest")
  assert rc == 0, err[-3000:]
  assert json.loads(out[out.index("{") :])["metrics"] == results["final"]["test"]
  assert any(cache_b.rglob("_DONE"))  # the data was generated again, in the new cache

  # resume: drop the last checkpoint and the results, rerun the same command there
  shutil.rmtree(moved / "checkpoints" / "4")
  (moved / "results.json").unlink()
  rc, out, err = elsewhere("train.py", f"--config={tiny_config}:{CONFIG}", f"--workdir={moved}")
  assert rc == 0, err[-3000:]
  assert "resuming at step 2/4" in out + err
  again = json.loads((moved / "results.json").read_text())
  assert again["final"] == results["final"] and again["best"] == results["best"]
  a, b = read_params(original, 4), read_params(moved, 4)
  assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_vocab_content_ignores_locations_only():
  a = {"kind": "listops", "data": {"source": "generated (/a/x)", "examples": {"train": 3}}}
  b = {"kind": "listops", "data": {"source": "generated (/b/y)", "examples": {"train": 3}}}
  assert vocab_content(a) == vocab_content(b)
  c = {"kind": "listops", "data": {"source": "generated (/a/x)", "examples": {"train": 4}}}
  assert vocab_content(a) != vocab_content(c)
  tok = {"kind": "tokenizer", "path": "/x/tok.json", "sha256": "ab", "size": 9}
  assert vocab_content(tok) == {"kind": "tokenizer", "sha256": "ab", "size": 9}
