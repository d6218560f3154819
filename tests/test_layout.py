"""The layout transition keeps what it must, in order, with fillers on the left (property-based)."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from tokenprune import RowSelection
from tokenprune.layout import FILLER, MERGED, TEXT, VISION, Layout, apply_selections


@st.composite
def requests(draw):
    rows = draw(st.integers(1, 3))
    width = draw(st.integers(4, 24))
    vision = torch.zeros(rows, width, dtype=torch.bool)
    valid = torch.zeros(rows, width, dtype=torch.bool)
    selections = []
    for b in range(rows):
        length = draw(st.integers(1, width))
        start = width - length if draw(st.booleans()) else 0  # left or right padding
        valid[b, start : start + length] = True
        flags = draw(st.lists(st.booleans(), min_size=length, max_size=length))
        vision[b, start : start + length] = torch.tensor(flags)
        n = int(vision[b].sum())
        keep = sorted(draw(st.sets(st.integers(0, max(n - 1, 0)), max_size=n))) if n else []
        n_merged = draw(st.integers(0, 2)) if n else 0
        anchors = [draw(st.integers(0, n - 1)) for _ in range(n_merged)]
        selections.append(
            RowSelection(
                keep=torch.tensor(keep, dtype=torch.long),
                merged_hidden=torch.randn(n_merged, 3) if n_merged else None,
                merged_anchor=torch.tensor(anchors, dtype=torch.long) if n_merged else None,
                merged_members=[torch.tensor([a]) for a in anchors] if n_merged else None,
            )
        )
    return Layout.initial(vision, valid), selections


@given(requests())
def test_transition_keeps_text_and_selected_vision_in_order(request):
    layout, selections = request
    transition = apply_selections(layout, selections)
    new = transition.layout
    for b, sel in enumerate(selections):
        kind, origin = new.kind[b], new.origin[b]
        real = kind != FILLER
        first_real = int(real.float().argmax()) if real.any() else new.length
        assert not real[:first_real].any() and real[first_real:].all()  # fillers only on the left
        assert not new.valid[b][kind == FILLER].any()
        text_before = layout.origin[b][(layout.kind[b] == TEXT) & layout.valid[b]]
        assert torch.equal(origin[kind == TEXT], text_before)
        vision_slots = layout.vision_slots(b)
        expected_vision = layout.origin[b][vision_slots[sel.keep]]
        assert torch.equal(origin[kind == VISION], torch.sort(expected_vision).values)
        merged = torch.nonzero(kind == MERGED).flatten()
        assert merged.numel() == sel.n_merged
        if merged.numel():
            assert (merged[1:] - merged[:-1] == 1).all()  # one contiguous block
            last_vision = int(vision_slots.max())
            before = origin[first_real : int(merged[0])]
            after = origin[int(merged[-1]) + 1 :]
            assert (before <= layout.origin[b][last_vision]).all()
            assert (after > layout.origin[b][last_vision]).all()
            assert torch.equal(origin[merged], layout.origin[b][vision_slots[sel.merged_anchor]])
            assert torch.equal(transition.source[b, merged], vision_slots[sel.merged_anchor])
        copied = kind != FILLER
        assert torch.equal(layout.origin[b][transition.source[b][copied & (kind != MERGED)]], origin[copied & (kind != MERGED)])
