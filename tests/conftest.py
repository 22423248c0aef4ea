"""Shared fixtures: a tiny experiment config, a CLI runner and one reference training run.

The suite runs with ONE JAX device. Tests that need several devices start a subprocess
with ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (the flag must be set before
jax is imported), so no other test pays for, or is changed by, 8 emulated devices.

Compilation dominates these tiny runs, so the trainer tests compile with
``jax_disable_most_optimizations`` (subprocesses via the environment, in-process tests via
the ``fast_compile`` fixture, restored afterwards), and subprocess runs share a persistent
JAX compilation cache (a session temp dir): the same programs compiled again in a fresh
process are loaded instead of recompiled. Both change speed, not what is tested: every
comparison is between runs compiled the same way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

# A seconds-long recall run (generated in memory, nothing downloaded). Variants:
# steps, ckpt (checkpoint_every), lr, mixer, task (recall | listops), batch, accum, seed.
# The mixer is a conv by default: attention's key bias gets no gradient (softmax ignores a
# shift shared by all keys), and Adam turns the float noise there into lr-sized steps, so
# 1- and 8-device parameters would differ there, without any effect on the function.
TINY_CONFIG = """
from lrm.config import base_config, parse_arg


def get_config(arg=None):
  v = parse_arg(arg, steps=10, ckpt=5, lr=3e-3, mixer="conv", task="recall", batch=16,
                accum=1, seed=0)
  c = base_config()
  c.seed = v.seed
  c.task = v.task
  if v.task == "recall":
    c.data.path = ""
    c.data.num_pairs = 4
    c.data.vocab_size = 32
    c.data.seq_len = 32
    c.data.distance_buckets = (4, 16)
    c.data.num_train = 256
    c.data.num_val = 48
    c.data.num_test = 40
  else:
    c.data.path = ""
    c.data.max_len = 64
    c.data.min_len = 16
    c.data.num_train = 32
    c.data.num_val = 16
    c.data.num_test = 16
  c.model.dim = 32
  c.model.depth = 1
  c.model.mixer = {"local": dict(name="local", window=4, num_heads=2),
                   "conv": dict(name="conv", kernel_size=5)}[v.mixer]
  c.train.steps = v.steps
  c.train.batch_size = v.batch
  c.train.grad_accum = v.accum
  c.train.eval_batch_size = 32
  c.train.log_every = 2
  c.train.eval_every = 5
  c.train.checkpoint_every = v.ckpt
  c.train.keep_checkpoints = 2
  c.optim.lr = v.lr
  c.optim.warmup_steps = 2
  return c
"""

# The reference run: every checkpointing/resume test compares against it.
REFERENCE = "steps=12,ckpt=1"

# The persistent compilation cache keeps every program, however small or quick to compile.
CACHE_EVERYTHING = {
  "jax_persistent_cache_min_compile_time_secs": 0.0,
  "jax_persistent_cache_min_entry_size_bytes": 0,
}


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
  path = tmp_path_factory.mktemp("configs") / "tiny.py"
  path.write_text(TINY_CONFIG)
  return path


@pytest.fixture(scope="session")
def session_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
  """Environment for subprocesses: private data and compilation caches, 1 device."""
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  env["LRM_DATA_CACHE"] = str(tmp_path_factory.mktemp("data_cache"))
  # one cache for all xdist workers (their temp dirs share a parent): a program one worker
  # compiled is loaded by the others. A half-written entry fails to decompress and is compiled.
  if os.environ.get("PYTEST_XDIST_WORKER"):
    cache = tmp_path_factory.getbasetemp().parent / "jax_cache"
    cache.mkdir(exist_ok=True)
  else:
    cache = tmp_path_factory.mktemp("jax_cache")
  env["JAX_COMPILATION_CACHE_DIR"] = str(cache)
  env.update({k.upper(): str(v) for k, v in CACHE_EVERYTHING.items()})
  env["JAX_PLATFORMS"] = "cpu"
  env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
  return env


@pytest.fixture(scope="module")
def fast_compile():
  """Compile with most XLA optimizations off for one test module (as the subprocesses do)."""
  import jax

  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


@pytest.fixture
def data_cache(session_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Path:
  """For in-process runs: generated data goes to the session's temp cache."""
  monkeypatch.setenv("LRM_DATA_CACHE", session_env["LRM_DATA_CACHE"])
  return Path(session_env["LRM_DATA_CACHE"])


@pytest.fixture(scope="session")
def cli(session_env: dict[str, str]) -> Callable[..., subprocess.Popen]:
  """``cli("train.py", *args, devices=1)`` starts a script; ``.wait()`` or ``.communicate()``."""

  def start(script: str, *args: str, devices: int = 1, code: str | None = None):
    env = dict(session_env)
    if devices > 1:
      env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    cmd = [sys.executable, "-c", code] if code else [sys.executable, str(REPO / "scripts" / script)]
    return subprocess.Popen(
      [*cmd, *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )

  return start


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
  out, err = proc.communicate(timeout=timeout)
  return proc.returncode, out, err


@pytest.fixture(scope="session")
def reference_run(cli, tiny_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
  """The uninterrupted reference: ``tiny.py:steps=12,ckpt=1`` on one device."""
  workdir = tmp_path_factory.mktemp("runs") / "reference"
  rc, out, err = finish(
    cli("train.py", f"--config={tiny_config}:{REFERENCE}", f"--workdir={workdir}")
  )
  assert rc == 0, err[-3000:]
  return workdir


def script(name: str):
  """``scripts/<name>.py`` as a module, for calling its ``main(argv)`` in-process."""
  import importlib.util

  spec = importlib.util.spec_from_file_location(f"script_{name}", REPO / "scripts" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def read_params(workdir: Path, step: int) -> dict[str, np.ndarray]:
  """A checkpoint's parameters as flat ``{path: array}`` (read without building a model)."""
  import jax
  import orbax.checkpoint as ocp

  path = Path(workdir) / "checkpoints" / str(step) / "model"
  ckpt = ocp.StandardCheckpointer()
  # A target placed on this process's first device: the checkpoint may come from 8 devices.
  here = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(
    lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=here),
    ckpt.metadata(path).item_metadata,
  )
  tree = ckpt.restore(path, target)
  flat = jax.tree_util.tree_flatten_with_path(tree["params"])[0]
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in flat}


def metric_records(workdir: Path) -> list[dict]:
  """metrics.jsonl without the timing fields (which differ between runs)."""
  recs = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
  for r in recs:
    r.pop("tokens_per_s", None)
    r.pop("step_s", None)
  return recs


@pytest.fixture(scope="session", autouse=True)
def shared_compilation_cache(session_env: dict[str, str]):
  """In-process compiles use the subprocesses' persistent cache too: a program compiled once
  (the tiny runs' steps) is loaded, not compiled again, by later runs in any worker."""
  import jax

  settings = {"jax_compilation_cache_dir": session_env["JAX_COMPILATION_CACHE_DIR"]}
  settings.update(CACHE_EVERYTHING)
  old = {k: getattr(jax.config, k) for k in settings}
  for k, v in settings.items():
    jax.config.update(k, v)
  yield
  for k, v in old.items():
    jax.config.update(k, v)
