"""The ``random`` policy: a seeded uniform subset of vision tokens (the control).

Any real policy that cannot beat it on the fixture benchmark has a bug.
"""

from __future__ import annotations

import torch
from pydantic import Field

import tokenprune


class RandomOptions(tokenprune.PolicyOptions):
    """Options of the random policy."""

    seed: int = Field(default=0, description="Seed of the generator; same seed, same kept tokens.")


class RandomPolicy(tokenprune.Policy):
    """Keep a uniformly random subset of the planned size at each pruning layer.

    The generator is seeded from ``seed`` and the layer only, so a row's choice
    does not depend on the other rows of its batch.
    """

    name = "random"
    description = "seeded uniform random subset of vision tokens (control baseline)"
    Options = RandomOptions
    default_layers = (2,)

    def select_row(self, ctx: tokenprune.LayerContext, row: int) -> tokenprune.RowSelection:
        """Keep ``planned_keep`` tokens drawn without replacement."""
        n = int(ctx.vision_slots(row).numel())
        k = min(n, ctx.planned_keep(row))
        generator = torch.Generator().manual_seed(self.options.seed * 1_000_003 + ctx.layer)
        keep = torch.randperm(n, generator=generator)[:k]
        return tokenprune.RowSelection(keep=keep.to(ctx.hidden_states.device))


@tokenprune.hookimpl
def tokenprune_policies() -> list[type[tokenprune.Policy]]:
    """Register the random policy."""
    return [RandomPolicy]
