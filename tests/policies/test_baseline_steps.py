"""Property tests for the pure tensor steps of the FastV and ToMe baselines."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tokenprune

from tokenprune.policies import fastv
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
@given(st.integers(2, 600), st.integers(1, 6), st.sampled_from(["constant", "decreasing"]), st.integers(0, 2**31 - 1), st.data())
def test_planned_schedule_then_merge_reaches_target(n_vision, n_layers, mode, seed, data):
    layers = tuple(range(1, n_layers + 1))
    target = data.draw(st.integers(1, n_vision))
    weights = tome.merge_weights(n_layers, mode)
    counts = tokenprune.plan_kept_counts(n_vision, tokenprune.Budget("keep", target), layers, n_layers + 1, weights)
    violation = tome.half_rule_violation(counts, n_vision)
    previous = n_vision
    if violation is not None:  # the detector is right: that step merges more than half
        before = ([n_vision] + counts)[violation]
        assert before - counts[violation] > before // 2
        return
    g = _gen(seed)
    x = torch.randn(n_vision, 3, generator=g, dtype=torch.float64)
    size = torch.ones(n_vision, dtype=torch.float64)
    for count in counts:
        plan = tome.bipartite_soft_matching(x, previous - count, None)
        assert plan.r == previous - count <= previous // 2
        x, size = tome.merge_tokens(x, size, plan)
        previous = count
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


@given(st.integers(1, 12), st.sampled_from(["constant", "decreasing"]))
def test_merge_weights_shape(n_layers, mode):
    weights = tome.merge_weights(n_layers, mode)
    assert len(weights) == n_layers and weights[-1] == 0.0
    assert list(weights) == sorted(weights, reverse=True) and all(0 <= w < 1 for w in weights)
    steps = [a - b for a, b in zip((1.0, *weights), weights)]  # share merged at each layer
    assert sum(steps) == pytest.approx(1.0)
    if mode == "constant":
        assert max(steps) - min(steps) < 1e-9
    elif n_layers > 1:
        assert all(a > b for a, b in zip(steps, steps[1:]))  # front-loaded


def test_schedule_examples_and_errors():
    weights = tome.merge_weights(4, "constant")
    assert tokenprune.plan_kept_counts(576, tokenprune.Budget("keep", 144), (1, 2, 3, 4), 5, weights) == [468, 360, 252, 144]
    assert tome.half_rule_violation([4, 2, 1], 8) is None  # halving is allowed
    assert tome.half_rule_violation([4, 1], 8) == 1  # 4 -> 1 merges 3 of 4
    assert tome.half_rule_violation([3], 8) == 0
    with pytest.raises(ValueError, match="mode"):
        tome.merge_weights(2, "linear")


# --------------------------------------------------------------------------- FastV


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
