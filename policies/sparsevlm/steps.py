"""Pure tensor steps of SparseVLM (arXiv 2410.04417), one sequence row at a time.

Every function here takes plain tensors for ONE row (no batch dimension) and
returns tensors or ints; the plugin shell loops over rows and owns all model,
hook and cache handling. Nothing here tracks gradients: each public function
runs under ``torch.no_grad()`` because the results are only ever used as
indices, counts or detached replacement features.

Pipeline at a pruning layer, in call order::

    R        = rater_relevance(H_v, H_q)              # once per request
    raters   = select_raters(R)                       # once per request
    P        = head_average(A[:, raters][:, :, vision])
    s        = significance(P)
    n_del    = rank_deletions(P, scale)               # or a fixed schedule
    kept     = top_k_in_order(s, L_v - n_del)
    cand     = recycle_candidates(s[deleted])
    c        = cluster_count(len(cand))
    labels   = dpc_knn(x[deleted][cand], c)
    merged   = merge_clusters(x[deleted][cand], labels, c)
    anchors  = cluster_anchor(labels, s[deleted][cand], c)

Tie-breaking is deterministic everywhere and never uses random noise: when two
scores are exactly equal the lower index wins. Where a step has a natural
secondary key (density rank in DPC-KNN) that key is used first, so results do
not depend on input order unless values are exactly tied.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from tokenprune import top_k_in_order

__all__ = [
    "rater_relevance",
    "select_raters",
    "head_average",
    "significance",
    "rank_deletions",
    "recycle_candidates",
    "cluster_count",
    "dpc_knn",
    "dpc_knn_centres",
    "merge_clusters",
    "cluster_anchor",
]

# Added before flooring a product of a float ratio and a count, so that e.g.
# 0.29 * 100 = 28.999999999999996 floors to the intended 29, not 28. It is far
# below 1 / (any realistic token count), so it never moves a genuine fraction.
_FLOOR_EPS = 1e-9


def _floor(x: float) -> int:
    return math.floor(x + _FLOOR_EPS)


def _require_dim(name: str, t: torch.Tensor, dim: int) -> None:
    if t.dim() != dim:
        raise ValueError(f"{name} must be {dim}-D, got shape {tuple(t.shape)}")


def _order_desc(scores: torch.Tensor) -> torch.Tensor:
    """Indices sorting ``scores`` [n] high -> low; equal scores keep index order.

    A stable sort is what makes "lower index wins" hold: ``torch.topk`` gives
    no guarantee about which of several equal values it returns.
    """
    return torch.sort(scores, descending=True, stable=True).indices


def _density_order(density: torch.Tensor, secondary: torch.Tensor) -> torch.Tensor:
    """Indices [n] sorted by ``density`` desc, then ``secondary`` desc, then index.

    Stable sorts applied from the last key to the first give the
    lexicographic order.
    """
    by_secondary = _order_desc(secondary)
    return by_secondary[_order_desc(density[by_secondary])]


# --------------------------------------------------------------------------
# 1. Raters (paper eq. 5-7)
# --------------------------------------------------------------------------


@torch.no_grad()
def rater_relevance(
    vision_embeds: torch.Tensor, text_embeds: torch.Tensor, scaled: bool = False
) -> torch.Tensor:
    """Relevance of each text token to the image (paper eq. 5-6).

    ``R = softmax(H_v @ H_q.T, dim=text).mean(dim=vision)``

    Args:
        vision_embeds: H_v, [L_v, D] — projector outputs of the vision tokens.
        text_embeds: H_q, [L_t, D] — input word embeddings of the text tokens.
        scaled: divide the logits by sqrt(D). The reference uses the raw dot
            product, so the default is ``False``.

    Returns:
        [L_t] float32. Each softmax row sums to 1, so ``R`` sums to 1 and its
        mean is 1 / L_t. With no vision tokens there is no evidence either way
        and the neutral uniform 1 / L_t is returned.
    """
    _require_dim("vision_embeds", vision_embeds, 2)
    _require_dim("text_embeds", text_embeds, 2)
    if vision_embeds.shape[1] != text_embeds.shape[1]:
        raise ValueError(
            f"hidden sizes differ: vision {vision_embeds.shape[1]}, text {text_embeds.shape[1]}"
        )
    n_text, dim = text_embeds.shape
    device = text_embeds.device
    if n_text == 0:
        return torch.zeros(0, dtype=torch.float32, device=device)
    if vision_embeds.shape[0] == 0:
        return torch.full((n_text,), 1.0 / n_text, dtype=torch.float32, device=device)
    # float32: half-precision logits of raw dot products overflow easily.
    logits = vision_embeds.float() @ text_embeds.float().T  # [L_v, L_t]
    if scaled:
        logits = logits / math.sqrt(dim)
    return torch.softmax(logits, dim=1).mean(dim=0)


@torch.no_grad()
def select_raters(relevance: torch.Tensor) -> torch.Tensor:
    """Text tokens that rate the vision tokens (paper eq. 7).

    Raters are the tokens with ``R > mean(R)`` (strict). If none qualifies —
    which happens exactly when all values are equal — the arg-max is used
    (lowest index on ties), so later steps never average over zero raters.

    Args:
        relevance: R, [L_t].

    Returns:
        int64 [n_raters], ascending; empty only when ``L_t == 0``.
    """
    _require_dim("relevance", relevance, 1)
    if relevance.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=relevance.device)
    # float64: n copies of one float32 value sum exactly, so the all-equal case
    # yields mean == value and selects nobody, as it should.
    values = relevance.double()
    raters = torch.nonzero(values > values.mean()).flatten()
    if raters.numel() == 0:
        # torch.argmax returns the first maximal index.
        raters = torch.argmax(values).reshape(1)
    return raters


# --------------------------------------------------------------------------
# 2. Significance (paper eq. 1-4)
# --------------------------------------------------------------------------


@torch.no_grad()
def head_average(probs: torch.Tensor) -> torch.Tensor:
    """Average attention probabilities over heads (paper eq. 3, head mean).

    Args:
        probs: [H, n_q, N] post-softmax attention of one layer, one row.

    Returns:
        [n_q, N] float32.
    """
    _require_dim("probs", probs, 3)
    return probs.float().mean(dim=0)


@torch.no_grad()
def significance(probs: torch.Tensor) -> torch.Tensor:
    """Significance of each vision token (paper eq. 4): mean over raters.

    Args:
        probs: P, [n_raters, L_v] — rater -> vision attention probabilities
            ALREADY averaged over heads (see :func:`head_average`), i.e.
            ``head_average(A)[raters][:, vision]``.

    Returns:
        s, [L_v] float32; larger = more important. Zeros when there are no
        raters (callers guarantee at least one, see :func:`select_raters`).
    """
    _require_dim("probs", probs, 2)
    if probs.shape[0] == 0:
        return torch.zeros(probs.shape[1], dtype=torch.float32, device=probs.device)
    return probs.float().mean(dim=0)


# --------------------------------------------------------------------------
# 3. How many to delete (paper eq. 8)
# --------------------------------------------------------------------------


@torch.no_grad()
def rank_deletions(
    probs: torch.Tensor,
    scale: float,
    bias: float = 0.0,
    rtol: float | None = None,
) -> int:
    """Number of vision tokens to delete at this layer (paper eq. 8).

    ``r = rank(P)`` (SVD-based, float32, torch's default tolerance unless
    ``rtol`` is given) and

        N_del = floor(scale * (L_v - r)) - floor(bias)

    clamped to ``[0, L_v - 1]`` so at least one vision token survives. A
    full-column-rank ``P`` (r == L_v) gives 0 (the layer is skipped).

    ``bias`` convention: the authors' first release counted tokens KEPT as
    ``floor(λ·r + bias)``. Here ``bias`` is a number of extra tokens kept, and
    ``scale`` is the paper's λ on the rank deficiency. With ``scale == 1`` the
    two are identical for every real ``bias`` (r is an integer, so
    ``L_v - N_del = r + floor(bias) = floor(r + bias)``); for other scales the
    first release multiplied the rank, the paper multiplies the deficiency,
    and this function follows the paper. ``bias = 0`` is plain eq. 8.

    Args:
        probs: P, [n_raters, L_v], head-averaged rater -> vision attention.
        scale: λ >= 0; larger deletes more (monotone non-decreasing).
        bias: extra tokens kept (may be negative), see above.
        rtol: relative tolerance passed to ``torch.linalg.matrix_rank``.

    Returns:
        int in ``[0, max(L_v - 1, 0)]``. Without raters there is no evidence
        and nothing is deleted.
    """
    _require_dim("probs", probs, 2)
    n_raters, n_vision = probs.shape
    if n_vision <= 1 or n_raters == 0:
        return 0
    rank = int(torch.linalg.matrix_rank(probs.float(), rtol=rtol))
    n_del = _floor(scale * (n_vision - rank)) - math.floor(bias)
    return max(0, min(n_del, n_vision - 1))


# --------------------------------------------------------------------------
# 4. Recycling (paper eq. 9-11)
# --------------------------------------------------------------------------


@torch.no_grad()
def recycle_candidates(scores_deleted: torch.Tensor, tau: float = 0.3) -> torch.Tensor:
    """Which deleted tokens to recycle (paper eq. 9): the top ``tau`` by score.

    Count = ``floor(tau * n_del) + 1`` (reference), capped at ``n_del``;
    0 when nothing was deleted.

    Args:
        scores_deleted: significance of the tokens deleted at THIS layer,
            [n_del].
        tau: recycling ratio (reference 0.3).

    Returns:
        int64 indices INTO the deleted set, ascending (original order); ties
        at the cut keep the lower index.
    """
    _require_dim("scores_deleted", scores_deleted, 1)
    n_del = scores_deleted.numel()
    count = min(_floor(tau * n_del) + 1, n_del) if n_del > 0 else 0
    return top_k_in_order(scores_deleted, max(count, 0))


def cluster_count(n_recycled: int, per_cluster: int = 10) -> int:
    """Number of clusters for recycling (reference): ``floor(n / per_cluster) + 1``.

    Capped at ``n_recycled`` (a cluster needs a member); 0 when ``n == 0``.
    """
    if per_cluster < 1:
        raise ValueError(f"per_cluster must be >= 1, got {per_cluster}")
    if n_recycled <= 0:
        return 0
    return min(n_recycled // per_cluster + 1, n_recycled)


@torch.no_grad()
def dpc_knn_centres(
    features: torch.Tensor, n_clusters: int, k: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """DPC-KNN clustering (paper eq. 10), returning labels and centres.

    Steps, all on ``d_ij = ||x_i - x_j||_2 / sqrt(D)``:

    1. density ``rho_i = exp(-mean of d_ij^2 over the k nearest j)``, self
       included (k defaults to ``n_clusters``, as in the reference; capped
       at n);
    2. ``delta_i`` = min distance to a point of higher density; for the
       densest point, its max distance to any point;
    3. centres = the ``c`` points with the largest ``rho * delta``;
    4. every point joins its nearest centre; each centre joins its own
       cluster even if another centre coincides with it.

    Tie-break (no random noise; the reference adds a little ``torch.rand``):
    points are ranked by the key ``(rho_i, -mean_j d_ij^2 over ALL points,
    -i)``, compared lexicographically, and "higher density" in step 2 means
    "earlier in that ranking". Exact density ties are structural, not rare:
    with k = 1 (c = 1, the reference default below 10 recycled tokens) every
    ``rho`` is 1, and with k = 2 two mutual nearest neighbours share ``rho``.
    The whole-set density separates such points by geometry, so the result
    stays independent of input order; only points tied on both keys
    (duplicates, mirror-image layouts) fall back to the lower index, the limit
    of subtracting an infinitesimal ``i * eps``. Unlike a finite epsilon, none
    of this reorders densities that differ. Centre scores that tie exactly
    fall back to the same ranking; a point equidistant to several centres
    joins the higher-ranked one.

    Distances use ``torch.cdist`` without the matmul shortcut: slower, but each
    d_ij is computed from x_i - x_j alone, so the matrix is exactly symmetric
    with an exact zero diagonal, and permuting the inputs permutes it
    bit-for-bit.

    Args:
        features: [n, D] (e.g. layer outputs of the recycled tokens).
        n_clusters: c >= 1 when n > 0; capped at n (then every point is its
            own cluster).
        k: neighbours for the density, self included.

    Returns:
        ``(labels, centres)``: labels int64 [n] in ``0..c-1`` numbered by
        centre rank (best centre score = 0); centres int64 [c], with
        ``labels[centres[j]] == j``.
    """
    _require_dim("features", features, 2)
    n, dim = features.shape
    device = features.device
    if n == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty.clone()
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be >= 1 for {n} points, got {n_clusters}")
    c = min(int(n_clusters), n)
    k = c if k is None else int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, n)

    x = features.float()
    dist = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist") / math.sqrt(dim)

    # Rows are reduced in sorted order so that each point's value does not
    # depend on where the other points sit in the input.
    sq_sorted = torch.sort(dist, dim=1).values ** 2
    density = torch.exp(-sq_sorted[:, :k].mean(dim=1))  # [n]
    whole_set = -sq_sorted.mean(dim=1)  # secondary key, see below

    by_density = _density_order(density, whole_set)
    density_rank = torch.empty(n, dtype=torch.long, device=device)
    density_rank[by_density] = torch.arange(n, device=device)

    # higher[i, j]: j precedes i in the density order.
    higher = density_rank.unsqueeze(0) < density_rank.unsqueeze(1)
    inf = torch.tensor(float("inf"), device=device)
    delta = torch.where(higher, dist, inf).min(dim=1).values
    top = by_density[0]
    delta[top] = dist[top].max()

    # Sort candidates by density rank first, then stably by score, so exact
    # score ties are decided by density rank.
    score = (density * delta)[by_density]
    centres = by_density[_order_desc(score)[:c]]

    labels = torch.argmin(dist[:, centres], dim=1)  # first minimum = best-ranked centre
    labels[centres] = torch.arange(c, device=device)
    return labels, centres


@torch.no_grad()
def dpc_knn(features: torch.Tensor, n_clusters: int, k: int | None = None) -> torch.Tensor:
    """Cluster labels of :func:`dpc_knn_centres` (paper eq. 10).

    Args:
        features: [n, D].
        n_clusters: c (capped at n).
        k: neighbours for the density (default c).

    Returns:
        int64 [n] labels in ``0..min(c, n)-1``, numbered by centre rank.
    """
    return dpc_knn_centres(features, n_clusters, k)[0]


@torch.no_grad()
def merge_clusters(
    features: torch.Tensor,
    labels: torch.Tensor,
    n_clusters: int,
    mode: Literal["mean", "sum"] = "mean",
) -> torch.Tensor:
    """One token per cluster (paper eq. 11).

    ``mean`` is the reference implementation (default); ``sum`` is the
    element-wise sum written in the paper.

    Args:
        features: [n, D].
        labels: int [n] in ``0..n_clusters-1``.
        n_clusters: c.
        mode: ``"mean"`` or ``"sum"``.

    Returns:
        [c, D] in ``features.dtype`` (accumulated in float32). An empty
        cluster gives a zero row.
    """
    _require_dim("features", features, 2)
    _require_dim("labels", labels, 1)
    if labels.numel() != features.shape[0]:
        raise ValueError(f"{labels.numel()} labels for {features.shape[0]} features")
    if mode not in ("mean", "sum"):
        raise ValueError(f"mode must be 'mean' or 'sum', got {mode!r}")
    labels = labels.long()
    if labels.numel() and (labels.min() < 0 or labels.max() >= n_clusters):
        raise ValueError(f"labels must lie in [0, {n_clusters}), got {labels.tolist()}")
    total = torch.zeros(n_clusters, features.shape[1], dtype=torch.float32, device=features.device)
    total.index_add_(0, labels, features.float())
    if mode == "mean":
        counts = torch.bincount(labels, minlength=n_clusters).clamp(min=1)
        total = total / counts.unsqueeze(1).to(total.dtype)
    return total.to(features.dtype)


@torch.no_grad()
def cluster_anchor(labels: torch.Tensor, scores: torch.Tensor, n_clusters: int) -> torch.Tensor:
    """Where each merged token stands: its cluster's highest-scoring member.

    The merged token gets the RoPE position (gathered ``cos``/``sin`` and
    ``position_ids``) of this member. The paper and reference give no rule;
    we choose the member the raters found most relevant, because the merged
    token's job is to carry that information back, so it should stand where
    that information came from. The density centre, the other candidate, is
    a geometric representative that may be one of the least relevant tokens
    of its cluster.

    Args:
        labels: int [n] in ``0..n_clusters-1``.
        scores: significance of the same n tokens, [n].
        n_clusters: c; every cluster must be non-empty.

    Returns:
        int64 [c]: for cluster j, the index (into the n candidates) of its
        highest-scoring member; lower index on ties.
    """
    _require_dim("labels", labels, 1)
    _require_dim("scores", scores, 1)
    if labels.numel() != scores.numel():
        raise ValueError(f"{labels.numel()} labels for {scores.numel()} scores")
    # Visiting points best-first means each cluster's first visit is its anchor.
    label_of = labels.tolist()
    anchors = [-1] * n_clusters
    for point in _order_desc(scores).tolist():
        cluster = label_of[point]
        if not 0 <= cluster < n_clusters:
            raise ValueError(f"label {cluster} outside [0, {n_clusters})")
        if anchors[cluster] < 0:
            anchors[cluster] = point
    empty = [j for j, a in enumerate(anchors) if a < 0]
    if empty:
        raise ValueError(f"clusters {empty} have no members")
    return torch.tensor(anchors, dtype=torch.long, device=labels.device)
