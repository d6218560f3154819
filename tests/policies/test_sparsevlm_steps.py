"""Property and example tests for the pure SparseVLM steps (policies/sparsevlm/steps.py)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import tokenprune


from tokenprune.policies.sparsevlm import steps

# database=None: keep hypothesis from writing a .hypothesis/ folder into the repo.
FAST = settings(max_examples=40, deadline=None, database=None)

seeds = st.integers(min_value=0, max_value=2**31 - 1)


def randn(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def random_probs(seed: int, *shape: int) -> torch.Tensor:
    """Rows of a softmax over the last dim, like attention probabilities."""
    return torch.softmax(2.0 * randn(seed, *shape), dim=-1)


def with_rank(seed: int, rows: int, cols: int, rank: int) -> torch.Tensor:
    """A float32 [rows, cols] matrix whose singular values are exactly known:
    ``rank`` of them in [1, 2], the rest 0, so matrix_rank is unambiguous."""
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(rows, rank, generator=g, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(cols, rank, generator=g, dtype=torch.float64)).Q
    s = 1.0 + torch.rand(rank, generator=g, dtype=torch.float64)
    return ((u * s) @ v.T).float()


def partition(labels: torch.Tensor, index_of=None) -> set[frozenset[int]]:
    """The clustering as a set of frozensets of (original) point indices."""
    groups: dict[int, set[int]] = {}
    for i, lab in enumerate(labels.tolist()):
        groups.setdefault(lab, set()).add(i if index_of is None else index_of[i])
    return {frozenset(g) for g in groups.values()}


# ---------------------------------------------------------------------------
# Raters
# ---------------------------------------------------------------------------


@FAST
@given(
    seed=seeds,
    n_vision=st.integers(0, 6),
    n_text=st.integers(0, 6),
    dim=st.integers(1, 8),
    scaled=st.booleans(),
)
def test_relevance_matches_definition(seed, n_vision, n_text, dim, scaled):
    hv = randn(seed, n_vision, dim)
    hq = randn(seed + 1, n_text, dim)
    r = steps.rater_relevance(hv, hq, scaled=scaled)

    assert r.shape == (n_text,) and r.dtype == torch.float32
    if n_text == 0:
        return
    if n_vision == 0:
        assert torch.allclose(r, torch.full((n_text,), 1.0 / n_text))
        return
    # Written out per element in float64: softmax over text, mean over vision.
    expected = torch.zeros(n_text, dtype=torch.float64)
    div = math.sqrt(dim) if scaled else 1.0
    for v in range(n_vision):
        logits = [float(hv[v].double() @ hq[t].double()) / div for t in range(n_text)]
        top = max(logits)
        exps = [math.exp(x - top) for x in logits]
        for t in range(n_text):
            expected[t] += exps[t] / sum(exps) / n_vision
    assert torch.allclose(r.double(), expected, atol=1e-6)
    assert math.isclose(float(r.sum()), 1.0, rel_tol=1e-5)


def test_relevance_scaled_divides_logits_by_sqrt_dim():
    hv, hq = randn(0, 5, 16), randn(1, 4, 16)
    assert torch.allclose(
        steps.rater_relevance(hv, hq, scaled=True), steps.rater_relevance(hv / 4.0, hq)
    )
    assert not torch.allclose(steps.rater_relevance(hv, hq), steps.rater_relevance(hv / 4.0, hq))


def test_relevance_half_precision_inputs_compute_in_float32():
    hv, hq = 30 * randn(0, 5, 64), 30 * randn(1, 4, 64)
    r = steps.rater_relevance(hv.half(), hq.half())
    assert r.dtype == torch.float32 and torch.isfinite(r).all()


def test_text_token_aligned_with_image_is_the_rater():
    direction = torch.tensor([1.0, 0.0, 0.0, 0.0])
    hv = 3 * direction + 0.01 * randn(0, 6, 4)
    hq = torch.stack([torch.tensor([0.0, 1.0, 0, 0]), 3 * direction, torch.tensor([0, 0, 1.0, 0])])
    assert steps.select_raters(steps.rater_relevance(hv, hq)).tolist() == [1]


relevance_values = st.one_of(
    st.lists(st.floats(0.0, 1.0, width=32, allow_subnormal=False), max_size=12),
    # few distinct values -> many exact ties and the all-equal case
    st.lists(st.sampled_from([0.0, 0.125, 0.25, 1.0 / 3.0, 0.5]), max_size=12),
)


@FAST
@given(values=relevance_values)
def test_select_raters_properties(values):
    r = torch.tensor(values, dtype=torch.float32)
    raters = steps.select_raters(r)

    assert raters.dtype == torch.long
    if not values:
        assert raters.numel() == 0
        return
    got = raters.tolist()
    assert got, "a non-empty text must have a rater"
    assert got == sorted(set(got)), "ascending, no duplicates"
    assert all(0 <= i < len(values) for i in got)

    # Exact mean of the float32 values, independent of any float summation.
    stored = [float(x) for x in r.tolist()]
    mean = sum(Fraction(x) for x in stored) / len(stored)
    above = [i for i, x in enumerate(stored) if Fraction(x) > mean]
    if above:
        assert got == above
    else:  # all equal
        assert got == [stored.index(max(stored))] == [0]


def test_select_raters_examples():
    assert steps.select_raters(torch.tensor([0.1, 0.5, 0.4])).tolist() == [1, 2]
    assert steps.select_raters(torch.tensor([0.2, 0.2, 0.2])).tolist() == [0]
    # 0.35 is the mean: strictly above only
    assert steps.select_raters(torch.tensor([0.35, 0.7, 0.0])).tolist() == [1]
    assert steps.select_raters(torch.tensor([0.1] * 7)).tolist() == [0]
    assert steps.select_raters(torch.zeros(0)).tolist() == []


@FAST
@given(seed=seeds, n_vision=st.integers(1, 6), n_text=st.integers(1, 9), dim=st.integers(1, 8))
def test_relevance_always_yields_raters(seed, n_vision, n_text, dim):
    r = steps.rater_relevance(randn(seed, n_vision, dim), randn(seed + 1, n_text, dim))
    raters = steps.select_raters(r)
    assert 1 <= raters.numel() <= n_text
    if raters.numel() < n_text:  # not everyone: raters beat every non-rater
        rest = torch.ones(n_text, dtype=torch.bool)
        rest[raters] = False
        assert r[raters].min() > r[rest].max()


# ---------------------------------------------------------------------------
# Significance
# ---------------------------------------------------------------------------


@FAST
@given(
    seed=seeds,
    heads=st.integers(1, 4),
    n_q=st.integers(1, 5),
    n_vision=st.integers(1, 8),
    n_other=st.integers(0, 4),
)
def test_head_average_and_significance(seed, heads, n_q, n_vision, n_other):
    attn = random_probs(seed, heads, n_q, n_vision + n_other)  # [H, n_q, N]
    avg = steps.head_average(attn)

    assert avg.shape == (n_q, n_vision + n_other)
    for q in range(n_q):
        manual = sum(attn[h, q] for h in range(heads)) / heads
        assert torch.allclose(avg[q], manual, atol=1e-7)
    assert torch.allclose(avg.sum(-1), torch.ones(n_q), atol=1e-5)

    p = avg[:, n_other:]  # rater -> vision block, vision tokens after the others
    s = steps.significance(p)
    assert s.shape == (n_vision,)
    assert torch.isfinite(s).all() and (s >= 0).all() and (s <= 1 + 1e-6).all()
    for j in range(n_vision):
        manual = sum(float(p[q, j]) for q in range(n_q)) / n_q
        assert math.isclose(float(s[j]), manual, abs_tol=1e-6)


def test_significance_without_raters_is_zero():
    assert torch.equal(steps.significance(torch.zeros(0, 5)), torch.zeros(5))


# ---------------------------------------------------------------------------
# Rank budget
# ---------------------------------------------------------------------------


@FAST
@given(
    seed=seeds,
    n_raters=st.integers(0, 8),
    n_vision=st.integers(0, 10),
    scale=st.floats(0.0, 3.0),
    bias=st.floats(-3.0, 3.0),
)
def test_rank_deletions_in_range(seed, n_raters, n_vision, scale, bias):
    p = random_probs(seed, n_raters, n_vision) if n_vision else torch.zeros(n_raters, 0)
    n_del = steps.rank_deletions(p, scale, bias)
    assert isinstance(n_del, int)
    assert 0 <= n_del <= max(n_vision - 1, 0)


@FAST
@given(
    seed=seeds,
    n_vision=st.integers(1, 8),
    extra_raters=st.integers(0, 4),
    scale=st.floats(0.0, 5.0),
    bias=st.floats(0.0, 3.0),
)
def test_full_column_rank_deletes_nothing(seed, n_vision, extra_raters, scale, bias):
    p = with_rank(seed, n_vision + extra_raters, n_vision, n_vision)
    assert steps.rank_deletions(p, scale, bias) == 0
    # also for attention-like probability matrices that have full column rank
    probs = random_probs(seed, n_vision + extra_raters, n_vision)
    assume(int(torch.linalg.matrix_rank(probs)) == n_vision)
    assert steps.rank_deletions(probs, scale) == 0


@FAST
@given(
    seed=seeds,
    n_raters=st.integers(1, 8),
    n_vision=st.integers(2, 10),
    rank_frac=st.floats(0.0, 1.0),
    scale=st.floats(0.0, 2.0),
    bias=st.floats(-3.0, 3.0),
)
def test_rank_deletions_formula(seed, n_raters, n_vision, rank_frac, scale, bias):
    rank = max(1, round(rank_frac * min(n_raters, n_vision)))
    p = with_rank(seed, n_raters, n_vision, rank)
    expected = math.floor(scale * (n_vision - rank) + 1e-9) - math.floor(bias)
    assert steps.rank_deletions(p, scale, bias) == max(0, min(expected, n_vision - 1))


@FAST
@given(
    seed=seeds,
    n_raters=st.integers(1, 8),
    n_vision=st.integers(1, 10),
    scales=st.lists(st.floats(0.0, 4.0), min_size=2, max_size=5),
    bias=st.floats(-3.0, 3.0),
)
def test_rank_deletions_monotone_in_scale(seed, n_raters, n_vision, scales, bias):
    p = random_probs(seed, n_raters, n_vision)
    p[:, : n_vision // 2] = p[:, :1]  # some duplicate columns -> rank deficiency
    counts = [steps.rank_deletions(p, s, bias) for s in sorted(scales)]
    assert counts == sorted(counts)


@FAST
@given(
    seed=seeds,
    n_raters=st.integers(1, 8),
    n_vision=st.integers(1, 10),
    rank_frac=st.floats(0.0, 1.0),
    bias=st.floats(-4.0, 4.0),
)
def test_bias_matches_first_release_kept_count_at_unit_scale(
    seed, n_raters, n_vision, rank_frac, bias
):
    rank = max(1, round(rank_frac * min(n_raters, n_vision)))
    p = with_rank(seed, n_raters, n_vision, rank)
    kept = n_vision - steps.rank_deletions(p, 1.0, bias)
    # first release: kept = floor(λ·r + bias); at least one token survives
    # exact arithmetic: rank + bias would round e.g. 2 - 1e-199 up to 2
    assert kept == max(1, min(n_vision, math.floor(rank + Fraction(bias))))


def test_rank_deletions_examples():
    p = with_rank(0, 4, 6, 2)
    assert steps.rank_deletions(p, 0.5) == 2  # floor(0.5 * (6 - 2))
    assert steps.rank_deletions(p, 1.0) == 4
    assert steps.rank_deletions(p, 1.0, bias=1.0) == 3  # one extra token kept
    # bias just below 0: first release keeps floor(2 - 1e-12) = 1 token
    assert steps.rank_deletions(p, 1.0, bias=-1e-12) == 5
    assert steps.rank_deletions(p, 10.0) == 5  # at least one vision token stays
    full = with_rank(1, 4, 4, 4)
    assert steps.rank_deletions(full, 0.5) == 0
    assert steps.rank_deletions(full, 0.5, rtol=1.0) == 2  # rtol reaches matrix_rank: rank 0
    assert steps.rank_deletions(torch.ones(3, 1), 5.0) == 0
    assert steps.rank_deletions(torch.zeros(0, 7), 1.0) == 0


# ---------------------------------------------------------------------------
# Top-k in original order
# ---------------------------------------------------------------------------

score_lists = st.one_of(
    st.lists(st.floats(-10, 10, width=32, allow_subnormal=False), max_size=14),
    st.lists(st.sampled_from([0.0, 1.0, 2.0]), max_size=14),
)


def check_top_k(values: list[float], chosen: list[int], k: int) -> None:
    n = len(values)
    assert len(chosen) == min(max(k, 0), n)
    assert chosen == sorted(set(chosen)), "ascending original order, no repeats"
    assert all(0 <= i < n for i in chosen)
    rest = [j for j in range(n) if j not in chosen]
    if chosen and rest:
        cut = min(values[i] for i in chosen)
        assert cut >= max(values[j] for j in rest), "the set is the k largest"
        for j in rest:  # ties at the cut: the lower index was kept
            if values[j] == cut:
                assert all(i < j for i in chosen if values[i] == cut)


# ---------------------------------------------------------------------------
# Recycling counts
# ---------------------------------------------------------------------------


@FAST
@given(values=score_lists, tau=st.sampled_from([0.0, 0.1, 0.25, 0.3, 0.5, 0.75, 1.0]))
def test_recycle_candidates(values, tau):
    scores = torch.tensor(values, dtype=torch.float32)
    picked = steps.recycle_candidates(scores, tau)
    n = len(values)
    count = min(math.floor(tau * n + 1e-9) + 1, n) if n else 0
    check_top_k(scores.tolist(), picked.tolist(), count)


def test_recycle_candidates_examples():
    scores = torch.arange(10.0)
    assert steps.recycle_candidates(scores).tolist() == [6, 7, 8, 9]  # floor(0.3*10)+1
    assert steps.recycle_candidates(torch.tensor([2.0, 7.0, 1.0])).tolist() == [1]
    assert steps.recycle_candidates(torch.tensor([2.0, 7.0, 1.0]), tau=1.0).tolist() == [0, 1, 2]
    assert steps.recycle_candidates(torch.zeros(0)).tolist() == []
    # 0.29 * 100 is 28.999999999999996 in binary floating point; intended 29 (+1)
    assert steps.recycle_candidates(torch.arange(100.0), tau=0.29).numel() == 30


@FAST
@given(n=st.integers(0, 500), per_cluster=st.integers(1, 20))
def test_cluster_count(n, per_cluster):
    c = steps.cluster_count(n, per_cluster)
    if n == 0:
        assert c == 0
    else:
        assert 1 <= c <= n
        assert c == min(n // per_cluster + 1, n)


def test_cluster_count_examples():
    assert [steps.cluster_count(n) for n in (0, 1, 2, 9, 10, 19, 20, 25, 173)] == [
        0, 1, 1, 1, 2, 2, 3, 3, 18
    ]
    with pytest.raises(ValueError):
        steps.cluster_count(5, per_cluster=0)


# ---------------------------------------------------------------------------
# DPC-KNN
# ---------------------------------------------------------------------------


def reference_centre_scores(x: torch.Tensor, k: int) -> torch.Tensor:
    """rho * delta written out per point in float64.

    "Denser" follows the documented ranking key (rho, whole-set density, -index).
    """
    n, dim = x.shape
    xd = x.double()
    d = [[float((xd[i] - xd[j]).norm()) / math.sqrt(dim) for j in range(n)] for i in range(n)]
    rho = [math.exp(-sum(v * v for v in sorted(row)[:k]) / k) for row in d]
    whole = [-sum(v * v for v in sorted(row)) / n for row in d]
    key = [(rho[i], whole[i], -i) for i in range(n)]
    score = []
    for i in range(n):
        denser = [d[i][j] for j in range(n) if key[j] > key[i]]
        delta = min(denser) if denser else max(d[i])
        score.append(rho[i] * delta)
    return torch.tensor(score, dtype=torch.float64)


def check_clustering(x: torch.Tensor, n_clusters: int, labels: torch.Tensor, centres: torch.Tensor):
    n = x.shape[0]
    c = min(n_clusters, n)
    assert labels.shape == (n,) and labels.dtype == torch.long
    assert centres.shape == (c,) and centres.dtype == torch.long
    assert len(set(centres.tolist())) == c
    # a partition into exactly c non-empty clusters numbered 0..c-1
    assert set(labels.tolist()) == set(range(c))
    # each centre in its own cluster, clusters numbered by centre rank
    assert labels[centres].tolist() == list(range(c))
    # every point sits with a nearest centre
    d = torch.cdist(x.double(), x[centres].double())
    own = d[torch.arange(n), labels]
    assert (own <= d.min(dim=1).values + 1e-9).all()


@FAST
@given(
    seed=seeds,
    n=st.integers(1, 24),
    dim=st.integers(1, 6),
    n_clusters=st.integers(1, 26),
    k=st.one_of(st.none(), st.integers(1, 26)),
)
def test_dpc_knn_partition_and_centres(seed, n, dim, n_clusters, k):
    x = randn(seed, n, dim)
    labels, centres = steps.dpc_knn_centres(x, n_clusters, k)
    check_clustering(x, n_clusters, labels, centres)
    assert torch.equal(steps.dpc_knn(x, n_clusters, k), labels)

    # centres are the top-c by rho * delta (independent float64 computation)
    kk = min(n_clusters if k is None else k, n)
    score = reference_centre_scores(x, kk)
    chosen = torch.zeros(n, dtype=torch.bool)
    chosen[centres] = True
    if (~chosen).any():
        assert score[chosen].min() >= score[~chosen].max() - 1e-5


@FAST
@given(
    seed=seeds,
    n=st.integers(2, 20),
    dim=st.integers(1, 5),
    n_clusters=st.integers(1, 6),
    perm_seed=seeds,
)
def test_dpc_knn_permutation_invariant(seed, n, dim, n_clusters, perm_seed):
    x = 3.0 * randn(seed, n, dim)
    gaps = torch.cdist(x, x) + torch.eye(n) * 1e9
    assume(float(gaps.min()) > 1e-2)  # distinct, well-separated points

    perm = torch.randperm(n, generator=torch.Generator().manual_seed(perm_seed))
    labels = steps.dpc_knn(x, n_clusters)
    permuted = steps.dpc_knn(x[perm], n_clusters)

    assert partition(permuted, index_of=perm.tolist()) == partition(labels)
    if n >= 3:
        # Labels are numbered by centre rank, so they agree point for point
        # too. Two points are a mirror image of each other: every key ties
        # and only the index decides, so the partition is all that can agree.
        assert torch.equal(permuted, labels[perm])


@FAST
@given(
    seed=seeds,
    n=st.integers(1, 16),
    distinct=st.integers(1, 4),
    n_clusters=st.integers(1, 8),
)
def test_dpc_knn_deterministic_with_duplicate_points(seed, n, distinct, n_clusters):
    # many exact duplicates: every tie-break path is exercised
    base = randn(seed, distinct, 3)
    x = base[torch.randint(distinct, (n,), generator=torch.Generator().manual_seed(seed))]
    first = steps.dpc_knn_centres(x, n_clusters)
    second = steps.dpc_knn_centres(x.clone(), n_clusters)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    check_clustering(x, n_clusters, *first)


def test_dpc_knn_recovers_three_blobs():
    centres = torch.tensor([[0.0, 0.0, 0.0, 0.0], [10.0, 0.0, 0.0, 0.0], [0.0, 0.0, 10.0, 5.0]])
    noise = 0.05 * randn(7, 15, 4)
    blob_of = torch.tensor([0, 1, 2] * 5)
    x = centres[blob_of] + noise
    labels = steps.dpc_knn(x, 3)
    blobs = {frozenset(torch.nonzero(blob_of == b).flatten().tolist()) for b in range(3)}
    assert partition(labels) == blobs


def test_dpc_knn_degenerate_sizes():
    assert steps.dpc_knn(torch.zeros(0, 4), 3).tolist() == []
    assert steps.dpc_knn(randn(0, 1, 4), 1).tolist() == [0]
    assert steps.dpc_knn(randn(0, 1, 4), 5).tolist() == [0]
    labels = steps.dpc_knn(randn(0, 5, 4), 9)  # more clusters than points
    assert sorted(labels.tolist()) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        steps.dpc_knn(randn(0, 5, 4), 0)


def test_dpc_knn_identical_points_break_ties_by_index():
    labels, centres = steps.dpc_knn_centres(torch.ones(6, 3), 3)
    assert centres.tolist() == [0, 1, 2]
    assert labels.tolist() == [0, 1, 2, 0, 0, 0]


# ---------------------------------------------------------------------------
# Merge and RoPE anchor
# ---------------------------------------------------------------------------


def covering_labels(seed: int, n: int, c: int) -> torch.Tensor:
    """Random labels in 0..c-1 with every cluster used at least once."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.arange(c), torch.randint(c, (n - c,), generator=g)])
    return labels[torch.randperm(n, generator=g)]


@FAST
@given(seed=seeds, n=st.integers(1, 20), dim=st.integers(1, 6), c_frac=st.floats(0.0, 1.0))
def test_merge_clusters(seed, n, dim, c_frac):
    c = max(1, round(c_frac * n))
    x = randn(seed, n, dim)
    labels = covering_labels(seed, n, c)

    summed = steps.merge_clusters(x, labels, c, mode="sum")
    mean = steps.merge_clusters(x, labels, c, mode="mean")
    assert summed.shape == mean.shape == (c, dim)
    for j in range(c):
        members = [x[i] for i in range(n) if labels[i] == j]
        assert torch.allclose(summed[j], sum(members), atol=1e-5)
        assert torch.allclose(mean[j], sum(members) / len(members), atol=1e-5)

    same = randn(seed + 1, 1, dim).expand(n, dim)
    assert torch.allclose(steps.merge_clusters(same, labels, c), same[:c], rtol=1e-6, atol=1e-7)


def test_merge_clusters_details():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [10.0, 10.0]])
    labels = torch.tensor([0, 0, 2])
    assert steps.merge_clusters(x, labels, 3).tolist() == [[2.0, 3.0], [0.0, 0.0], [10.0, 10.0]]
    assert steps.merge_clusters(x, labels, 3, mode="sum").tolist() == [
        [4.0, 6.0], [0.0, 0.0], [10.0, 10.0]
    ]
    assert steps.merge_clusters(x.bfloat16(), labels, 3).dtype == torch.bfloat16
    with pytest.raises(ValueError):
        steps.merge_clusters(x, labels, 3, mode="max")
    with pytest.raises(ValueError):
        steps.merge_clusters(x, labels, 2)  # label 2 out of range


@FAST
@given(
    seed=seeds,
    values=st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0]), min_size=1, max_size=16),
    c_frac=st.floats(0.0, 1.0),
)
def test_cluster_anchor_is_best_member(seed, values, c_frac):
    n = len(values)
    c = max(1, round(c_frac * n))
    labels = covering_labels(seed, n, c)
    scores = torch.tensor(values)
    anchors = steps.cluster_anchor(labels, scores, c)

    assert anchors.shape == (c,) and anchors.dtype == torch.long
    for j in range(c):
        members = [i for i in range(n) if labels[i] == j]
        best = max(values[i] for i in members)
        a = int(anchors[j])
        assert labels[a] == j
        assert values[a] == best
        assert a == min(i for i in members if values[i] == best)


def test_cluster_anchor_examples():
    labels = torch.tensor([1, 0, 1, 0, 1])
    scores = torch.tensor([0.2, 0.1, 0.9, 0.1, 0.9])
    assert steps.cluster_anchor(labels, scores, 2).tolist() == [1, 2]
    with pytest.raises(ValueError):
        steps.cluster_anchor(labels, scores, 3)  # cluster 2 is empty


def test_one_pruning_layer_end_to_end():
    """Steps chained as the plugin will: merged tokens anchor on deleted tokens."""
    n_vision, dim = 40, 8
    hidden = randn(0, n_vision, dim)
    p = with_rank(1, 6, n_vision, 5).abs()
    s = steps.significance(p)
    n_del = steps.rank_deletions(p, scale=0.5)
    assert n_del == math.floor(0.5 * (n_vision - 5))

    kept = tokenprune.top_k_in_order(s, n_vision - n_del)
    deleted = torch.tensor([j for j in range(n_vision) if j not in set(kept.tolist())])
    cand = steps.recycle_candidates(s[deleted])
    assert cand.numel() == math.floor(0.3 * n_del) + 1
    c = steps.cluster_count(cand.numel())
    labels = steps.dpc_knn(hidden[deleted][cand], c)
    merged = steps.merge_clusters(hidden[deleted][cand], labels, c)
    anchors = steps.cluster_anchor(labels, s[deleted][cand], c)

    positions = deleted[cand][anchors]
    assert merged.shape == (c, dim)
    assert not set(positions.tolist()) & set(kept.tolist())
    # anchor = most significant recycled token of each cluster
    for j in range(c):
        assert s[positions[j]] == s[deleted][cand][labels == j].max()


def test_steps_do_not_track_gradients():
    x = randn(0, 6, 4).requires_grad_()
    labels = steps.dpc_knn(x, 2)
    outputs = [
        steps.rater_relevance(x, x),
        steps.head_average(x.unsqueeze(0)),
        steps.significance(x),
        steps.merge_clusters(x, labels, 2),
    ]
    assert not any(out.requires_grad for out in outputs)
