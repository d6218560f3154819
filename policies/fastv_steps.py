"""Pure tensor steps of the FastV baseline (Chen et al., ECCV 2024).

No model code here: the caller extracts the (head-averaged) attention rows of
layer K-1 restricted to the vision columns and passes them in.

Spec: shared/spec/baselines.md, section "FastV".
"""

from __future__ import annotations

import math

import torch

__all__ = ["fastv_scores", "fastv_keep_count", "top_k_in_order"]


def fastv_scores(probs: torch.Tensor) -> torch.Tensor:
    """Attention received by each vision token.

    Args:
        probs: ``[n_q, N_vis]`` attention probabilities, already averaged over
            heads and restricted to the vision key columns. For
            ``query='last'`` the caller passes a single row (``n_q == 1``,
            the last prompt token, as in the authors' code); for
            ``query='all_text'`` all text query rows. A 1-D ``[N_vis]`` input
            is treated as a single row.

    Returns:
        ``[N_vis]`` score per vision token: the mean over the query rows,
        computed in at least float32.
    """
    if probs.dim() == 1:
        probs = probs.unsqueeze(0)
    if probs.dim() != 2:
        raise ValueError(f"fastv_scores expects [n_q, N_vis], got shape {tuple(probs.shape)}")
    if probs.shape[0] == 0:
        raise ValueError("fastv_scores needs at least one query row")
    work = torch.promote_types(probs.dtype, torch.float32)
    return probs.to(work).mean(dim=0)


def fastv_keep_count(
    n_vision: int,
    ratio_dropped: float | None = None,
    keep: int | None = None,
) -> int:
    """Number of vision tokens FastV keeps.

    Exactly one of ``ratio_dropped`` (R in [0, 1]) or ``keep`` (a token count)
    must be given. With R the count is ``ceil((1 - R) * n_vision)``; the
    product is rounded to 9 decimals before the ceiling so float artefacts
    (e.g. ``(1 - 0.7) * 10 == 3.0000000000000004``) do not add a token.
    The result is clamped to ``[1, n_vision]`` (0 only when ``n_vision == 0``).
    """
    if n_vision < 0:
        raise ValueError(f"n_vision must be >= 0, got {n_vision}")
    if (ratio_dropped is None) == (keep is None):
        raise ValueError("give exactly one of ratio_dropped or keep")
    if ratio_dropped is not None:
        r = float(ratio_dropped)
        if not (0.0 <= r <= 1.0) or math.isnan(r):
            raise ValueError(f"ratio_dropped must be in [0, 1], got {ratio_dropped}")
        count = math.ceil(round((1.0 - r) * n_vision, 9))
    else:
        count = int(keep)  # type: ignore[arg-type]
    if n_vision == 0:
        return 0
    return max(1, min(n_vision, count))


def top_k_in_order(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest scores, returned in ascending index order.

    Args:
        scores: ``[N]`` scores (1-D).
        k: how many to keep; clamped to ``[0, N]``.

    Returns:
        ``LongTensor [k]`` sorted ascending (original token order preserved).

    Tie-break: a stable descending sort, so among equal scores the lower index
    wins. NaN scores are treated as ``-inf`` (selected last).
    """
    if scores.dim() != 1:
        raise ValueError(f"top_k_in_order expects a 1-D tensor, got shape {tuple(scores.shape)}")
    n = scores.shape[0]
    k = max(0, min(int(k), n))
    s = torch.nan_to_num(scores.to(torch.promote_types(scores.dtype, torch.float32)),
                         nan=float("-inf"))
    order = torch.sort(s, descending=True, stable=True).indices
    return torch.sort(order[:k]).values.to(torch.long)
