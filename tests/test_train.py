"""The trainer's pieces: optimizer, gradient accumulation, bfloat16, evaluation caps, the
run directory, determinism, and a 2-step run of every experiment config."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import REFERENCE, metric_records, read_params
from flax import nnx

from lrm import tasks
from lrm.config import complete
from lrm.data.arrays import ArrayDataset
from lrm.train import loop, optim, runtime
from lrm.train.step import Steps, evaluate

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("fast_compile")


def load_config(path: Path, arg: str | None = None):
  spec = importlib.util.spec_from_file_location(f"cfg_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module, module.get_config(arg)


# ---- optimizer -------------------------------------------------------------------------------
def test_weight_decay_skips_biases_norms_and_tables():
  optim_cfg = dict(lr=0.1, warmup_steps=0, schedule="constant", end_lr_ratio=0.0,
                   weight_decay=0.5, clip_norm=0.0, b1=0.9, b2=0.98)  # fmt: skip
  task_spec = {"name": "recall", "num_pairs": 2, "vocab_size": 16, "seq_len": 16,
               "num_train": 4, "num_val": 2, "num_test": 2, "distance_buckets": (4,)}  # fmt: skip
  task = tasks.build(task_spec)
  model_cfg = {"dim": 8, "depth": 1, "mixer": {"name": "conv", "kernel_size": 3}}
  params = jax.jit(lambda: nnx.state(task.build_model(model_cfg, nnx.Rngs(0)), nnx.Param))()
  mask = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(
    optim.decay_mask(params))}  # fmt: skip
  decayed = {k for k, v in mask.items() if v}
  assert any("embedding" in k for k in mask) and not any("embedding" in k for k in decayed)
  assert any("'pos'" in k for k in mask) and not any("'pos'" in k for k in decayed)
  assert not any("bias" in k or "scale" in k for k in decayed)
  assert any("kernel" in k for k in decayed)
  # Behaviour: a zero-gradient step shrinks decayed weights by lr*wd and leaves the rest.
  tx, _ = optim.make_optimizer(optim_cfg, total_steps=10)

  @jax.jit
  def zero_grad_step(params):
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    return optax.apply_updates(params, updates)

  new = zero_grad_step(params)
  for (k, old), new_leaf in zip(
    jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(new), strict=True
  ):
    factor = 0.95 if mask[jax.tree_util.keystr(k)] else 1.0
    np.testing.assert_allclose(np.asarray(new_leaf), factor * np.asarray(old), rtol=1e-6)


def test_schedules_warm_up_then_decay():
  """Every schedule starts at 0, rises linearly and peaks at exactly ``warmup_steps``."""
  base = dict(lr=1.0, warmup_steps=10, end_lr_ratio=0.1)
  kinds = ("cosine", "rsqrt", "constant")
  sched = {k: optim.learning_rate({**base, "schedule": k}, total_steps=100) for k in kinds}
  for k, f in sched.items():
    values = [float(f(s)) for s in range(12)]
    assert values[0] == 0.0 and values[5] == pytest.approx(0.5), k
    assert values[10] == pytest.approx(1.0) and max(values) == values[10], k
  assert float(sched["cosine"](100)) == pytest.approx(0.1)
  assert float(sched["rsqrt"](40)) == pytest.approx(0.5)  # lr * sqrt(warmup / step)
  assert float(sched["constant"](50)) == pytest.approx(1.0)
  no_warmup = optim.learning_rate({**base, "schedule": "rsqrt", "warmup_steps": 0}, 100)
  assert float(no_warmup(0)) == float(no_warmup(1)) == 1.0 and float(no_warmup(4)) == 0.5
  with pytest.raises(ValueError, match="optim.schedule"):
    optim.learning_rate({**base, "schedule": "linear"}, total_steps=100)


# ---- jitted steps: grad accumulation, bfloat16, evaluation cap ------------------------------
@pytest.fixture(scope="module")
def prepared(tiny_config, tmp_path_factory):
  _, cfg = load_config(tiny_config, "batch=8")
  p = loop.prepare(cfg, tmp_path_factory.mktemp("prep") / "w")
  batches = p.run.task.dataset("train").train_batches(8, seed=0)
  return p, [next(batches) for _ in range(3)]


def make_steps(p, **kw):
  opts = dict(dtype="float32", grad_accum=1) | kw
  tx, schedule = p.run.optimizer
  return Steps(p.run.task, p.run.model, tx, schedule, mesh=runtime.make_mesh(), **opts)


def train(steps, state, batches):
  sh = runtime.batch_sharding(steps.mesh)
  for b in batches:
    state = steps.train_step(state, runtime.put_batch(b, sh))
  return jax.device_get(state)


@pytest.fixture(scope="module")
def full_batch_run(prepared):
  p, batches = prepared
  steps = make_steps(p)
  state = steps.init_state(p.run.build_model, batches[0])
  init = jax.device_get(state)
  return steps, init, train(steps, state, batches)


def replicated_copy(steps, tree):
  return runtime.replicate(tree, steps.mesh)


def test_grad_accumulation_equals_full_batch(prepared, full_batch_run):
  """Same loss, gradients and metric sums as one full batch, to float tolerance. (Compared
  before the optimizer: Adam's first steps are ~sign(g)*lr, which turns float noise in
  near-zero gradients into visible parameter differences.)"""
  p, batches = prepared
  full_steps, init, _ = full_batch_run
  model_state = replicated_copy(full_steps, init["model"])
  batch = runtime.put_batch(batches[0], runtime.batch_sharding(full_steps.mesh))
  loss1, g1, sums1 = full_steps.gradients(model_state, batch)
  loss4, g4, sums4 = make_steps(p, grad_accum=4).gradients(model_state, batch)  # 4 x 2 rows
  np.testing.assert_allclose(loss1, loss4, rtol=1e-6)
  scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(g1))
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g4), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * scale)
  for k in sums1:
    np.testing.assert_allclose(sums1[k], sums4[k], rtol=1e-6)


def test_bfloat16_computes_in_bf16_and_keeps_float32_state(prepared, full_batch_run):
  p, batches = prepared
  _, init, full = full_batch_run
  steps = make_steps(p, dtype="bfloat16")
  out = train(steps, replicated_copy(steps, init), batches)
  for leaf in jax.tree.leaves(out["model"]["params"]) + jax.tree.leaves(out["train"]["opt"]):
    assert leaf.dtype != jnp.bfloat16
  loss_bf16, loss_f32 = float(out["train"]["acc"]["loss"]), float(full["train"]["acc"]["loss"])
  assert np.isfinite(loss_bf16) and loss_bf16 != loss_f32  # really computed in bfloat16
  assert loss_bf16 == pytest.approx(loss_f32, rel=0.05)


def test_evaluation_covers_the_whole_split_once_and_reports_a_cap(prepared, full_batch_run):
  p, _ = prepared
  steps, init, _ = full_batch_run
  model_state = replicated_copy(steps, init["model"])
  ds = p.run.task.dataset("validation")  # 48 rows
  notes: list[str] = []
  exact = evaluate(steps, model_state, ds, batch_size=8, note=notes.append)  # 6 full batches
  padded = evaluate(steps, model_state, ds, batch_size=32, note=notes.append)  # 32 + 16 padding
  assert notes == []  # no cap, no message
  for k in exact:
    assert padded[k] == pytest.approx(exact[k], abs=1e-6), k
  capped = evaluate(steps, model_state, ds, batch_size=8, max_batches=2, note=notes.append)
  assert len(notes) == 1 and "2 of 6 batches" in notes[0] and "max_eval_batches" in notes[0]
  first16 = ArrayDataset({k: v[:16] for k, v in ds.arrays.items()})
  expected = evaluate(steps, model_state, first16, batch_size=8, note=notes.append)
  assert capped == pytest.approx(expected, abs=1e-6)


# ---- a whole run ----------------------------------------------------------------------------
def test_run_directory_holds_everything(reference_run, tiny_config):
  wd = reference_run
  _, cfg = load_config(tiny_config, REFERENCE)
  complete(cfg)  # scripts/train.py fills the data section with the task's other options
  assert json.loads((wd / "config.json").read_text()) == json.loads(
    json.dumps(cfg.to_dict(), sort_keys=True)
  )
  vocab = json.loads((wd / "vocab.json").read_text())
  assert vocab["size"] == cfg.data.vocab_size
  recs = metric_records(wd)
  splits = [r["split"] for r in recs]
  assert splits.count("train") == 6 and splits.count("validation") == 3 and splits[-1] == "test"
  assert all(np.isfinite(r["loss"]) for r in recs)
  assert list((wd / "tensorboard").glob("events.out.tfevents.*"))
  assert (wd / "plots" / "curves.png").read_bytes()[:4] == b"\x89PNG"
  res = json.loads((wd / "results.json").read_text())
  n_params = sum(v.size for v in read_params(wd, 12).values())
  assert res["params"] == n_params > 0
  assert res["forward_flops_per_token"] > res["encoder_forward_flops_per_token"] > 0
  assert res["train_flops_per_token"] == pytest.approx(3 * res["forward_flops_per_token"])
  assert res["params"] > res["params_non_embedding"] > 0
  assert res["tokens_per_s"] > 0 and res["wall_time_s"] > 0
  assert {"jax", "flax", "optax", "orbax-checkpoint", "datasets", "python"} <= set(res["versions"])
  assert res["final"]["step"] == 12 and set(res["final"]) == {"step", "validation", "test"}
  best = res["best"]
  val = {r["step"]: r["accuracy"] for r in recs if r["split"] == "validation"}
  assert best["validation"]["accuracy"] == max(val.values())
  # Kept: the newest 2 (keep_checkpoints) and the best; the rest were deleted.
  kept = sorted(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit())
  assert kept == sorted({11, 12, best["step"]})


# ---- every experiment config -----------------------------------------------------------------
def experiment_variants() -> list[tuple[str, str | None]]:
  """(file, variant) pairs: each config's default (small) variant, plus any variants a file
  lists in a module-level ``TEST_VARIANTS``."""
  out = []
  for path in sorted((REPO / "experiments").glob("*.py")):
    text = path.read_text()
    out.append((path.name, None))
    if "TEST_VARIANTS" in text:
      module, _ = load_config(path)
      out += [(path.name, v) for v in module.TEST_VARIANTS]
  return out


@pytest.mark.slow
@pytest.mark.parametrize("name,variant", experiment_variants())
def test_experiment_config_trains_two_steps(name, variant, tmp_path, data_cache):
  _, cfg = load_config(REPO / "experiments" / name, variant)
  assert isinstance(cfg.get("task"), str) and cfg.task, "the config must name a task"
  for key in ("num_train", "num_val", "num_test"):  # keep generated data small
    if key in cfg.data and not cfg.data.get("path"):
      cfg.data[key] = min(cfg.data[key], 8)
  cfg.train.steps, cfg.train.batch_size, cfg.train.grad_accum = 2, 2, 1
  cfg.train.eval_batch_size, cfg.train.eval_every, cfg.train.checkpoint_every = 8, 2, 2
  res = loop.run(cfg, tmp_path)
  main = res["main_metric"]
  assert np.isfinite(res["final"]["test"][main]) and np.isfinite(res["final"]["validation"]["loss"])


def test_restart_wipes_only_what_a_run_wrote(tmp_path: Path) -> None:
  """``--restart`` deletes every file and folder a run writes (profiles and wandb files too)
  and nothing else: not set-aside damaged checkpoints, not the user's own files, not the lock
  file, not train.log (the trainer reopens it afresh, already open when wipe runs)."""
  from lrm.train import rundir

  wd = tmp_path / "run"
  for d in ("checkpoints/40", "tensorboard", "plots", "profile", "wandb", "damaged/80", "mine"):
    (wd / d).mkdir(parents=True)
  for f in (
    "config.json",
    "vocab.json",
    "metrics.jsonl",
    "results.json",
    "eval_test_best.json",
    "lrm_run.json",
  ):
    (wd / f).write_text("{}")
  for f in ("train.log", ".lock", "notes.txt", "mine/keep.txt"):
    (wd / f).write_text("x")
  rundir.wipe(wd)
  left = sorted(str(p.relative_to(wd)) for p in wd.rglob("*"))
  assert left == [
    ".lock",
    "damaged",
    "damaged/80",
    "mine",
    "mine/keep.txt",
    "notes.txt",
    "train.log",
  ]
  assert not rundir.holds_a_run(wd)


def test_a_run_saved_before_new_options_resumes_only_if_they_are_at_default(
  tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
  """A config.json written by an older lrm lacks keys added since: at their defaults they
  keep the old behaviour, so the run resumes (with a note); set otherwise, or a mixer
  option, and it is a different run."""
  from lrm.config import base_config
  from lrm.train import rundir

  new = rundir.config_to_dict(base_config())
  new["task"] = "recall"
  new["model"]["mixer"]["rotary"] = True
  old = json.loads(json.dumps(new))
  del old["train"]["wandb_project"], old["model"]["remat"]
  (tmp_path / "config.json").write_text(json.dumps(old))
  assert rundir.check_workdir(tmp_path, new, restart=False)
  assert "predates the keys model.remat, train.wandb_project" in capsys.readouterr().err
  changed = json.loads(json.dumps(new))
  changed["model"]["remat"] = True
  with pytest.raises(rundir.ConfigConflict, match=r"model.remat: <unset> -> True"):
    rundir.check_workdir(tmp_path, changed, restart=False)
  del old["model"]["mixer"]["rotary"]  # a mixer default may change what the mixer computes
  (tmp_path / "config.json").write_text(json.dumps(old))
  with pytest.raises(rundir.ConfigConflict, match=r"model.mixer.rotary: <unset> -> True"):
    rundir.check_workdir(tmp_path, new, restart=False)
