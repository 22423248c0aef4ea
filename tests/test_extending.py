"""Adding a mixer is one file + its preset + its oracle test: a throwaway mixer registered
inside this test appears in experiment configs, the generic contract tests, the benchmark's
default list and study grids without any other change."""

from __future__ import annotations

import importlib
import sys

import jax
import jax.numpy as jnp
import pytest
import test_mixers_generic as generic
from conftest import REPO
from flax import nnx

from lrm import mixers, registry
from lrm.mixers import presets
from lrm.mixers.base import Mixer

NAME = "throwaway_box"


class BoxFilter(Mixer):
  """A causal or centred box filter over ``kernel_size`` taps, then a pointwise layer."""

  def __init__(self, dim, *, causal, rngs, layer_idx=0, kernel_size=3, impl="auto"):
    super().__init__(dim, causal=causal, layer_idx=layer_idx, impl=impl)
    self.kernel_size = kernel_size
    self.out = nnx.Linear(dim, dim, rngs=rngs)

  IMPLS = ("auto",)

  def _offsets(self) -> range:
    k = self.kernel_size
    return range(-(k - 1), 1) if self.causal else range(-(k // 2), k // 2 + 1)

  def __call__(self, x, mask=None):
    if mask is not None:
      x = jnp.where(mask[..., None], x, 0.0)
    L = x.shape[1]
    y = jnp.zeros_like(x)
    for o in self._offsets():  # y_i = sum over taps of x_{i+o}, zero outside [0, L)
      shifted = jnp.roll(x, -o, axis=1)
      valid = (jnp.arange(L) + o >= 0) & (jnp.arange(L) + o < L)
      y = y + jnp.where(valid[None, :, None], shifted, 0.0)
    return self.out(y / self.kernel_size)  # [B, L, D]

  def flops(self, length: int) -> int:
    return length * self.dim * (self.kernel_size + 2 * self.dim)

  def receptive_field(self) -> tuple[int, int]:
    offsets = list(self._offsets())
    return -offsets[0], offsets[-1]


@pytest.fixture
def throwaway():
  registry.register("mixer", NAME)(BoxFilter)
  presets.register(NAME, lambda r: dict(name=NAME, kernel_size=r.kernel))
  yield NAME
  presets.unregister(NAME)
  registry.unregister("mixer", NAME)


def test_it_is_known_by_name(throwaway):
  assert throwaway in mixers.names() and throwaway in presets.names()
  assert presets.spec(throwaway, window=4, causal=True) == {"name": throwaway, "kernel_size": 5}
  assert presets.windowed(f"{throwaway}+global")


@pytest.mark.parametrize("causal", [False, True])
def test_the_generic_contract_tests_run_on_it(throwaway, causal):
  """The generic tests' own functions, unchanged, on the new name (collection of that module
  happens before this fixture registers it, so they are called here directly)."""
  assert generic.small_spec(throwaway, causal)["kernel_size"] == (3 if causal else 5)
  generic.test_shape_jit_and_finite_gradients(throwaway, causal)
  generic.test_padding_never_influences_real_tokens(throwaway, causal)
  generic.test_every_preset_builds_with_its_declared_reach(throwaway, causal)
  generic.test_causal_outputs_ignore_the_future(throwaway)
  generic.test_param_count_matches_state(throwaway)
  generic.test_flops_are_positive_and_grow_with_length(throwaway)
  generic.test_constructor_follows_the_contract(throwaway)


def test_experiment_configs_build_it_alone_and_in_hybrids(throwaway):
  from lrm.run import Run
  from lrm.train.rundir import config_to_dict

  spec = importlib.util.spec_from_file_location("recall_cfg", REPO / "experiments" / "recall.py")
  recall = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(recall)
  for variant in (f"mixer={throwaway}", f"mixer={throwaway}+global"):
    cfg = recall.get_config(f"{variant},size=small,window=4")
    cfg.data.num_train, cfg.data.num_val, cfg.data.num_test = 64, 16, 16
    names = [m["name"] for m in config_to_dict(cfg)["model"]["mixer"]]
    assert names[1] == throwaway
    run = Run(cfg)
    built = [b.mixer for b in run.model.encoder.blocks]
    assert [getattr(m, "registered_name", "") for m in built][1] == throwaway
    assert run.costs()["train_flops_per_token"] > 0


def test_the_benchmark_lists_it_by_default(throwaway):
  sys.path.insert(0, str(REPO))
  try:
    cells = importlib.import_module("benchmarks.cells")
    labels = cells.default_labels(dim=32, heads=2, window=4, block=8)
  finally:
    sys.path.remove(str(REPO))
  assert throwaway in labels
  x = jax.ShapeDtypeStruct((1, 16, 32), jnp.float32)
  spec = cells.parse_label(throwaway, heads=2, window=4, block=8)[0]
  m = mixers.build(spec, dim=32, causal=False, rngs=nnx.Rngs(0))
  assert jax.eval_shape(lambda x: m(x), x).shape == (1, 16, 32)


def test_a_study_grid_takes_it_and_matches_its_budget(throwaway):
  from lrm.study import grid

  study = dict(
    name="extending",
    seeds=[0],
    rules=["params"],
    heads=2,
    tasks={
      "recall": dict(
        config=str(REPO / "experiments" / "recall.py"),
        arg="size=small,window={window}",
        overrides={"data.num_train": 64, "data.num_val": 16, "data.num_test": 16},
        mixers=[throwaway, f"{throwaway}+global", "local"],
        windows=[4],
        reference=dict(mixer="local", window=4),
        block=8,
      )
    },
  )
  cells = grid.expand(study)
  assert [c.mixer for c in cells] == [throwaway, f"{throwaway}+global", "local"]
  assert all(c.window == 4 for c in cells)  # windowed, as its preset says
  planner = grid.Planner(study)
  cfg, match = planner.config(cells[0])
  assert abs(match.error) < 0.05
  assert cfg.model.mixer[-1]["name"] == throwaway
