"""Named models that plugins can build offline (for the demo and benchmarks)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    """A model a plugin can provide without a download.

    Attributes:
        name: unique name (``--model NAME``).
        description: one line for listings; say if the weights are random.
        build: returns the model in eval mode.
        sample_inputs: ``(model, batch_size) -> inputs`` ready for ``model(**inputs)``.
        default: the model to use when the user names none.
    """

    name: str
    description: str
    build: Callable[[], nn.Module]
    sample_inputs: Callable[[nn.Module, int], dict[str, Any]]
    default: bool = False
