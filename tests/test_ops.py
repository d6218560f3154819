"""top_k_in_order: the k largest, in original order, lower index on ties."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from tokenprune import top_k_in_order


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@given(st.integers(1, 40), st.integers(0, 45), st.integers(0, 2**31 - 1), st.booleans())
def test_top_k_in_order(n, k, seed, with_ties):
    g = _gen(seed)
    scores = (torch.randint(0, 4, (n,), generator=g).float() if with_ties
              else torch.randn(n, generator=g))
    idx = top_k_in_order(scores, k)
    kk = min(k, n)
    assert idx.dtype == torch.long and idx.shape == (kk,)
    assert torch.all(idx[1:] > idx[:-1])  # ascending, unique
    chosen = set(idx.tolist())
    rest = [i for i in range(n) if i not in chosen]
    if chosen and rest:
        assert min(float(scores[i]) for i in chosen) >= max(float(scores[i]) for i in rest)
    # equals the multiset of the k largest values
    assert sorted(scores[idx].tolist()) == sorted(scores.tolist(), reverse=True)[:kk][::-1]
    # tie-break: a dropped index never beats a kept one with an equal score
    for i in rest:
        for j in chosen:
            if scores[i] == scores[j]:
                assert j < i


def test_top_k_in_order_examples():
    s = torch.tensor([0.1, 0.5, 0.5, 0.2, 0.5])
    assert top_k_in_order(s, 2).tolist() == [1, 2]
    assert top_k_in_order(s, 4).tolist() == [1, 2, 3, 4]
    assert top_k_in_order(s, 0).tolist() == []
    assert top_k_in_order(torch.tensor([3.0, float("nan"), 1.0]), 2).tolist() == [0, 2]
