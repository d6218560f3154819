"""Small shared checks."""

from __future__ import annotations

from torch import nn


def hook_count(model: nn.Module) -> int:
    """Every forward hook registered anywhere in ``model``."""
    total = 0
    for module in model.modules():
        total += len(module._forward_pre_hooks) + len(module._forward_hooks)
        total += len(getattr(module, "_forward_hooks_with_kwargs", {}))
        total += len(getattr(module, "_forward_pre_hooks_with_kwargs", {}))
    return total
