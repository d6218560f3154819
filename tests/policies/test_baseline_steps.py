"""Property tests for the pure tensor steps of the FastV and ToMe baselines."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenprune.policies import fastv_steps as fastv
from tokenprune.policies.tome import merge as tome

SETTINGS = settings(max_examples=60, deadline=None)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _half_of_mergeable(n: int, protected: torch.Tensor) -> int:
    a_free = int((~protected[0::2]).sum())
    b_free = int((~protected[1::2]).sum())
    return min(n // 2, a_free if b_free > 0 else 0)


@st.composite
def merge_case(draw, max_n: int = 24, protect: bool = True):
    n = draw(st.integers(1, max_n))
    c = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    r = draw(st.integers(0, n))
    g = _gen(seed)
    # A few distinct values so that exact ties in similarity happen too.
    if draw(st.booleans()):
        metric = torch.randn(n, c, generator=g, dtype=torch.float64)
    else:
        metric = torch.randint(-2, 3, (n, c), generator=g).to(torch.float64)
        metric[metric.abs().sum(-1) == 0, 0] = 1.0
    if protect:
        protected = torch.rand(n, generator=g) < draw(st.sampled_from([0.0, 0.2, 0.5, 0.9]))
    else:
        protected = torch.zeros(n, dtype=torch.bool)
    return metric, r, protected, g


# --------------------------------------------------------------------------- ToMe: plan


@SETTINGS
@given(merge_case())
def test_plan_structure_and_clamping(case):
    metric, r, protected, _ = case
    n = metric.shape[0]
    plan = tome.bipartite_soft_matching(metric, r, protected)
    expected_r = min(r, _half_of_mergeable(n, protected))
    assert plan.r == expected_r
    assert plan.r <= n // 2  # at most 50% per layer
    assert plan.keep.numel() == n - plan.r
    assert plan.dst.shape == plan.src.shape
    # keep ascending, keep and src partition range(n)
    assert torch.all(plan.keep[1:] > plan.keep[:-1])
    assert sorted(plan.keep.tolist() + plan.src.tolist()) == list(range(n))
    # src from A (even), dst from B (odd) and surviving
    assert all(i % 2 == 0 for i in plan.src.tolist())
    assert all(j % 2 == 1 for j in plan.dst.tolist())
    assert set(plan.dst.tolist()) <= set(plan.keep.tolist())


@SETTINGS
@given(merge_case())
def test_protected_never_merged(case):
    metric, r, protected, _ = case
    plan = tome.bipartite_soft_matching(metric, r, protected)
    prot = set(torch.nonzero(protected).flatten().tolist())
    assert prot <= set(plan.keep.tolist())
    assert not prot & set(plan.src.tolist())
    assert not prot & set(plan.dst.tolist())


@SETTINGS
@given(merge_case())
def test_plan_matches_best_edges(case):
    """dst is each src's most similar free B token; chosen edges are the top-r."""
    metric, r, protected, _ = case
    n = metric.shape[0]
    plan = tome.bipartite_soft_matching(metric, r, protected)
    m = torch.nn.functional.normalize(metric, dim=-1)
    free_b = [j for j in range(1, n, 2) if not protected[j]]
    free_a = [i for i in range(0, n, 2) if not protected[i]]
    if not free_b:
        assert plan.r == 0
        return

    def best(i):
        sims = torch.stack([m[i] @ m[j] for j in free_b])
        k = int(torch.argmax(sims))  # first maximum -> lowest index
        return free_b[k], float(sims[k])

    best_of = {i: best(i) for i in free_a}
    for s, d in zip(plan.src.tolist(), plan.dst.tolist()):
        assert d == best_of[s][0]
    chosen = set(plan.src.tolist())
    if chosen and len(chosen) < len(free_a):
        lowest_chosen = min(best_of[i][1] for i in chosen)
        highest_left = max(best_of[i][1] for i in free_a if i not in chosen)
        assert lowest_chosen >= highest_left - 1e-12
        # stable tie-break: on an exact tie the lower A index is chosen
        for i in free_a:
            if i in chosen:
                continue
            for j in chosen:
                if best_of[j][1] == best_of[i][1]:
                    assert j < i


def test_plan_is_deterministic_on_ties():
    metric = torch.ones(8, 3)
    plan = tome.bipartite_soft_matching(metric, 2, None)
    assert plan.src.tolist() == [0, 2]
    assert plan.dst.tolist() == [1, 1]
    assert plan.keep.tolist() == [1, 3, 4, 5, 6, 7]


# --------------------------------------------------------------------------- ToMe: merge


@SETTINGS
@given(merge_case(), st.integers(1, 5), st.booleans())
def test_merge_size_weighted_and_count(case, d, unit_sizes):
    metric, r, protected, g = case
    n = metric.shape[0]
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    size = torch.ones(n) if unit_sizes else torch.randint(1, 5, (n,), generator=g).float()
    plan = tome.bipartite_soft_matching(metric, r, protected)
    x_new, s_new = tome.merge_tokens(x, size, plan)

    assert x_new.shape == (n - plan.r, d)
    assert s_new.shape == (n - plan.r,)
    assert float(s_new.sum()) == pytest.approx(float(size.sum()), abs=1e-9)
    if unit_sizes:
        assert float(s_new.sum()) == n

    # direct computation
    members = {k: [k] for k in plan.keep.tolist()}
    for s, t in zip(plan.src.tolist(), plan.dst.tolist()):
        members[t].append(s)
    for row, k in enumerate(plan.keep.tolist()):
        ids = members[k]
        w = size[ids].double()
        want = (x[ids] * w[:, None]).sum(0) / w.sum()
        assert torch.allclose(x_new[row], want, atol=1e-12, rtol=1e-12)
        assert float(s_new[row]) == float(w.sum())
        if len(ids) == 1:  # untouched rows are copied exactly
            assert torch.equal(x_new[row], x[k])


@SETTINGS
@given(merge_case(protect=False), st.integers(1, 5))
def test_identical_tokens_merge_to_same_token(case, d):
    metric, r, _, g = case
    n = metric.shape[0]
    v = torch.randn(d, generator=g, dtype=torch.float32)
    x = v.expand(n, d).clone()
    size = torch.randint(1, 5, (n,), generator=g)
    plan = tome.bipartite_soft_matching(x, r, None)  # identical metric too
    x_new, s_new = tome.merge_tokens(x, size, plan)
    assert plan.r == min(r, n // 2)
    assert x_new.dtype == x.dtype and s_new.dtype == size.dtype
    assert torch.allclose(x_new, v.expand_as(x_new), atol=1e-6, rtol=1e-6)
    assert int(s_new.sum()) == int(size.sum())


@SETTINGS
@given(merge_case(), st.integers(1, 4))
def test_merge_r0_returns_inputs(case, d):
    metric, _, protected, g = case
    n = metric.shape[0]
    x = torch.randn(n, d, generator=g)
    size = torch.randint(1, 5, (n,), generator=g).float()
    plan = tome.bipartite_soft_matching(metric, 0, protected)
    assert plan.r == 0 and plan.keep.tolist() == list(range(n))
    x_new, s_new = tome.merge_tokens(x, size, plan)
    assert torch.equal(x_new, x) and torch.equal(s_new, size)


@SETTINGS
@given(
    st.integers(2, 40), st.integers(1, 5), st.sampled_from(["constant", "decreasing"]),
    st.integers(0, 2**31 - 1), st.data(),
)
def test_schedule_then_merge_reaches_target(n_vision, n_layers, mode, seed, data):
    cap = tome._max_merges(n_vision, n_layers)
    target = data.draw(st.integers(n_vision - cap, n_vision))
    sched = tome.merge_schedule(n_vision, n_layers, target, mode)
    g = _gen(seed)
    x = torch.randn(n_vision, 3, generator=g, dtype=torch.float64)
    size = torch.ones(n_vision, dtype=torch.float64)
    for r in sched:
        n_before = x.shape[0]
        plan = tome.bipartite_soft_matching(x, r, None)
        assert plan.r == r <= n_before // 2
        x, size = tome.merge_tokens(x, size, plan)
    assert x.shape[0] == target
    assert float(size.sum()) == n_vision


# --------------------------------------------------------------------------- ToMe: proportional attention


def _attend(q, k, v, bias=None):
    logits = (q @ k.T) / math.sqrt(q.shape[-1])
    if bias is not None:
        logits = logits + bias
    return torch.softmax(logits, dim=-1) @ v


@SETTINGS
@given(st.integers(1, 10), st.integers(1, 8), st.integers(0, 2**31 - 1), st.data())
def test_proportional_attention_equals_duplication(n, d, seed, data):
    sizes = data.draw(st.lists(st.integers(1, 4), min_size=n, max_size=n))
    g = _gen(seed)
    q = torch.randn(1, d, generator=g, dtype=torch.float64)
    k = torch.randn(n, d, generator=g, dtype=torch.float64)
    v = torch.randn(n, d, generator=g, dtype=torch.float64)
    s = torch.tensor(sizes)
    bias = tome.proportional_attention_bias(s)
    assert bias.shape == (n,) and bias.is_floating_point()
    got = _attend(q, k, v, bias.to(torch.float64))
    k_dup = k.repeat_interleave(s, dim=0)
    v_dup = v.repeat_interleave(s, dim=0)
    want = _attend(q, k_dup, v_dup)
    assert torch.allclose(got, want, atol=1e-6, rtol=0)
    if len(set(sizes)) > 1:  # non-uniform sizes: the bias matters, no bias is wrong
        assert not torch.allclose(_attend(q, k, v), want, atol=1e-9, rtol=0)


@SETTINGS
@given(st.integers(1, 30), st.sampled_from([torch.long, torch.float32, torch.float64]))
def test_bias_zero_for_unit_sizes(n, dtype):
    bias = tome.proportional_attention_bias(torch.ones(n, dtype=dtype))
    assert bias.is_floating_point()
    assert torch.equal(bias, torch.zeros_like(bias))


# --------------------------------------------------------------------------- ToMe: schedule


@SETTINGS
@given(st.integers(0, 3000), st.integers(1, 12), st.sampled_from(["constant", "decreasing"]), st.data())
def test_schedule_properties(n_vision, n_layers, mode, data):
    cap = tome._max_merges(n_vision, n_layers)
    target = data.draw(st.integers(n_vision - cap, n_vision))
    sched = tome.merge_schedule(n_vision, n_layers, target, mode)
    assert len(sched) == n_layers
    assert sum(sched) == n_vision - target
    n = n_vision
    for r in sched:
        assert 0 <= r <= n // 2
        n -= r
    assert n == target
    assert all(a >= b for a, b in zip(sched, sched[1:]))  # non-increasing
    total = n_vision - target
    if mode == "constant" and -(-total // n_layers) <= target:
        # the equal split is feasible, so it is what we get
        assert max(sched) - min(sched) <= 1
    if mode == "decreasing" and n_layers >= 2 and total >= n_layers * (n_layers + 1) and -(-total // n_layers) <= target:
        assert sched[0] > sched[-1]  # genuinely front-loaded


@SETTINGS
@given(st.integers(2, 3000), st.integers(1, 12), st.sampled_from(["constant", "decreasing"]), st.data())
def test_schedule_infeasible_raises(n_vision, n_layers, mode, data):
    cap = tome._max_merges(n_vision, n_layers)
    if n_vision - cap == 0:
        return
    target = data.draw(st.integers(0, n_vision - cap - 1))
    with pytest.raises(ValueError, match="50%"):
        tome.merge_schedule(n_vision, n_layers, target, mode)


def test_schedule_examples_and_errors():
    assert tome.merge_schedule(576, 4, 144, "constant") == [108, 108, 108, 108]
    dec = tome.merge_schedule(576, 4, 144, "decreasing")
    assert sum(dec) == 432 and dec == sorted(dec, reverse=True) and dec[0] > dec[-1]
    assert tome.merge_schedule(8, 3, 1, "constant") == [4, 2, 1]  # tight: halving
    with pytest.raises(ValueError):
        tome.merge_schedule(8, 2, 1, "constant")  # 8 -> 4 -> 2 at best
    with pytest.raises(ValueError):
        tome.merge_schedule(10, 2, 11, "constant")
    with pytest.raises(ValueError):
        tome.merge_schedule(10, 2, 5, "linear")
    assert tome.merge_schedule(10, 3, 10, "decreasing") == [0, 0, 0]


# --------------------------------------------------------------------------- FastV


@SETTINGS
@given(st.integers(1, 2000), st.integers(0, 100))
def test_fastv_keep_count_ratio(n_vision, pct):
    got = fastv.fastv_keep_count(n_vision, ratio_dropped=pct / 100)
    exact = -(-(100 - pct) * n_vision // 100)  # ceil((1 - R) * Lv) in integers
    assert got == max(1, min(n_vision, exact))


@SETTINGS
@given(st.integers(1, 2000), st.integers(-5, 2100))
def test_fastv_keep_count_keep(n_vision, keep):
    assert fastv.fastv_keep_count(n_vision, keep=keep) == max(1, min(n_vision, keep))


def test_fastv_keep_count_examples_and_errors():
    assert fastv.fastv_keep_count(576, ratio_dropped=0.5) == 288
    assert fastv.fastv_keep_count(10, ratio_dropped=0.7) == 3  # not 4 from float noise
    assert fastv.fastv_keep_count(576, ratio_dropped=0.75) == 144
    assert fastv.fastv_keep_count(7, ratio_dropped=0.5) == 4
    assert fastv.fastv_keep_count(10, ratio_dropped=1.0) == 1
    assert fastv.fastv_keep_count(10, ratio_dropped=0.0) == 10
    for kwargs in ({}, {"ratio_dropped": 0.5, "keep": 3}, {"ratio_dropped": 1.5},
                   {"ratio_dropped": -0.1}):
        with pytest.raises(ValueError):
            fastv.fastv_keep_count(10, **kwargs)


@SETTINGS
@given(st.integers(1, 8), st.integers(1, 40), st.integers(0, 2**31 - 1))
def test_fastv_scores_mean_over_queries(n_q, n_vis, seed):
    g = _gen(seed)
    probs = torch.softmax(torch.randn(n_q, n_vis, generator=g), dim=-1)
    scores = fastv.fastv_scores(probs)
    assert scores.shape == (n_vis,)
    for j in range(n_vis):
        assert float(scores[j]) == pytest.approx(sum(float(probs[i, j]) for i in range(n_q)) / n_q,
                                                 rel=1e-5, abs=1e-7)
    assert torch.equal(fastv.fastv_scores(probs[-1:]), probs[-1])  # query='last'
    assert torch.equal(fastv.fastv_scores(probs[-1]), probs[-1])


@SETTINGS
@given(st.integers(1, 40), st.integers(0, 45), st.integers(0, 2**31 - 1), st.booleans())
def test_top_k_in_order(n, k, seed, with_ties):
    g = _gen(seed)
    scores = (torch.randint(0, 4, (n,), generator=g).float() if with_ties
              else torch.randn(n, generator=g))
    idx = fastv.top_k_in_order(scores, k)
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
    assert fastv.top_k_in_order(s, 2).tolist() == [1, 2]
    assert fastv.top_k_in_order(s, 4).tolist() == [1, 2, 3, 4]
    assert fastv.top_k_in_order(s, 0).tolist() == []
    assert fastv.top_k_in_order(torch.tensor([3.0, float("nan"), 1.0]), 2).tolist() == [0, 2]
