"""Opt-in wall-clock timing of the engine's and policies' own work (for ``tokenprune bench --perf``).

While :func:`collect_times` is active in the current context, :func:`timed`
sections add their elapsed seconds to it by name; otherwise they cost one
context-variable lookup. Steps (:class:`tokenprune.Step`) time themselves as
``"<kind>:<name>"``; the engine times ``begin_request``, ``select`` (the whole
policy decision at a pruning layer, steps and attention probe included),
``probe`` and ``prune`` (gathering, layout and mask rebuilding).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

_active: ContextVar[dict[str, float] | None] = ContextVar("tokenprune_times", default=None)


@contextmanager
def collect_times() -> Iterator[dict[str, float]]:
    """Collect ``{section: seconds}`` of every timed section run inside the block."""
    times: dict[str, float] = defaultdict(float)
    token = _active.set(times)
    try:
        yield times
    finally:
        _active.reset(token)


@contextmanager
def timed(name: str) -> Iterator[None]:
    """Time the block under ``name`` if a collector is active (CUDA work is synchronised first)."""
    times = _active.get()
    if times is None:
        yield
        return
    _synchronize()
    start = time.perf_counter()
    try:
        yield
    finally:
        _synchronize()
        times[name] += time.perf_counter() - start


def _synchronize() -> None:
    # asynchronous kernels would otherwise be charged to whoever waits next
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
