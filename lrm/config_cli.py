"""An experiment config from the command line: ``--config=<file>[:<variant>]`` and overrides.

  config = load_with_overrides(argv)     # file:variant, task options filled, overrides applied
  print(format_config(config))           # one ``key = value`` line per leaf (--print_config)

Steps, each failing with a one-line ``ConfigError`` that names the fix:

1. the file's ``get_config(variant)`` (ml_collections' ``config_flags``, as in big_vision);
2. ``lrm.config.complete``: the ``data`` section gets every option of the task's
   constructor (of ``--config.task`` when that is overridden), so any of them can be set;
3. every ``--config.<key>=<value>`` is checked against the config's shape before it is applied
   (list elements are written ``model.mixer[1].window``; a key of a list-valued mixer, a
   dotted index or an index out of range is refused with the right spelling), then applied
   by ``config_flags.DEFINE_config_dict`` (type-checked; typos get a "did you mean");
4. a changed mixer ``name`` whose remaining options belong to the previous mixer is refused
   with a pointer to the config's ``:mixer=`` variant;
5. ``lrm.config.write_run_options``: the run-level mixer options (the pattern ``seed``,
   ``rotary`` under ``model.positions="rotary"``) are written into the mixer specs, after the
   overrides, so ``--print_config`` and config.json show what the encoder builds.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Callable
from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags
from ml_collections.config_flags import config_path

from lrm import config as lrm_config

PREFIX = "--config."
MIXER_NAME = re.compile(r"^model\.mixer(\[\d+\])?\.name$")


class ConfigError(ValueError):
  """A config that cannot be loaded or an override that cannot apply (one line)."""


def file_error(e: BaseException) -> str:
  """One line for a Python file (an experiment config, a study) that does not import or whose
  ``get_config``/``get_study`` raises: ``<file>, line <n>: <Error>: <message>``, at the
  innermost frame outside the installed libraries."""
  if isinstance(e, SyntaxError):
    return f"{e.filename}, line {e.lineno}: SyntaxError: {e.msg}"
  tb = e.__traceback__
  where = ""
  while tb is not None:
    if not tb.tb_frame.f_code.co_filename.startswith(sys.prefix):
      where = f"{tb.tb_frame.f_code.co_filename}, line {tb.tb_lineno}: "
    tb = tb.tb_next
  return f"{where}{type(e).__name__}: {' '.join(str(e).split())}"


def split_argv(argv: list[str]) -> tuple[str | None, list[str], list[str]]:
  """``(config spec, override args, other args)`` from ``argv[1:]``."""
  spec, overrides, rest = None, [], []
  args = list(argv[1:])
  while args:
    a = args.pop(0)
    if a.startswith("--config="):
      spec = a.split("=", 1)[1]
    elif a == "--config" and args:
      spec = args.pop(0)
    elif a.startswith(PREFIX):
      overrides.append(a if "=" in a or not args else f"{a}={args.pop(0)}")
    else:
      rest.append(a)
  return spec, overrides, rest


def load(spec: str) -> ml_collections.ConfigDict:
  """The config of ``<file>[:<variant>]``. A ``ValueError`` of ``get_config`` (a bad variant)
  becomes a ``ConfigError``; other exceptions of the file itself propagate as raised."""
  fv = flags.FlagValues()
  argv = ["x", f"--config={spec}"]  # only this: overrides are applied later, and checked
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, sys_argv=argv)
  try:
    fv(argv)
    config = fv.config
    config.to_dict()  # a file that failed to load raises only when its config is first used
  except flags.IllegalFlagValueError as e:  # get_config raised: the first of the context chain
    cause: BaseException = e
    while cause.__context__ is not None:
      cause = cause.__context__
    if isinstance(cause, ValueError):
      raise ConfigError(f"--config={spec}: {' '.join(str(cause).split())}") from None
    raise cause from None
  config.unlock()
  return config


def _key(arg: str) -> tuple[str, str]:
  key, _, value = arg[len(PREFIX) :].partition("=")
  return key, value


def flat(config: Any, prefix: str = "") -> dict[str, Any]:
  """Every leaf as ``{"model.mixer[1].window": 8, ...}`` (the override spelling)."""
  if isinstance(config, ml_collections.ConfigDict):
    config = config.to_dict()
  out: dict[str, Any] = {}
  if isinstance(config, dict):
    for k, v in config.items():
      out.update(flat(v, f"{prefix}.{k}" if prefix else str(k)))
  elif isinstance(config, list) and config and all(isinstance(v, dict) for v in config):
    for i, v in enumerate(config):
      out.update(flat(v, f"{prefix}[{i}]"))
  else:
    out[prefix] = config
  return out


def format_config(config: ml_collections.ConfigDict) -> str:
  """``key = value`` lines, sorted; values are Python literals as overrides take them."""
  return "\n".join(f"{k} = {v!r}" for k, v in sorted(flat(config).items()))


def _elements(items: list) -> str:
  names = [str(v.get("name", "?")) if isinstance(v, dict) else repr(v) for v in items]
  return ", ".join(f"{i} {n}" for i, n in enumerate(names))


def check_path(config: ml_collections.ConfigDict, arg: str) -> None:
  """Refuse an override whose key walks a list wrongly, before ml_collections sees it."""
  key, value = _key(arg)
  try:
    parts = config_path.split(key)
  except ValueError:
    fixed = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", key)
    hint = f"; list elements are written with brackets: {PREFIX}{fixed}={value}" * (fixed != key)
    raise ConfigError(f"cannot parse the override key '{key}'{hint}") from None
  node: Any = config
  for depth, part in enumerate(parts):
    here = key.split(".")[0] if depth == 0 else _spell(parts[:depth])
    if isinstance(node, list | tuple):
      if isinstance(part, int):
        if not -len(node) <= part < len(node):
          raise ConfigError(
            f"{PREFIX}{key}: {here} has {len(node)} elements ({_elements(list(node))}); "
            f"the index must be 0..{len(node) - 1}"
          )
        node = node[part]
        continue
      rest = ".".join(str(p) for p in parts[depth:])
      having = [i for i, v in enumerate(node) if isinstance(v, dict) and part in v] or [0]
      raise ConfigError(
        f"{PREFIX}{key}={value}: {here} is a list ({_elements(list(node))}: a hybrid stack, "
        f"cycled over depth), so name one element, e.g. {PREFIX}{here}[{having[0]}].{rest}"
        f"={value}, or choose the stack with the config's variant (:mixer=a+b)"
      )
    if isinstance(part, int):
      fixed = _spell(parts[:depth]) + "".join(f".{p}" for p in parts[depth + 1 :])
      raise ConfigError(f"{PREFIX}{key}: {here} is not a list; write {PREFIX}{fixed}={value}")
    if not isinstance(node, dict | ml_collections.ConfigDict) or part not in node:
      return  # unknown keys are reported with a "did you mean" when applied
    node = node[part]


def _spell(parts: tuple | list) -> str:
  out = ""
  for p in parts:
    out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
  return out


def apply(config: ml_collections.ConfigDict, overrides: list[str]) -> ml_collections.ConfigDict:
  """Apply ``--config.<key>=<value>`` args (type-checked by ml_collections)."""
  for arg in overrides:
    check_path(config, arg)
  fv = flags.FlagValues()
  argv = ["x", *overrides]
  try:  # overrides are read when the flag is defined, and again when its value is read
    config_flags.DEFINE_config_dict("config", config, flag_values=fv, sys_argv=argv)
    fv(argv)
    return fv.config
  except (AttributeError, KeyError, IndexError) as e:
    raise ConfigError(unknown_key(config, overrides, str(e))) from None
  except flags.Error as e:
    raise ConfigError(str(e).strip().splitlines()[-1].removeprefix("flag ")) from None


def unknown_key(config: ml_collections.ConfigDict, overrides: list[str], detail: str) -> str:
  known = flat(config)
  keys = set(known) | {k.rsplit(".", 1)[0] for k in known}
  bad = [k for k, _ in map(_key, overrides) if k not in keys] or [detail.strip("'\"")]
  hint = difflib.get_close_matches(bad[0], sorted(known), n=3)
  did_you_mean = f" (did you mean {', '.join(hint)}?)" if hint else ""
  where = "an override must name a key of the config file"
  if bad[0].startswith("data."):
    where = f"the data keys are the options of task '{config.get('task')}': " + ", ".join(
      sorted(k.split(".", 1)[1] for k in known if k.startswith("data."))
    )
  return f"unknown config key '{bad[0]}'{did_you_mean}; {where}"


def check_mixer_names(config: ml_collections.ConfigDict, overrides: list[str], spec: str) -> None:
  """A mixer renamed by an override must not keep options its new class does not take."""
  from lrm import mixers, registry

  for key, value in map(_key, overrides):
    if not MIXER_NAME.match(key):
      continue
    node = config.model.mixer
    m = re.search(r"\[(\d+)\]", key)
    node = node[int(m.group(1))] if m else node
    try:
      cls = registry.lookup("mixer", node["name"])
    except KeyError:
      continue  # an unknown name is reported, with the known ones, when the model is built
    extra = sorted(set(node) - {"name"} - set(registry.options(cls, mixers.SHARED)))
    if extra:
      file = spec.split(":", 1)[0]
      raise ConfigError(
        f"{PREFIX}{key}={value}: the spec keeps options of the config's previous mixer "
        f"({', '.join(extra)}) that '{value}' does not take; choose the mixer with the config's "
        f"variant instead: --config={file}:mixer={value} (mixer presets: "
        f"lrm/mixers/presets.py; 'a+b' is a hybrid stack)"
      )


def load_with_overrides(spec: str, overrides: list[str]) -> ml_collections.ConfigDict:
  """Steps 1-5 of the module docstring; the result is locked (no new keys)."""
  config = load(spec)
  task = next((v for k, v in map(_key, overrides) if k == "task"), None)
  lrm_config.complete(config, task)
  config.lock()
  config = apply(config, overrides)
  check_mixer_names(config, overrides, spec)
  lrm_config.write_run_options(config)
  return config


def error(message: object, code: int = 2) -> int:
  """Print ``message`` as one ``error:`` line on stderr; return ``code`` (a script's exit)."""
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
  return code


def parse_flags(
  argv: list[str], usage: str, define: Callable[[flags.FlagValues], None]
) -> tuple[flags.FlagValues, ml_collections.ConfigDict | None]:
  """A script's flags (``define`` adds them to a fresh ``FlagValues``, so ``main`` can be
  called repeatedly, e.g. by tests) and its config (None without ``--config``)."""
  spec, overrides, rest = split_argv(argv)
  fv = flags.FlagValues()
  define(fv)
  fv([argv[0] if argv else "lrm", *rest])
  if spec is None:
    if overrides:
      raise ConfigError(f"{overrides[0]} given without --config=<file>  ({usage})")
    return fv, None
  return fv, load_with_overrides(spec, overrides)
