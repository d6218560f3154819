"""Pure layout functions of the llava-codebase adapter (no llava-torch needed)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tokenprune
from tokenprune.adapters.llava_codebase.layout import crop_cell, spliced_token_ids, view_count, view_layout

IMAGE = -200


def test_mgm_hd_layout_maps_2880_tokens_global_view_first_then_crops_row_major():
    cells = view_layout(side=24, image_grid=2, image_global=True)
    assert cells.shape == (2880, 3)
    assert len({tuple(c) for c in cells.tolist()}) == 2880  # every (view, row, column) exactly once
    assert set(cells[:, 0].tolist()) == set(range(5))
    assert cells[:, 1:].min() == 0 and cells[:, 1:].max() == 23
    # the block is view after view, each row-major
    assert cells[0].tolist() == [0, 0, 0] and cells[575].tolist() == [0, 23, 23]
    assert cells[576].tolist() == [1, 0, 0] and cells[576 + 25].tolist() == [1, 1, 1]
    assert cells[-1].tolist() == [4, 23, 23]
    assert [crop_cell(v, 2, True) for v in range(5)] == [None, (0, 0), (0, 1), (1, 0), (1, 1)]


@given(side=st.integers(1, 12), grid=st.integers(1, 4), global_view=st.booleans())
def test_view_layout_is_a_bijection_onto_its_views(side, grid, global_view):
    cells = view_layout(side, grid, global_view)
    views = view_count(grid, global_view)
    assert cells.shape == (views * side * side, 3)
    assert len({tuple(c) for c in cells.tolist()}) == len(cells)
    assert cells[:, 0].tolist() == sorted(cells[:, 0].tolist())  # views are contiguous, in order
    crops = [crop_cell(v, grid, global_view) for v in range(views)]
    real = [c for c in crops if c is not None]
    assert real == sorted(real) and len(set(real)) == len(real)  # crops row-major, each once
    assert len(real) == (grid * grid if grid > 1 else 0)


def test_plain_llava_has_one_view():
    assert view_count(1, False) == 1 and view_count(1, True) == 1
    assert view_layout(24).shape == (576, 3) and crop_cell(0, 1, False) is None
    with pytest.raises(ValueError):
        view_layout(0)
    with pytest.raises(ValueError):
        crop_cell(5, 2, True)


@st.composite
def spliced_batches(draw):
    """Prompts with images, and the (mask, length) the codebase's splicing would return for them."""
    batch = draw(st.integers(1, 4))
    per_image = draw(st.integers(1, 9))
    left = draw(st.booleans())
    rows = []
    for _ in range(batch):
        tokens = draw(st.lists(st.one_of(st.integers(3, 50), st.just(IMAGE)), min_size=1, max_size=8))
        rows.append(tokens)
    width = max(len(r) for r in rows) + draw(st.integers(0, 2))
    ids = torch.zeros(batch, width, dtype=torch.long)
    mask = torch.zeros(batch, width, dtype=torch.long)
    expected_rows = []
    for b, tokens in enumerate(rows):
        span = slice(width - len(tokens), width) if left else slice(0, len(tokens))
        ids[b, span] = torch.tensor(tokens)
        mask[b, span] = 1
        expected_rows.append([t for tok in tokens for t in ([IMAGE] * per_image if tok == IMAGE else [tok])])
    out_len = max(len(r) for r in expected_rows)
    out_mask = torch.zeros(batch, out_len, dtype=torch.long)
    expected = torch.zeros(batch, out_len, dtype=torch.long)
    for b, row in enumerate(expected_rows):
        span = slice(out_len - len(row), out_len) if left else slice(0, len(row))
        out_mask[b, span] = 1
        expected[b, span] = torch.tensor(row)
    return ids, mask, out_mask, expected, per_image, rows


@given(spliced_batches())
def test_spliced_ids_rebuild_the_decoder_sequence(case):
    ids, mask, out_mask, expected, per_image, rows = case
    spliced, blocks = spliced_token_ids(ids, mask, out_mask, expected.shape[1], IMAGE)
    assert torch.equal(spliced, expected)
    assert blocks == [[per_image] * row.count(IMAGE) for row in rows]


def test_spliced_ids_refuse_rows_that_unequal_blocks_would_explain():
    ids = torch.tensor([[5, IMAGE, 6, IMAGE]])
    # 2 text tokens + 7 vision positions: two images cannot have equal blocks
    with pytest.raises(tokenprune.UnsupportedInputError, match="equal image blocks"):
        spliced_token_ids(ids, None, None, 9, IMAGE)
    with pytest.raises(tokenprune.UnsupportedInputError):
        spliced_token_ids(torch.tensor([[5, 6]]), None, None, 4, IMAGE)  # no image, yet longer
