"""Example outside plugin: keep the vision tokens nearest the centre of each image."""

from __future__ import annotations

import torch
from pydantic import Field

import tokenprune


class CenterOptions(tokenprune.PolicyOptions):
    """Options of the center policy."""

    aspect: float = Field(1.0, gt=0, description="stretch of the kept region: >1 wider, <1 taller")


class CenterPolicy(tokenprune.Policy):
    """Keeps the planned number of vision tokens closest to their image's centre."""

    name = "center"
    description = "keep the vision tokens nearest each image's centre (example plugin)"
    Options = CenterOptions
    default_layers = (2,)

    def select_row(self, ctx: tokenprune.LayerContext, row: int) -> tokenprune.RowSelection:
        """Score tokens by negative distance from the centre of their image; keep the top ones."""
        grid = ctx.request.grids[row]
        ordinals = ctx.vision_ordinals(row)
        if grid is None:  # no grid from the adapter: use the middle of the sequence
            distance = (ordinals.float() - ordinals.float().mean()).abs()
        else:
            cells = grid.cells[ordinals.clamp(min=0)].float()
            shapes = torch.tensor([grid.shapes[i] for i in cells[:, 0].long().tolist()], dtype=torch.float32)
            centre_row, centre_col = (shapes[:, 1] - 1) / 2, (shapes[:, 2] - 1) / 2
            distance = (cells[:, 2] - centre_row) ** 2 + ((cells[:, 3] - centre_col) / self.options.aspect) ** 2
        scores = -distance
        keep = tokenprune.top_k_in_order(scores, ctx.planned_keep(row))
        return tokenprune.RowSelection(keep=keep, scores=scores)


@tokenprune.hookimpl
def tokenprune_policies() -> list[type[tokenprune.Policy]]:
    """Register the center policy."""
    return [CenterPolicy]
