"""ToMe (Bolya et al., ICLR 2023) in the language decoder, as a tokenprune policy.

At each merging layer the vision tokens are split alternately into two sets,
each token of the first set is matched to its most similar token of the
second (cosine of head-averaged keys of layer L-1, or of hidden states), and
the ``r`` best pairs are merged by size-weighted average. Each token carries a
size: how many original tokens it stands for. With proportional attention
(default) the engine adds ``log(size)`` to that key's attention logits through
an additive mask, so a merged token weighs as much as the tokens it replaced,
and sdpa still runs. Merges follow a constant or decreasing schedule, at most
50% per layer, and meet the same ``keep`` / ``ratio`` / ``equivalent`` budgets as
the other policies.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

import tokenprune
from tokenprune.policies.tome import merge


class ToMeOptions(tokenprune.PolicyOptions):
    """Options of ToMe."""

    metric: Literal["keys", "hidden"] = Field("keys", description="similarity of head-averaged keys or of hidden states")
    schedule: Literal["constant", "decreasing"] = Field("constant", description="merges per layer: equal or front-loaded")
    proportional_attention: bool = Field(True, description="add log(size) to merged keys' attention logits")


class ToMePolicy(tokenprune.Policy):
    """Bipartite soft matching of vision tokens with size tracking."""

    name = "tome"
    description = "ToMe: merge similar vision tokens (size-weighted) with proportional attention"
    Options = ToMeOptions
    default_layers = (2, 4, 6, 8)

    @property
    def proportional_attention(self) -> bool:
        """Whether merged keys get a ``log(size)`` attention bias."""
        return bool(self.options.proportional_attention)

    def schedule_weights(self, n_stages: int) -> tuple[float, ...]:
        """Equal or front-loaded merges per layer."""
        return merge.merge_weights(n_stages, self.options.schedule)

    def begin_request(self, request: tokenprune.RequestContext) -> None:
        """Refuse budgets that would merge more than half of the tokens at some layer."""
        weights = self.schedule_weights(len(request.layers))
        for row in range(request.batch_size):
            n = request.n_vision(row)
            if not n:
                continue
            counts = request.planned_counts(row, weights)
            bad = merge.half_rule_violation(counts, n)
            if bad is not None:
                raise tokenprune.BudgetError(
                    f"ToMe merges at most half of the tokens per layer, but reaching "
                    f"{request.budget.describe()} from {n} vision tokens over {len(request.layers)} merging "
                    f"layers needs {([n] + counts)[bad]} -> {counts[bad]}; add merging layers or raise the budget"
                )

    def select_row(self, ctx: tokenprune.LayerContext, row: int) -> tokenprune.RowSelection:
        """Merge the planned number of pairs by bipartite soft matching."""
        slots = ctx.vision_slots(row)
        n = int(slots.numel())
        target = ctx.planned_keep(row, self.schedule_weights(len(ctx.request.layers)))
        if self.options.metric == "keys":
            metric = ctx.key_states(row)[:, slots].mean(dim=0)
        else:
            metric = ctx.vision_hidden(row)
        plan = merge.bipartite_soft_matching(metric, n - target)
        hidden, size = merge.merge_tokens(ctx.vision_hidden(row), ctx.vision_sizes(row), plan)
        ctx.request.add_overhead_flops("bipartite matching", (n // 2) * ((n + 1) // 2) * metric.shape[-1])
        return tokenprune.RowSelection(keep=plan.keep, keep_hidden=hidden, keep_size=size)


@tokenprune.hookimpl
def tokenprune_policies() -> list[type[tokenprune.Policy]]:
    """Register ToMe."""
    return [ToMePolicy]
