"""Pure tensor steps of ToMe (Bolya et al., ICLR 2023) on the language side.

Everything works on ONE row (no batch dimension); the caller loops over the
batch and restricts the inputs to the vision span. No model code here.

Spec: shared/spec/baselines.md, section "ToMe".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = [
    "MergePlan",
    "bipartite_soft_matching",
    "merge_tokens",
    "proportional_attention_bias",
    "merge_weights",
    "half_rule_violation",
]


@dataclass(frozen=True)
class MergePlan:
    """Result of one bipartite soft matching step over ``n`` tokens.

    Attributes:
        keep: ``LongTensor [n - r]`` surviving indices, ascending original order.
        src:  ``LongTensor [r]`` indices merged away, ascending.
        dst:  ``LongTensor [r]`` for each ``src[i]``, the surviving index it
              merges into (always an element of ``keep``).
        n:    number of tokens the plan was made for.
    """

    keep: torch.Tensor
    src: torch.Tensor
    dst: torch.Tensor
    n: int

    @property
    def r(self) -> int:
        return int(self.src.numel())


def bipartite_soft_matching(
    metric: torch.Tensor,
    r: int,
    protected: torch.Tensor | None = None,
) -> MergePlan:
    """Plan ``r`` merges by bipartite soft matching.

    Args:
        metric: ``[n, C]`` features used for similarity (head-averaged keys or
            hidden states); cosine similarity is used.
        r: requested number of merges. Clamped to ``<= n // 2`` (at most 50%
            of the tokens) and to the number of mergeable A tokens.
        protected: optional ``BoolTensor [n]``; protected tokens never merge,
            neither as source nor as destination (their similarities are -inf).

    Returns:
        :class:`MergePlan`.

    Split: A = even positions (0, 2, ...), B = odd positions (1, 3, ...).
    Each A token's best B match is the argmax of its cosine-similarity row.

    Tie-breaks (deterministic):
      * best match: among equally similar B tokens, the lowest index wins
        (``torch.argmax`` returns the first maximum);
      * edge selection: A tokens are ranked by best similarity with a stable
        descending sort, so among equal similarities the lower A index wins.
    An A token is mergeable iff it is not protected and at least one B token
    is not protected.
    """
    if metric.dim() != 2:
        raise ValueError(f"metric must be [n, C], got shape {tuple(metric.shape)}")
    n = metric.shape[0]
    device = metric.device
    if protected is None:
        protected = torch.zeros(n, dtype=torch.bool, device=device)
    else:
        protected = protected.to(device=device, dtype=torch.bool)
        if protected.shape != (n,):
            raise ValueError(f"protected must be [n]={n}, got shape {tuple(protected.shape)}")

    all_idx = torch.arange(n, device=device)
    a_idx = all_idx[0::2]
    b_idx = all_idx[1::2]
    r = max(0, min(int(r), n // 2))
    empty = torch.empty(0, dtype=torch.long, device=device)
    if r == 0 or b_idx.numel() == 0:
        return MergePlan(keep=all_idx, src=empty, dst=empty, n=n)

    work = torch.promote_types(metric.dtype, torch.float32)
    m = F.normalize(metric.to(work), dim=-1)
    scores = m[a_idx] @ m[b_idx].T  # [nA, nB]
    neg_inf = torch.tensor(float("-inf"), dtype=work, device=device)
    scores = torch.where(protected[b_idx].unsqueeze(0), neg_inf, scores)
    scores = torch.where(protected[a_idx].unsqueeze(1), neg_inf, scores)

    best_b = torch.argmax(scores, dim=-1)  # first maximum -> lowest B index
    best_sim = scores.gather(-1, best_b.unsqueeze(-1)).squeeze(-1)
    mergeable = (~protected[a_idx]) & bool((~protected[b_idx]).any())
    r = min(r, int(mergeable.sum()))
    if r == 0:
        return MergePlan(keep=all_idx, src=empty, dst=empty, n=n)

    # Non-mergeable A rows go last regardless of (possibly NaN) scores.
    rank_key = torch.where(mergeable, torch.nan_to_num(best_sim, nan=-1e30), neg_inf)
    order = torch.sort(rank_key, descending=True, stable=True).indices
    chosen = torch.sort(order[:r]).values  # positions within A, ascending
    src = a_idx[chosen]
    dst = b_idx[best_b[chosen]]
    keep_mask = torch.ones(n, dtype=torch.bool, device=device)
    keep_mask[src] = False
    return MergePlan(keep=all_idx[keep_mask], src=src, dst=dst, n=n)


def merge_tokens(
    x: torch.Tensor,
    size: torch.Tensor,
    plan: MergePlan,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply a merge plan with size-weighted averaging.

    Args:
        x: ``[n, D]`` token features.
        size: ``[n]`` how many original tokens each row stands for (> 0).
        plan: from :func:`bipartite_soft_matching` for the same ``n``.

    Returns:
        ``(x_new [n - r, D], size_new [n - r])`` in ``plan.keep`` order.
        A destination becomes ``sum(x_i * s_i) / sum(s_i)`` over itself and
        its sources; its size the sum of sizes. Rows that receive no merge are
        copied bit-exactly; with ``r == 0`` the values equal the inputs.
        ``x_new`` has ``x``'s dtype (accumulation in at least float32);
        ``size_new`` has ``size``'s dtype.
    """
    if x.dim() != 2 or size.shape != (x.shape[0],):
        raise ValueError(f"expected x [n, D] and size [n], got {tuple(x.shape)} and {tuple(size.shape)}")
    if x.shape[0] != plan.n:
        raise ValueError(f"plan is for n={plan.n} tokens, x has {x.shape[0]}")
    if plan.r == 0:
        return x[plan.keep], size[plan.keep]

    work = torch.promote_types(x.dtype, torch.float32)
    s = size.to(work)
    xs = x.to(work) * s.unsqueeze(-1)
    acc = xs.index_add(0, plan.dst, xs[plan.src])
    s_acc = s.index_add(0, plan.dst, s[plan.src])

    out = x.clone()
    dsts = torch.unique(plan.dst)
    out[dsts] = (acc[dsts] / s_acc[dsts].unsqueeze(-1)).to(x.dtype)
    size_new = size.index_add(0, plan.dst, size[plan.src])
    return out[plan.keep], size_new[plan.keep]


def proportional_attention_bias(size: torch.Tensor) -> torch.Tensor:
    """Additive key bias for proportional attention: ``log(size)``.

    Args:
        size: ``[n]`` token sizes (> 0).

    Returns:
        ``[n]`` float tensor (at least float32); exactly 0 where size is 1.
        Adding it to the attention logits of key j is equivalent to key j
        (and its value) appearing ``size[j]`` times.
    """
    return torch.log(size.to(torch.promote_types(size.dtype, torch.float32)))


def merge_weights(n_layers: int, mode: Literal["constant", "decreasing"] = "constant") -> tuple[float, ...]:
    """Schedule shape for :func:`tokenprune.plan_kept_counts` over ``n_layers`` merging layers.

    ``constant`` merges the same number of tokens at every layer (linear
    weights); ``decreasing`` front-loads merges in proportion to
    ``L, L-1, ..., 1``. Weights are non-increasing and end with 0.
    """
    if mode not in ("constant", "decreasing"):
        raise ValueError(f"mode must be 'constant' or 'decreasing', got {mode!r}")
    if n_layers < 1:
        raise ValueError("at least one merging layer is needed")
    shares = [1] * n_layers if mode == "constant" else list(range(n_layers, 0, -1))
    total, done, weights = sum(shares), 0, []
    for share in shares:
        done += share
        weights.append((total - done) / total)
    return tuple(weights)


def half_rule_violation(counts: list[int], n_vision: int) -> int | None:
    """Index of the first layer whose step from the previous count merges more than 50%, else None.

    ``counts`` are tokens after each merging layer, starting from ``n_vision``.
    Bipartite matching can merge at most half of the tokens present.
    """
    previous = n_vision
    for index, count in enumerate(counts):
        if previous - count > previous // 2:
            return index
        previous = count
    return None
