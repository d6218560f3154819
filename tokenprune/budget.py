"""Budgets: how many vision tokens a request keeps, and how that is planned.

A user states ONE budget:

* ``keep``: vision tokens kept after the last pruning layer;
* ``ratio``: the same as a fraction of the row's vision tokens;
* ``equivalent``: the average, over all decoder layers, of the vision tokens
  ENTERING each layer (the quantity that matches prefill cost, see
  ``docs/budgets.md``).

:func:`plan_kept_counts` turns any of them into kept counts per pruning layer
for one row, given the shape of the policy's schedule (``weights``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from tokenprune.errors import BudgetError

BudgetKind = Literal["keep", "ratio", "equivalent"]


@dataclass(frozen=True)
class Budget:
    """One budget request: its kind and value (see the module docstring)."""

    kind: BudgetKind
    value: float

    def describe(self) -> str:
        """Human-readable form, e.g. ``keep=64`` or ``ratio=0.25``."""
        value = int(self.value) if self.kind == "keep" else self.value
        return f"{self.kind}={value}"

    def check_fits(self, n_vision: int) -> None:
        """Raise :class:`BudgetError` if this budget cannot apply to ``n_vision`` tokens."""
        if n_vision <= 0:
            return
        if self.kind == "keep" and self.value > n_vision:
            raise BudgetError(
                f"budget keep={int(self.value)} is larger than the {n_vision} vision tokens "
                f"of this request; ask for at most {n_vision} (or use ratio=)"
            )
        if self.kind == "equivalent" and self.value > n_vision:
            raise BudgetError(
                f"budget equivalent={self.value:g} is larger than the {n_vision} vision tokens "
                f"of this request; ask for at most {n_vision}"
            )

    def final_keep(self, n_vision: int) -> int:
        """Kept count after the last pruning layer for ``keep``/``ratio`` budgets."""
        if self.kind == "keep":
            return max(1, min(n_vision, int(self.value)))
        if self.kind == "ratio":
            return max(1, min(n_vision, round(self.value * n_vision)))
        raise ValueError("an equivalent budget has no fixed final count; use plan_kept_counts")


def default_weights(n_stages: int) -> tuple[float, ...]:
    """Linear schedule shape: stage ``i`` keeps ``final + (n - final) * w_i``.

    ``w`` falls from ``(n_stages-1)/n_stages`` to 0, so a single pruning layer
    keeps exactly the final count and several layers prune progressively.
    """
    return tuple((n_stages - 1 - i) / n_stages for i in range(n_stages))


def layer_spans(layers: Sequence[int], num_layers: int) -> list[int]:
    """Number of decoder layers each pruning stage covers (``layers`` sorted)."""
    bounds = list(layers) + [num_layers]
    return [bounds[i + 1] - bounds[i] for i in range(len(layers))]


def plan_kept_counts(
    n_vision: int,
    budget: Budget,
    layers: Sequence[int],
    num_layers: int,
    weights: Sequence[float] | None = None,
) -> list[int]:
    """Vision tokens to keep after each pruning layer, for one row.

    Args:
        n_vision: vision tokens of the row entering the decoder.
        budget: the user's budget.
        layers: pruning layers (a layer index is the first layer that sees the
            reduced set), sorted ascending.
        num_layers: decoder depth.
        weights: schedule shape, one value in [0, 1] per pruning layer, last one
            0 (see :func:`default_weights`).

    Returns:
        Non-increasing counts, each in ``[1, n_vision]``. For ``equivalent``
        budgets the final count is solved so that the layer-averaged vision
        tokens entering the layers match the request within rounding.

    Raises:
        BudgetError: the budget is above ``n_vision`` or an equivalent budget is
            below what these pruning layers can reach.
    """
    if n_vision <= 0:
        return [0 for _ in layers]
    budget.check_fits(n_vision)
    w = list(weights) if weights is not None else list(default_weights(len(layers)))
    if len(w) != len(layers):
        raise ValueError(f"{len(w)} schedule weights for {len(layers)} pruning layers")
    if budget.kind == "equivalent":
        final = _solve_final_for_equivalent(n_vision, budget.value, layers, num_layers, w)
    else:
        final = budget.final_keep(n_vision)
    counts = [max(1, min(n_vision, round(final + (n_vision - final) * wi))) for wi in w]
    # rounding must not make a later stage keep more than an earlier one
    for i in range(1, len(counts)):
        counts[i] = min(counts[i], counts[i - 1])
    return counts


def equivalent_tokens(n_vision: int, counts: Sequence[int], layers: Sequence[int], num_layers: int) -> float:
    """Layer-averaged vision tokens entering the decoder layers for a plan."""
    total = layers[0] * n_vision if layers else num_layers * n_vision
    for count, span in zip(counts, layer_spans(layers, num_layers)):
        total += count * span
    return total / num_layers


def _solve_final_for_equivalent(
    n_vision: int, target: float, layers: Sequence[int], num_layers: int, w: Sequence[float]
) -> int:
    # equivalent(final) is linear in `final`: solve, round, and check reachability.
    spans = layer_spans(layers, num_layers)
    fixed = layers[0] * n_vision + sum(s * n_vision * wi for s, wi in zip(spans, w))
    slope = sum(s * (1.0 - wi) for s, wi in zip(spans, w))
    lowest = equivalent_tokens(
        n_vision, [max(1, round(1 + (n_vision - 1) * wi)) for wi in w], layers, num_layers
    )
    if slope <= 0:
        raise BudgetError("these pruning layers cannot change the equivalent token count")
    final = (target * num_layers - fixed) / slope
    if final < 0.5 and target < lowest - 1e-9:
        raise BudgetError(
            f"budget equivalent={target:g} is below the {lowest:.1f} tokens reachable with pruning "
            f"layers {tuple(layers)} of {num_layers}; prune earlier (smaller layers) or ask for more"
        )
    return max(1, min(n_vision, math.floor(final + 0.5)))
