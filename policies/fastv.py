"""FastV (Chen et al., ECCV 2024) as a tokenprune policy.

At pruning layer K, vision tokens are ranked by the attention they receive in
layer K-1 from the prompt's last token (authors' code, ``query="last"``) or
from every text token after the image (``query="all_text"``, the paper's
"average attention"). The top tokens are kept in their original order and
positions. Attention comes from the engine's probe, so the model stays on
sdpa (the authors force eager attention).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

import tokenprune


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


class FastVOptions(tokenprune.PolicyOptions):
    """Options of FastV."""

    query: Literal["last", "all_text"] = Field(
        "last", description="queries whose attention ranks vision tokens: the last prompt token or all text"
    )


class FastVPolicy(tokenprune.Policy):
    """Keep the vision tokens that receive the most attention in layer K-1."""

    name = "fastv"
    description = "FastV: keep the vision tokens the prompt attends to most in layer K-1"
    Options = FastVOptions
    default_layers = (2,)

    def select_row(self, ctx: tokenprune.LayerContext, row: int) -> tokenprune.RowSelection:
        """Rank by attention from the configured queries; keep the planned count."""
        if self.options.query == "last":
            visible = torch.nonzero(ctx.request.attention_mask[row], as_tuple=False).flatten()
            positions = visible[-1:]
        else:
            positions = ctx.request.text_positions(row)
        ctx.request.query_positions[row] = positions
        queries = ctx.slots_of_positions(row, positions)
        scores = fastv_scores(ctx.attention_to_vision(row, queries))
        keep = tokenprune.top_k_in_order(scores, ctx.planned_keep(row))
        return tokenprune.RowSelection(keep=keep, scores=scores)


@tokenprune.hookimpl
def tokenprune_policies() -> list[type[tokenprune.Policy]]:
    """Register FastV."""
    return [FastVPolicy]
