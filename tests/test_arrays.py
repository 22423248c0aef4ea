import numpy as np
import pytest

from lrm.data.arrays import ArrayDataset


def make(n=10):
  return ArrayDataset({"x": np.arange(n), "y": np.arange(n) * 2})


def test_train_batches_are_a_pure_function_of_seed_and_step():
  ds = make()
  full = [b["x"] for _, b in zip(range(12), ds.train_batches(4, seed=3), strict=False)]
  resumed = [
    b["x"] for _, b in zip(range(5), ds.train_batches(4, seed=3, start_step=7), strict=False)
  ]
  for a, b in zip(full[7:], resumed, strict=True):
    np.testing.assert_array_equal(a, b)
  other = [b["x"] for _, b in zip(range(12), ds.train_batches(4, seed=4), strict=False)]
  assert any(not np.array_equal(a, b) for a, b in zip(full, other, strict=True))


def test_each_epoch_is_a_permutation_even_across_batch_boundaries():
  ds = make(10)
  stream = np.concatenate(
    [b["x"] for _, b in zip(range(10), ds.train_batches(4, seed=0), strict=False)]
  )
  for e in range(4):
    assert sorted(stream[e * 10 : (e + 1) * 10]) == list(range(10))


def test_batch_larger_than_dataset():
  ds = make(3)
  b = next(ds.train_batches(8, seed=0))
  assert b["x"].shape == (8,) and set(b["x"]) == {0, 1, 2}


def test_eval_batches_cover_every_row_once_with_valid_mask():
  ds = make(10)
  batches = list(ds.eval_batches(4))
  assert len(batches) == ds.num_eval_batches(4) == 3
  xs = np.concatenate([b["x"][b["valid"]] for b in batches])
  np.testing.assert_array_equal(xs, np.arange(10))
  assert batches[-1]["valid"].tolist() == [True, True, False, False]


def test_shard_and_validation():
  ds = make(10)
  np.testing.assert_array_equal(ds.shard(1, 3).arrays["x"], [1, 4, 7])
  with pytest.raises(ValueError, match="different numbers of rows"):
    ArrayDataset({"a": np.zeros(3), "b": np.zeros(4)})
