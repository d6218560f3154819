"""Small tensor utilities every policy needs."""

from __future__ import annotations

import torch


@torch.no_grad()
def top_k_in_order(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest ``scores`` ``[N]``, returned in ascending (original) order.

    Keeping the original order lets the engine gather hidden states and
    rotary tables without reordering the sequence. ``k`` is clamped to
    ``[0, N]``. Among equal scores at the cut the lower index wins (a stable
    sort; ``torch.topk`` guarantees no order for ties). NaN counts as ``-inf``.
    """
    if scores.dim() != 1:
        raise ValueError(f"top_k_in_order expects a 1-D tensor, got shape {tuple(scores.shape)}")
    k = max(0, min(int(k), scores.shape[0]))
    work = torch.nan_to_num(scores.to(torch.promote_types(scores.dtype, torch.float32)), nan=float("-inf"))
    order = torch.sort(work, descending=True, stable=True).indices
    return torch.sort(order[:k]).values.to(torch.long)
