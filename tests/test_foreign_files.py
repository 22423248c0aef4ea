"""Every failure is one line; accepted-but-wrong input is refused (issue 24, groups 5-6).

Real scripts run as processes on real files: a data cache that is a file, run folders whose
names hold the wrong kind of entry, prepare_data.py's --out and --seed, study files that do
not load, --multihost without a cluster, a checkpoint fallback, ListOps rows whose brackets do
not balance, Retrieval labels other than 0 or 1, generate.py's sampling flags, files that are
not UTF-8 and messages that name a flag the script lacks. Each case ends in one line on stderr
naming the key, file or flag, with a documented exit code (2 bad input, 4 I/O), no traceback
and no file changed. Last, ``test_no_command_writes_outside_its_folders`` runs train,
evaluate, generate and prepare_data in a folder of another project's files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, finish

from lrm import tasks
from lrm.tasks import retrieval
from lrm.train import rundir

SLOW = pytest.mark.slow
ROOT_SKIP = pytest.mark.skipif(
  os.geteuid() == 0, reason="root writes through chmod 500, so no folder is unwritable to it"
)
SIZES = ("--num_train=8", "--num_val=4", "--num_test=4")


def start(env: dict[str, str], script: str, *args: str, cwd: Path = REPO, **extra: str):
  """``scripts/<script>`` as a process in ``cwd`` with the session's environment + ``extra``."""
  return subprocess.Popen(
    [sys.executable, str(REPO / "scripts" / script), *args],
    cwd=cwd,
    env={**env, **extra},
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def one_line(rc: int, err: str, code: int, *words: str) -> None:
  """The rule: exit ``code``, one line on stderr holding ``words``, no traceback."""
  assert rc == code, (rc, err[-3000:])
  assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err[-3000:]
  for w in words:
    assert w in err, err


def snapshot(folder: Path) -> dict[str, bytes | None]:
  """Every entry under ``folder``: a file's bytes, None for a folder."""
  return {
    str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
    for p in sorted(folder.rglob("*"))
  }


# ---- a. the data cache ---------------------------------------------------------------------------
@SLOW
def test_a_data_cache_that_is_a_file_is_one_line(session_env, tiny_config, tmp_path):
  cache = tmp_path / "cache"
  cache.write_text("mine")
  wd = tmp_path / "w"
  rc, _, err = finish(
    start(
      session_env,
      "train.py",
      f"--config={tiny_config}:task=listops",
      f"--workdir={wd}",
      LRM_DATA_CACHE=str(cache),
    )
  )
  one_line(rc, err, rundir.EXIT_BAD_INPUT, f"LRM_DATA_CACHE={cache} is a file")
  assert cache.read_text() == "mine" and not wd.exists()


@SLOW
@ROOT_SKIP
def test_a_data_cache_that_cannot_be_written_is_an_io_failure(session_env, tiny_config, tmp_path):
  cache = tmp_path / "cache"
  cache.mkdir()
  cache.chmod(0o500)
  try:
    rc, _, err = finish(
      start(
        session_env,
        "train.py",
        f"--config={tiny_config}:task=listops",
        f"--workdir={tmp_path / 'w'}",
        LRM_DATA_CACHE=str(cache),
      )
    )
  finally:
    cache.chmod(0o700)
  one_line(rc, err, rundir.EXIT_IO, "LRM_DATA_CACHE=", "cannot be written")
  assert not any(cache.iterdir())


# ---- b. entries of the run folder of the wrong kind ----------------------------------------------
@SLOW
@pytest.mark.parametrize("name", ["tensorboard", "plots", "vocab.json"])
def test_a_run_name_holding_the_wrong_kind_is_refused_before_writing(
  name, cli, tiny_config, tmp_path
):
  wd = tmp_path / "w"
  wd.mkdir()
  if name.endswith(".json"):
    (wd / name).mkdir()
    (wd / name / "mine.txt").write_text("mine")
  else:
    (wd / name).write_text("mine")
  before = snapshot(wd)
  rc, _, err = finish(cli("train.py", f"--config={tiny_config}:steps=2,ckpt=2", f"--workdir={wd}"))
  one_line(rc, err, rundir.EXIT_BAD_INPUT, str(wd / name), "move it away")
  assert snapshot(wd) == before  # it used to fail half-way, with the run's files written


@SLOW
def test_evaluate_with_vocab_json_as_a_folder_or_garbage(cli, reference_run, tmp_path):
  wd = shutil.copytree(reference_run, tmp_path / "w", ignore=shutil.ignore_patterns(".lock"))
  (wd / "vocab.json").unlink()
  (wd / "vocab.json").mkdir()
  rc, _, err = finish(cli("evaluate.py", f"--workdir={wd}"))
  one_line(rc, err, rundir.EXIT_BAD_INPUT, f"{wd / 'vocab.json'} is a folder")
  (wd / "vocab.json").rmdir()
  (wd / "vocab.json").write_text("{not json")  # a derived file: rebuilt (documented)
  rc, out, err = finish(cli("evaluate.py", f"--workdir={wd}"))
  assert rc == 0 and "does not parse" in err and "Traceback" not in err, err[-2000:]
  assert json.loads(out)["metrics"]


# ---- c. prepare_data.py --------------------------------------------------------------------------
@SLOW
def test_prepare_data_refuses_a_file_as_out_and_a_negative_seed(session_env, tmp_path):
  f = tmp_path / "notes.txt"
  f.write_text("mine")
  for out, words in ((f, "is a file"), (f / "sub", "lies under the file")):
    rc, _, err = finish(
      start(session_env, "prepare_data.py", "--task=listops", f"--out={out}", *SIZES)
    )
    one_line(rc, err, rundir.EXIT_BAD_INPUT, f"--out={out}", words)
  assert f.read_text() == "mine"
  out = tmp_path / "new"
  rc, _, err = finish(
    start(session_env, "prepare_data.py", "--task=listops", f"--out={out}", "--seed=-1", *SIZES)
  )
  one_line(rc, err, rundir.EXIT_BAD_INPUT, "--seed=-1 must be an integer >= 0")
  assert not out.exists()  # it used to create the folder, then fail in numpy


@SLOW
@ROOT_SKIP
def test_prepare_data_into_an_unwritable_folder_is_an_io_failure(session_env, tmp_path):
  ro = tmp_path / "ro"
  ro.mkdir()
  ro.chmod(0o500)
  try:
    for out in (ro, ro / "sub"):
      rc, _, err = finish(
        start(session_env, "prepare_data.py", "--task=listops", f"--out={out}", *SIZES)
      )
      one_line(rc, err, rundir.EXIT_IO, f"--out={out}", "cannot be written")
  finally:
    ro.chmod(0o700)
  assert not any(ro.iterdir())


# ---- d. study files that do not load -------------------------------------------------------------
STUDY_FILES = {
  "raises": ('raise RuntimeError("boom")\n', "line 1: RuntimeError: boom"),
  "syntax": ("def get_study(:\n", "line 1: SyntaxError"),
  "no_get_study": ("x = 1\n", "defines no get_study(scale)"),
  "get_study_raises": ("def get_study(scale):\n  return 1 / 0\n", "line 2: ZeroDivisionError"),
}


@SLOW
@pytest.mark.parametrize("kind", sorted(STUDY_FILES))
def test_a_study_file_that_does_not_load_is_one_line(kind, session_env, tmp_path):
  text, words = STUDY_FILES[kind]
  study = tmp_path / f"{kind}.py"
  study.write_text(text)
  out = tmp_path / "out"
  rc, _, err = finish(start(session_env, "study.py", f"--study={study}", f"--out={out}"))
  one_line(rc, err, rundir.EXIT_BAD_INPUT, str(study), words)
  assert not out.exists()


# ---- e. --multihost without a cluster ------------------------------------------------------------
@SLOW
def test_evaluate_multihost_without_a_cluster_is_one_line(session_env, reference_run):
  env = {k: v for k, v in session_env.items() if not k.startswith(("SLURM_", "TPU_", "LRM_COORD"))}
  rc, out, err = finish(start(env, "evaluate.py", f"--workdir={reference_run}", "--multihost"))
  one_line(rc, err, rundir.EXIT_BAD_INPUT, "--multihost", "LRM_COORDINATOR")
  assert out == ""


# ---- f. a checkpoint fallback that worked prints no library traceback ----------------------------
@SLOW
def test_a_checkpoint_fallback_prints_no_library_traceback(cli, tiny_config, tmp_path):
  """The newest step's manifest is lost: evaluate.py and a resumed run fall back to the older
  step in lrm's own lines; no "Exception ignored ... Traceback" block of orbax's reaches
  stderr (README: they are filtered)."""
  config = (f"--config={tiny_config}:steps=4,ckpt=2", "--config.train.eval_every=2")
  wd = tmp_path / "w"
  rc, _, err = finish(cli("train.py", *config, f"--workdir={wd}"))
  assert rc == 0, err[-2000:]
  for f in (wd / "checkpoints" / "4" / "model").rglob("manifest.ocdbt"):
    f.unlink()
  rc, out, err = finish(cli("evaluate.py", f"--workdir={wd}", "--checkpoint=latest"))
  assert rc == 0 and json.loads(out)["step"] == 2, err[-2000:]
  assert "falling back to step 2" in err
  for text in ("Traceback", "Exception ignored"):
    assert text not in err, err
  extend = (f"--config={tiny_config}:steps=6,ckpt=2", "--config.train.eval_every=2")
  rc, out, err = finish(cli("train.py", *extend, f"--workdir={wd}", "--extend"))
  assert "falling back to step 2" in err, err[-2000:]
  for text in ("Traceback", "Exception ignored"):
    assert text not in err, err


# ---- g, h. rows the loaders used to accept -------------------------------------------------------
LISTOPS_HEADER = "Source\tTarget\n"
GOOD = "( ( ( [MIN 9 ) 3 ) ] )\t3\n"
UNBALANCED = {
  "operator never closed": "( ( [MAX 2 ) 3 )\t3",
  "] with nothing open": "( ( [MAX 2 ) 3 ) ] ]\t3",
  "( never closed": "( ( ( [MIN 9 ) 3 ) ]\t3",
  ") with nothing open": "( ( [MIN 9 ) 3 ) ] ) )\t3",
  "two expressions": "( ( [MIN 9 ) 3 ) ] ( ( [MAX 1 ) 2 ) ]\t3",
}


def listops_folder(folder: Path, bad_row: str) -> Path:
  folder.mkdir(parents=True)
  for name in ("basic_train.tsv", "basic_test.tsv"):
    (folder / name).write_text(LISTOPS_HEADER + GOOD * 8)
  (folder / "basic_val.tsv").write_text(LISTOPS_HEADER + GOOD + bad_row + "\n" + GOOD)
  return folder


@pytest.mark.parametrize("kind", sorted(UNBALANCED))
def test_listops_rows_with_unbalanced_brackets_are_refused(kind, tmp_path):
  folder = listops_folder(tmp_path / "lo", UNBALANCED[kind])
  task = tasks.build({"name": "listops", "path": str(folder), "max_len": 64})
  with pytest.raises(tasks.DataError, match=r"basic_val\.tsv line 3: unbalanced brackets"):
    task.setup()


@SLOW
def test_train_refuses_an_unbalanced_listops_row_in_one_line(cli, tiny_config, tmp_path):
  folder = listops_folder(tmp_path / "lo", UNBALANCED["operator never closed"])
  wd = tmp_path / "w"
  rc, _, err = finish(
    cli(
      "train.py",
      f"--config={tiny_config}:task=listops",
      f"--config.data.path={folder}",
      f"--workdir={wd}",
    )
  )
  one_line(rc, err, rundir.EXIT_BAD_INPUT, f"{folder / 'basic_val.tsv'} line 3", "unbalanced")
  assert not wd.exists()


@pytest.mark.parametrize("label", ["2", "-1", "0.5", "", "yes"])
def test_a_retrieval_label_other_than_0_or_1_is_refused(label, tmp_path):
  """A label that is not the number 0 or 1 is refused with its file and line. ``1.0`` is the
  number 1 (LRA's own pipeline parses the column as a float), so it is read as 1, not refused:
  refusing it would refuse a release written with float labels."""
  f = tmp_path / retrieval.file_name("train")
  f.write_text(f"1\ta\tb\tx\ty\n{label}\ta\tb\tx\ty\n")
  with pytest.raises(tasks.DataError, match=rf"train\.tsv line 2: label '{label}' is not 0 or 1"):
    retrieval.read_tsv(f, 8)
  f.write_text("1\ta\tb\tx\ty\n0\ta\tb\tx\ty\n 1 \ta\tb\tx\ty\n1.0\ta\tb\tx\ty\n")
  assert retrieval.read_tsv(f, 8)[2].tolist() == [1, 0, 1, 1]


# ---- i, j. generate.py's flags, seeds, non-UTF-8 files, flags a script lacks ---------------------
GENERATE_FLAGS = {
  "--temperature=nan": "--temperature=nan must be a finite number >= 0",
  "--temperature=inf": "--temperature=inf must be a finite number >= 0",
  "--temperature=-1": "--temperature=-1.0 must be a finite number >= 0",
  "--top_k=-3": "--top_k=-3 must be an integer >= 0",
  "--max_new_tokens=-1": "--max_new_tokens=-1 must be an integer >= 0",
  "--seed=-1": "--seed=-1 must be an integer >= 0",
}


@SLOW
@pytest.mark.parametrize("flag", sorted(GENERATE_FLAGS))
def test_generate_names_the_bad_sampling_flag(flag, cli, tmp_path):
  """Checked before anything is read (nan and inf used to sample silently wrong text)."""
  rc, out, err = finish(cli("generate.py", f"--workdir={tmp_path}", "--prompt=x", flag))
  one_line(rc, err, rundir.EXIT_BAD_INPUT, GENERATE_FLAGS[flag])
  assert out == ""


@SLOW
def test_a_config_json_that_is_not_utf8_is_one_line_naming_it(cli, tiny_config, tmp_path):
  (tmp_path / "config.json").write_bytes(b'{"seed": "\xff\xfe"}')
  before = snapshot(tmp_path)
  rc, _, err = finish(cli("train.py", f"--config={tiny_config}", f"--workdir={tmp_path}"))
  one_line(rc, err, rundir.EXIT_BAD_INPUT, f"{tmp_path / 'config.json'} does not parse")
  rc, _, err = finish(cli("evaluate.py", f"--workdir={tmp_path}"))
  one_line(rc, err, rundir.EXIT_BAD_INPUT, f"{tmp_path / 'config.json'} does not parse")
  assert snapshot(tmp_path) == before


@SLOW
def test_a_jsonl_file_that_is_not_utf8_names_its_file_and_line(cli, tmp_path):
  data = tmp_path / "data"
  data.mkdir()
  row = json.dumps({"text": "a fine film", "label": 1}).encode() + b"\n"
  bad = b'{"text": "caf\xe9", "label": 0}\n'  # Latin-1, not UTF-8
  for split in ("train", "test"):
    (data / f"{split}.jsonl").write_bytes(row * 2 + (bad if split == "test" else row) + row)
  rc, _, err = finish(
    cli(
      "train.py",
      "--config=experiments/text.py:size=small",
      f"--config.data.path={data}",
      f"--workdir={tmp_path / 'w'}",
    )
  )
  one_line(rc, err, rundir.EXIT_BAD_INPUT, f"{data / 'test.jsonl'} line 3: not UTF-8")


@SLOW
def test_evaluate_names_the_saved_config_not_a_flag_it_lacks(cli, reference_run, tmp_path):
  """A saved config.json that fails ``lrm.config.validate`` used to be told to 'set
  --config.seed', a flag evaluate.py does not have; the fix named is the file."""
  wd = shutil.copytree(reference_run, tmp_path / "w", ignore=shutil.ignore_patterns(".lock"))
  saved = json.loads((wd / "config.json").read_text())
  (wd / "config.json").write_text(json.dumps({**saved, "seed": -1}))
  rc, _, err = finish(cli("evaluate.py", f"--workdir={wd}"))
  one_line(rc, err, rundir.EXIT_BAD_INPUT, "seed=-1", f"fix it in {wd / 'config.json'}")
  assert "--config" not in err


# ---- nothing written outside the folders a command owns ------------------------------------------
FOREIGN = {
  "notes.txt": "mine\n",
  "config.json": '{"project": "not lrm"}\n',
  "results.json": '{"paper": 1}\n',
  "vocab.json": '["a", "b"]\n',
  "plots/figure.png": "png",
  "code.txt": "".join(f"def f{i % 7}(x):\n    return x + {i % 5}\n\n" for i in range(300)),
}


@SLOW
def test_no_command_writes_outside_its_folders(session_env, tiny_config, tmp_path):
  """A folder of another project's files is the working folder and the parent of every
  workdir; train (a classifier and a byte LM), evaluate, generate and prepare_data run there
  with relative paths. Afterwards every foreign file is byte-identical and everything new lies
  in a run directory, the data cache or --out."""
  home = tmp_path / "project"
  for name, text in FOREIGN.items():
    (home / name).parent.mkdir(parents=True, exist_ok=True)
    (home / name).write_text(text)
  before = snapshot(home)
  env = {**session_env, "LRM_DATA_CACHE": str(home / "cache")}
  lm = (
    "--config=experiments/lm.py:mixer=conv,size=small,window=4,data=code.txt",
    "--config.data.seq_len=32",
    "--config.model.dim=16",
    "--config.model.depth=1",
    "--config.train.steps=2",
    "--config.train.batch_size=8",
    "--config.train.eval_batch_size=8",
    "--config.train.eval_every=2",
    "--config.train.checkpoint_every=2",
    "--config.optim.warmup_steps=1",
  )
  # experiments/ is read from the repository: the LM config names its file relative to REPO
  lm = tuple(a.replace("experiments/", f"{REPO}/experiments/") for a in lm)
  commands = [
    ("train.py", f"--config={tiny_config}:task=listops,steps=2,ckpt=2", "--workdir=run"),
    ("evaluate.py", "--workdir=run", "--checkpoint=latest"),
    ("train.py", *lm, "--workdir=lm"),
    ("generate.py", "--workdir=lm", "--prompt=def f", "--max_new_tokens=4", "--json"),
    ("prepare_data.py", "--task=listops", "--out=out", *SIZES),
  ]
  for script, *args in commands:
    rc, _, err = finish(start(env, script, *args, cwd=home))
    assert rc == 0, (script, err[-3000:])
  after = snapshot(home)
  for name, content in before.items():
    assert after.get(name, b"gone") == content, name  # every foreign entry as it was
  owned = ("run", "lm", "cache", "out")
  strays = [p for p in after.keys() - before.keys() if Path(p).parts[0] not in owned]
  assert not strays, strays
  assert (home / "run" / "results.json").is_file() and (home / "out" / "basic_val.tsv").is_file()
  assert any((home / "cache" / "generated").iterdir())  # the listops data went to the cache
