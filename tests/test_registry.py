import pytest

from lrm import registry


def test_register_lookup_and_options():
  @registry.register("testkind", "thing")
  class Thing:
    def __init__(self, dim, *, size=3, colour="red"):
      self.dim, self.size, self.colour = dim, size, colour

  assert registry.names("testkind") == ["thing"]
  assert registry.options(Thing, ("dim",)) == ["size", "colour"]
  t = registry.build("testkind", {"name": "thing", "size": 5}, dim=2)
  assert (t.dim, t.size, t.colour) == (2, 5, "red")
  with pytest.raises(ValueError, match=r"unknown option\(s\) \['sise'\].*known options: size"):
    registry.build("testkind", {"name": "thing", "sise": 5}, dim=2)
  with pytest.raises(KeyError, match="unknown testkind 'other'; known testkinds: thing"):
    registry.lookup("testkind", "other")
  with pytest.raises(ValueError, match="must be a dict with a 'name'"):
    registry.check_spec("testkind", {"size": 1})


def test_double_registration_is_refused():
  @registry.register("testkind2", "a")
  class A:
    pass

  with pytest.raises(KeyError, match="already registered"):

    @registry.register("testkind2", "a")
    class B:
      pass
