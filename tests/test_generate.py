"""scripts/generate.py end to end: a tiny byte LM trained by the real trainer, then real
subprocesses of the script (cached and recomputed decoding, JSON, seeds, refusals)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import finish, script

pytestmark = pytest.mark.slow  # trains two runs and starts a handful of processes

TEXT = "".join(f"def main{i % 7}(x):\n    return x + {i % 5}\n\n" for i in range(400))
PROMPT = "def main("
STEPS = 20  # 9 bytes + the separator: 10 of the model's 32 positions


@pytest.fixture(scope="module")
def lm_run(cli, tmp_path_factory: pytest.TempPathFactory) -> Path:
  """A 2-layer conv + gated_conv byte LM, 20 steps on a small Python-like text file."""
  root = tmp_path_factory.mktemp("generate")
  (root / "code.txt").write_text(TEXT)
  workdir = root / "lm"
  rc, _, err = finish(
    cli(
      "train.py",
      f"--config=experiments/lm.py:mixer=conv+gated_conv,size=small,window=4,data={root}/code.txt",
      f"--workdir={workdir}",
      "--config.data.seq_len=32",
      "--config.model.dim=32",
      f"--config.train.steps={STEPS}",
      "--config.train.batch_size=8",
      "--config.train.eval_batch_size=8",
      "--config.train.eval_every=10",
      "--config.train.checkpoint_every=10",
      "--config.optim.warmup_steps=5",
      "--config.optim.lr=1e-2",
    )
  )
  assert rc == 0, err[-3000:]
  return workdir


@pytest.fixture(scope="module")
def classifier_run(cli, tiny_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
  """A bidirectional ListOps classifier (the suite's tiny config), 2 steps."""
  workdir = tmp_path_factory.mktemp("generate") / "listops"
  rc, _, err = finish(
    cli("train.py", f"--config={tiny_config}:task=listops,steps=2,ckpt=2", f"--workdir={workdir}")
  )
  assert rc == 0, err[-3000:]
  return workdir


def generate(cli, workdir: Path, *args: str):
  return cli("generate.py", f"--workdir={workdir}", f"--prompt={PROMPT}", *args)


def parse(proc) -> dict:
  rc, out, err = finish(proc)
  assert rc == 0, err[-3000:]
  lines = out.strip().splitlines()
  assert len(lines) == 1, out
  return json.loads(lines[0])


def test_cached_and_recomputed_decoding_agree_and_seeds_fix_samples(cli, lm_run):
  # Two rounds: the second loads the first's programs from the persistent compilation cache.
  first = {
    "greedy": generate(cli, lm_run, "--max_new_tokens=22", "--json"),
    "greedy_ref": generate(cli, lm_run, "--max_new_tokens=22", "--json", "--cache=false"),
  }
  out = {k: parse(p) for k, p in first.items()}
  sample = ("--seed=1", "--temperature=3.0", "--top_k=50", "--max_new_tokens=16")
  second = {
    "seed1": generate(cli, lm_run, *sample, "--json"),
    "seed1_ref": generate(cli, lm_run, *sample, "--json", "--cache=false"),
    "seed1_text": generate(cli, lm_run, *sample, "--checkpoint=latest"),
  }
  rc, text, err = finish(second.pop("seed1_text"))
  out.update({k: parse(p) for k, p in second.items()})
  greedy = out["greedy"]
  assert len(greedy["tokens"]) == 22 and greedy["cache"] and not out["greedy_ref"]["cache"]
  assert greedy["tokens"] == out["greedy_ref"]["tokens"]
  assert greedy["prompt"] == PROMPT and greedy["step"] == STEPS
  assert greedy["prompt_tokens"][0] == 1 and len(greedy["prompt_tokens"]) == 10  # SEP + bytes
  assert out["seed1"]["tokens"] == out["seed1_ref"]["tokens"]
  assert out["seed1"]["tokens"] != greedy["tokens"][:16]
  assert rc == 0 and text == PROMPT + out["seed1"]["text"] + "\n", err[-2000:]


def test_a_classification_run_is_refused_in_one_line(cli, classifier_run):
  rc, out, err = finish(generate(cli, classifier_run, "--max_new_tokens=5"))
  assert rc == 2 and out == "" and "Traceback" not in err
  assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
  assert "is a run of task 'listops', a bidirectional model that cannot generate" in err


@pytest.mark.parametrize(
  "args,expected",
  [
    (["--max_new_tokens=30"], "lower max_new_tokens to 23"),
    (["--checkpoint=7", "--max_new_tokens=5"], "no checkpoint at step 7"),
    (["--workdir=/nonexistent/run"], "config.json not found"),
    (["--top_k=-1"], "--top_k=-1 must be an integer >= 0"),
  ],
)
def test_bad_input_is_one_line_and_exit_code_2(lm_run, capsys, args, expected):
  argv = ["generate.py", f"--workdir={lm_run}", f"--prompt={PROMPT}", *args]
  assert script("generate").main(argv) == 2
  out, err = capsys.readouterr()
  assert out == "" and expected in err
  assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1
