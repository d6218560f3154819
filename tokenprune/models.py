"""Named models and evaluation sets that plugins provide offline (for the CLI and benchmarks)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
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
        path: local checkpoint directory (``from_pretrained``) when the model
            has one; ``tokenprune run`` then loads it with its processor.
        sample_images: image files of a sample request for ``tokenprune run``.
        sample_prompt: the sample request's prompt.
        scaled_inputs: ``(model, batch_size, images_per_row) -> inputs`` with
            rows of equal length; needed by ``tokenprune bench --perf``.
        timing_default: the model ``tokenprune bench --perf`` uses when the
            user names none.
    """

    name: str
    description: str
    build: Callable[[], nn.Module]
    sample_inputs: Callable[[nn.Module, int], dict[str, Any]]
    default: bool = False
    path: Path | None = None
    sample_images: tuple[Path, ...] = field(default_factory=tuple)
    sample_prompt: str | None = None
    scaled_inputs: Callable[[nn.Module, int, int], dict[str, Any]] | None = None
    timing_default: bool = False


@dataclass(frozen=True)
class DatasetSpec:
    """A labelled evaluation set a plugin provides for ``tokenprune bench``.

    Attributes:
        name: unique name (``--dataset NAME``).
        model: name of the :class:`ModelSpec` it is meant for.
        description: one line for listings.
        vision_tokens: vision tokens per request (budgets are fractions of it).
        load: ``n -> examples``: the first ``n`` examples of a FIXED split.
        evaluate: ``(model, examples) -> list[bool]``, one correctness flag per
            example, running the model (with whatever policy is attached) on a
            batch.
        kind: ``example -> str``, the question type for per-type accuracy.
    """

    name: str
    model: str
    description: str
    vision_tokens: int
    load: Callable[[int], list[Any]]
    evaluate: Callable[[nn.Module, list[Any]], list[bool]]
    kind: Callable[[Any], str]
