"""Named policy steps.

Policies that are recipes (SparseVLM: raters → scoring → budget → recycling)
look their steps up by ``(kind, name)`` so that configuration alone can swap
one step for another, including a step from an outside plugin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tokenprune.timing import timed


@dataclass(frozen=True)
class Step:
    """A named, swappable piece of a policy.

    Attributes:
        kind: what the step does, e.g. ``"rater"``, ``"scorer"``, ``"budget"``,
            ``"recycler"``. Steps of one kind share a call signature, documented
            by the policy that uses the kind.
        name: unique within its kind.
        fn: the callable; ideally a thin shell around a pure tensor function.
        description: one line for ``tokenprune policies``.
        options: names of the policy options this step reads (for help output).
    """

    kind: str
    name: str
    fn: Callable[..., Any]
    description: str = ""
    options: tuple[str, ...] = field(default_factory=tuple)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the step (timed as ``kind:name`` when timing is collected)."""
        with timed(f"{self.kind}:{self.name}"):
            return self.fn(*args, **kwargs)
