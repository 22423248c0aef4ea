"""Configs from the command line: variants, overrides of any task option and of list
elements, one-line errors with the right spelling, --print_config and --dry_run."""

from __future__ import annotations

import pytest
from conftest import REFERENCE, finish, script

from lrm.config import parse_arg, task_options

pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")
train = script("train")
RECALL = "experiments/recall.py"


def run_train(capsys, *args: str) -> tuple[int, str, str]:
  rc = train.main(["train.py", *args])
  out, err = capsys.readouterr()
  return rc, out, err


def one_error(err: str) -> str:
  lines = [line for line in err.splitlines() if line.startswith("error: ")]
  assert len(lines) == 1 and "Traceback" not in err, err
  return lines[0]


def settings(out: str) -> dict[str, str]:
  """--print_config's ``key = value`` lines."""
  return dict(line.split(" = ", 1) for line in out.splitlines() if " = " in line)


def test_a_variant_key_given_twice_is_an_error_naming_both_values():
  with pytest.raises(ValueError, match="'mixer' is given twice .*'local', then 'global'.*local"):
    parse_arg("local,global", mixer="global", size="small")
  with pytest.raises(ValueError, match="'size' is given twice: 'small', then 'full'"):
    parse_arg("size=small,size=full", mixer="global", size="small")
  assert parse_arg("local+global,size=full", mixer="x", size="s").mixer == "local+global"


def test_recall_local_comma_global_is_refused_and_plus_makes_a_hybrid(tmp_path, capsys):
  rc, _, err = run_train(capsys, f"--config={RECALL}:mixer=local,global", f"--workdir={tmp_path}/w")
  line = one_error(err)
  assert rc == 2 and "'local', then 'global'" in line and "mixer=local+global" in line
  assert not (tmp_path / "w").exists()
  rc, out, _ = run_train(capsys, f"--config={RECALL}:mixer=local+global", "--print_config")
  got = settings(out)
  assert (
    rc == 0
    and got["model.mixer[1].name"] == "'local'"
    and got["model.mixer[2].name"] == ("'global'")
  )


@pytest.mark.parametrize(
  "override,expected",
  [
    ("--config.model.mixer.window=4", "name one element, e.g. --config.model.mixer[1].window=4"),
    ("--config.model.mixer.1.name=local", "written with brackets: --config.model.mixer[1].name="),
    ("--config.model.mixer[3].window=4", "model.mixer has 3 elements (0 conv, 1 local, 2 global)"),
    ("--config.model.mixer[2].window=4", "unknown config key 'model.mixer[2].window'"),
    ("--config.model.dim[0]=4", "model.dim is not a list; write --config.model.dim=4"),
  ],
)
def test_overrides_that_cannot_apply_name_the_right_spelling(override, expected, tmp_path, capsys):
  rc, _, err = run_train(
    capsys, f"--config={RECALL}:mixer=local+global", f"--workdir={tmp_path}/w", override
  )
  assert rc == 2 and expected in one_error(err)
  assert not (tmp_path / "w").exists()


def test_a_list_element_is_overridden_with_brackets(capsys):
  rc, out, _ = run_train(
    capsys,
    f"--config={RECALL}:mixer=local+global",
    "--config.model.mixer[1].window=4",
    "--print_config",
  )
  assert rc == 0 and settings(out)["model.mixer[1].window"] == "4"


def test_renaming_the_mixer_points_to_the_variant(tmp_path, capsys):
  rc, _, err = run_train(
    capsys, f"--config={RECALL}", f"--workdir={tmp_path}/w", "--config.model.mixer[1].name=conv"
  )
  line = one_error(err)
  assert rc == 2 and "num_heads" in line and "window" in line and "previous mixer" in line
  assert f"--config={RECALL}:mixer=conv" in line


def test_every_task_option_is_a_config_key(tiny_config, capsys):
  """The tiny config sets 7 recall options; the other constructor options are keys too."""
  assert {"num_queries", "min_distance", "max_distance", "seed"} <= set(task_options("recall"))
  rc, out, _ = run_train(
    capsys, f"--config={tiny_config}:{REFERENCE}", "--config.data.num_queries=2", "--print_config"
  )
  got = settings(out)
  assert rc == 0 and got["data.num_queries"] == "2" and got["data.min_distance"] == "1"
  rc, _, err = run_train(capsys, f"--config={tiny_config}", "--config.data.num_querie=2")
  line = one_error(err)
  assert rc == 2 and "did you mean data.num_queries" in line and "options of task 'recall'" in line
  for option in ("hub_config", "image_column", "label_column"):  # the examples
    assert option in task_options("image")
  rc, out, _ = run_train(
    capsys,
    "--config=experiments/image.py",
    "--config.data.image_column=image",
    "--config.data.hub_config=plain",
    "--print_config",
  )
  assert rc == 0 and settings(out)["data.image_column"] == "'image'"


def test_help_with_a_config_lists_its_keys(tiny_config, capsys):
  rc, out, _ = run_train(capsys, f"--config={tiny_config}", "--help")
  assert rc == 0 and "--print_config" in out and "--dry_run" in out and "--extend" in out
  assert "train.steps = 10" in out and "data.num_queries = 0" in out


def test_dry_run_prints_the_layers_and_writes_nothing(reference_run, tiny_config, capsys):
  before = {p: p.stat().st_mtime_ns for p in reference_run.rglob("*")}
  args = (f"--config={tiny_config}:{REFERENCE}", f"--workdir={reference_run}", "--dry_run")
  rc, out, _ = run_train(capsys, *args, "--config.model.depth=2")
  assert rc == 0
  header = next(line for line in out.splitlines() if line.startswith("layer"))
  assert header.split()[:5] == ["layer", "mixer", "options", "impl", "params"]
  layers = [line.split() for line in out.splitlines() if line.strip()[:2] in ("0 ", "1 ")]
  assert [row[1] for row in layers] == ["conv", "conv"] and layers[0][-1] == "i-4..i"
  assert "total: " in out and "parameters" in out and "FLOPs/token" in out
  assert "would be refused" in out and "model.depth: 1 -> 2" in out
  rc, out, _ = run_train(capsys, *args)
  assert rc == 0 and "holds this run" in out and "finished" in out
  assert {p: p.stat().st_mtime_ns for p in reference_run.rglob("*")} == before


def test_dry_run_without_workdir_and_its_errors(tiny_config, capsys):
  rc, out, _ = run_train(capsys, f"--config={tiny_config}", "--dry_run")
  assert rc == 0 and "dry run: nothing was trained or written" in out
  rc, _, err = run_train(capsys, f"--config={tiny_config}", "--dry_run", "--config.task=nope")
  assert rc == 2 and "unknown task 'nope'" in one_error(err)


def test_the_same_from_a_fresh_process(cli):
  """As a user runs it: the overrides are in sys.argv too, where ml_collections also looks."""
  rc, _, err = finish(cli("train.py", f"--config={RECALL}:mixer=local,global", "--workdir=/x"))
  assert rc == 2 and "'local', then 'global'" in one_error(err)
  args = (f"--config={RECALL}:mixer=local+global", "--print_config")
  rc, _, err = finish(cli("train.py", *args, "--config.model.mixer.window=4"))
  assert rc == 2 and "e.g. --config.model.mixer[1].window=4" in one_error(err)
  rc, out, err = finish(cli("train.py", *args, "--config.model.mixer[1].window=4"))
  assert rc == 0 and settings(out)["model.mixer[1].window"] == "4", err
