"""The modules of lrm/train before it was regrouped by concept still resolve, with a warning
that names the module holding their contents now."""

from __future__ import annotations

import importlib

import pytest

import lrm.train

OLD_TO_NEW = {
  "evaluate": "step",
  "extend": "loop",
  "finish": "loop",
  "guard": "rundir",
  "launch": "runtime",
  "malloc": "runtime",
  "monitor": "report",
  "plots": "report",
  "sharding": "runtime",
  "timing": "report",
  "trace": "report",
  "tracking": "report",
}


@pytest.mark.parametrize("old", sorted(OLD_TO_NEW))
def test_an_old_module_name_resolves_with_a_deprecation_warning(old):
  new = importlib.import_module(f"lrm.train.{OLD_TO_NEW[old]}")
  with pytest.warns(DeprecationWarning, match=rf"lrm\.train\.{old} is now {new.__name__}"):
    assert getattr(lrm.train, old) is new
  with pytest.warns(DeprecationWarning, match=new.__name__):
    exec(f"from lrm.train import {old} as module", scope := {})
  assert scope["module"] is new


def test_the_alias_table_is_the_packages_own():
  assert lrm.train.MOVED == OLD_TO_NEW


def test_an_unknown_name_is_still_an_error():
  with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
    lrm.train.nonesuch  # noqa: B018
  with pytest.raises(ImportError):
    from lrm.train import nonesuch  # noqa: F401
