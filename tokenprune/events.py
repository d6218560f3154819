"""Event payloads passed to the ``tokenprune_after_prune`` hook."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokenprune.context import RequestContext
from tokenprune.stats import PruneRecord


@dataclass(frozen=True)
class PruneEvent:
    """One pruning layer's outcome.

    Attributes:
        policy: the policy name.
        record: counts and ORIGINAL vision indices kept / merged per row.
        scores: per row, the policy's per-vision-token scores before this
            layer (None if it gave none), aligned with the vision tokens that
            entered the layer.
        entering_ordinals: per row, original vision index of each vision token
            entering the layer (-1 for merged tokens), aligned with ``scores``.
        request: the request context.
    """

    policy: str
    record: PruneRecord
    scores: list[torch.Tensor | None]
    entering_ordinals: list[torch.Tensor]
    request: RequestContext
