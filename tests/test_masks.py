"""Attention masks against literal matrices, and the random block tables' contracts."""

import jax
import numpy as np
import pytest

from lrm.mixers import masks


def lit(rows: str) -> np.ndarray:
  """'110 011' -> bool matrix (one string per row, separated by spaces)."""
  return np.array([[c == "1" for c in r] for r in rows.split()], bool)


def test_causal_mask_literal():
  np.testing.assert_array_equal(masks.causal_mask(3), lit("100 110 111"))


def test_local_mask_literal_bidirectional_and_causal():
  bi = masks.local_mask(5, 1, causal=False)
  np.testing.assert_array_equal(bi, lit("11000 11100 01110 00111 00011"))
  ca = masks.local_mask(5, 1, causal=True)
  np.testing.assert_array_equal(ca, lit("10000 11000 01100 00110 00011"))
  np.testing.assert_array_equal(masks.local_mask(3, 0, causal=False), np.eye(3, dtype=bool))
  with pytest.raises(ValueError, match="window"):
    masks.local_mask(5, -1, causal=False)


def test_global_token_masks_literal():
  np.testing.assert_array_equal(
    masks.global_token_mask(4, 2, causal=False), lit("1111 1111 1100 1100")
  )
  np.testing.assert_array_equal(
    masks.global_token_mask(4, 2, causal=True), lit("1000 1100 1100 1100")
  )
  np.testing.assert_array_equal(
    masks.local_global_mask(6, 1, 1, causal=False),
    lit("111111 111000 111100 101110 100111 100011"),
  )
  np.testing.assert_array_equal(
    masks.local_global_mask(6, 1, 1, causal=True),
    lit("100000 110000 111000 101100 100110 100011"),
  )


def test_expand_blocks_cuts_partial_last_block():
  adj = np.array([[1, 0], [1, 1]], bool)
  np.testing.assert_array_equal(np.asarray(masks.expand_blocks(adj, 2, 3)), lit("110 110 111"))


def test_random_mask_literal():
  idx = np.array([[2], [0], [0]])
  valid = np.array([[True], [True], [False]])
  m = masks.random_mask(6, 2, idx, valid, causal=False)
  np.testing.assert_array_equal(np.asarray(m), lit("110011 110011 111100 111100 000011 000011"))
  mc = masks.random_mask(6, 2, idx, valid, causal=True)
  np.testing.assert_array_equal(np.asarray(mc), lit("100000 110000 111000 111100 000010 000011"))


def test_bigbird_mask_literal():
  idx = np.zeros((6, 1), np.int32)
  valid = np.zeros((6, 1), bool)
  idx[1, 0], valid[1, 0] = 4, True  # block 1 also sees block 4
  rows = [
    "111111111111",
    "111111111111",
    "111111001111",
    "111111001111",
    "111111110011",
    "111111110011",
    "110011111111",
    "110011111111",
    "110000111111",
    "110000111111",
    "111111111111",
    "111111111111",
  ]
  m = masks.bigbird_mask(12, 2, 3, 2, idx, valid, causal=False)
  np.testing.assert_array_equal(np.asarray(m), lit(" ".join(rows)))
  # causal BigBird is defined as the bidirectional pattern AND j <= i
  mc = masks.bigbird_mask(12, 2, 3, 2, idx, valid, causal=True)
  np.testing.assert_array_equal(np.asarray(mc), lit(" ".join(rows)) & np.tri(12, dtype=bool))


def test_global_blocks_split():
  assert masks.global_blocks_split(5, 2) == (1, 1)
  assert masks.global_blocks_split(5, 3) == (2, 1)
  assert masks.global_blocks_split(1, 2) == (1, 0)
  assert masks.global_blocks_split(4, 0) == (0, 0)


def test_candidates_literal():
  np.testing.assert_array_equal(masks.random_candidates(3, causal=False), lit("011 101 110"))
  np.testing.assert_array_equal(masks.random_candidates(3, causal=True), lit("000 100 110"))
  # 6 blocks, 3-block window, globals 0 and 5: only blocks outside window and not global
  np.testing.assert_array_equal(
    masks.bigbird_candidates(6, 3, 2, causal=False),
    lit("000000 000110 000010 010000 011000 000000"),
  )
  np.testing.assert_array_equal(
    masks.bigbird_candidates(6, 3, 2, causal=True),
    lit("000000 000000 000000 010000 011000 000000"),
  )


def check_table(idx, valid, cand, r):
  idx, valid = np.asarray(idx), np.asarray(valid)
  assert idx.shape == valid.shape == (cand.shape[0], min(r, cand.sum(1).max()))
  for c in range(cand.shape[0]):
    chosen = idx[c][valid[c]]
    assert len(chosen) == min(r, cand[c].sum())  # as many as possible, ...
    assert len(set(chosen.tolist())) == len(chosen)  # ... distinct ...
    assert cand[c, chosen].all()  # ... and all allowed


@pytest.mark.parametrize("causal", [False, True])
def test_draw_random_blocks_contract_and_determinism(causal):
  cand = masks.random_candidates(12, causal=causal)
  state = np.random.get_state()[1].copy()  # noqa: NPY002 (checking it is left alone)
  a = masks.draw_random_blocks(cand, 3, (0, 1))
  check_table(*a, cand, 3)
  np.testing.assert_array_equal(np.random.get_state()[1], state)  # noqa: NPY002
  b = masks.draw_random_blocks(cand, 3, (0, 1))
  c = masks.draw_random_blocks(cand, 3, (0, 2))
  np.testing.assert_array_equal(a[0], b[0])
  assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("causal", [False, True])
def test_sample_random_blocks_contract(causal):
  cand = masks.bigbird_candidates(12, 3, 2, causal=causal)
  a = masks.sample_random_blocks(jax.random.key(0), cand, 2)
  b = masks.sample_random_blocks(jax.random.key(1), cand, 2)
  check_table(*a, cand, 2)
  check_table(*b, cand, 2)
  assert not np.array_equal(np.asarray(a[0]), np.asarray(b[0]))
