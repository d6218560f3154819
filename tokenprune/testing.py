"""Test helpers for policy and adapter authors (public, importable as ``tokenprune.testing``).

The oracle: an UNHOOKED full-length forward whose attention masks hide, from
each pruning layer on, the vision tokens that pruning dropped. For every kept
token its result must equal real pruning — same keys, same ORIGINAL positions —
so comparing the two checks gathering, masks, positions and the KV cache at
once. A policy that inserts merged tokens cannot be checked this way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tokenprune.adapter import Adapter
from tokenprune.stats import PruneStats


def visible_sets(stats: PruneStats, vision_mask: torch.Tensor, attention_mask: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """Per pruning layer, ``(layer, [B, N] bool)`` original positions still visible from that layer on.

    Raises ``ValueError`` when the request merged tokens (no oracle exists).
    """
    result = []
    ordinal = torch.where(vision_mask, vision_mask.long().cumsum(-1) - 1, -1)
    for record in stats.records:
        if any(groups for groups in record.merged):
            raise ValueError("the oracle cannot represent merged tokens")
        visible = attention_mask.bool() & ~vision_mask
        for row, kept in enumerate(record.kept):
            kept_t = torch.tensor(kept, dtype=torch.long)
            visible[row] |= vision_mask[row] & torch.isin(ordinal[row], kept_t)
        result.append((record.layer, visible))
    return result


def additive_mask(visible_keys: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[B, 1, N, N]`` causal mask that also hides keys where ``visible_keys`` ``[B, N]`` is False.

    Uses the dtype's minimum instead of -inf so fully hidden query rows stay finite.
    """
    n = visible_keys.shape[1]
    causal = torch.ones(n, n, dtype=torch.bool, device=visible_keys.device).tril()
    allowed = causal[None] & visible_keys[:, None, :].bool()
    low = torch.finfo(dtype).min
    return torch.where(allowed, 0.0, low).to(dtype)[:, None]


@contextmanager
def oracle_masks(
    adapter: Adapter,
    attention_mask: torch.Tensor,
    stages: list[tuple[int, torch.Tensor]],
    dtype: torch.dtype,
    model_mask: bool = True,
) -> Iterator[None]:
    """While active, an unhooked forward of the FULL sequence uses the oracle masks.

    Args:
        adapter: the model's adapter (to find the text model and layers).
        attention_mask: ``[B, N]`` padding mask of the full sequence.
        stages: ``(layer, visible [B, N])`` from :func:`visible_sets` (extend
            ``visible`` with True for generated tokens).
        dtype: the model's compute dtype.
        model_mask: also replace the mask the text model receives (layers
            before the first pruning layer); pass False for decoders that
            read a 4-D mask as 0/1 visibility (transformers 4.3x), whose own
            mask is already right for those layers.
    """
    handles = []
    base = additive_mask(attention_mask.bool(), dtype)

    def text_hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        kwargs = dict(kwargs)
        kwargs["attention_mask"] = base
        return args, kwargs

    def layer_hook(mask: torch.Tensor, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        kwargs = dict(kwargs)
        kwargs["attention_mask"] = mask
        return args, kwargs

    layers = adapter.decoder_layers()
    try:
        if model_mask:
            handles.append(adapter.text_model().register_forward_pre_hook(text_hook, with_kwargs=True))
        for i, (start, visible) in enumerate(stages):
            end = stages[i + 1][0] if i + 1 < len(stages) else len(layers)
            mask = additive_mask(visible & attention_mask.bool(), dtype)
            for index in range(start, end):
                hook = _bind(layer_hook, mask)
                handles.append(layers[index].register_forward_pre_hook(hook, with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _bind(fn: Any, mask: torch.Tensor) -> Any:
    return lambda module, args, kwargs: fn(mask, module, args, kwargs)


def generation_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids ``generate`` assigns: cumulative count of visible tokens, 0 at padding."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)


def max_kept_difference(pruned: torch.Tensor, oracle: torch.Tensor, stats: PruneStats, attention_mask: torch.Tensor) -> float:
    """Largest |pruned - oracle| over output slots that hold a kept, visible original token.

    Args:
        pruned: ``[B, N', V]`` outputs of the pruned forward.
        oracle: ``[B, N, V]`` outputs of the oracle forward.
        stats: the pruned request's statistics (``output_origin`` maps slots back).
        attention_mask: ``[B, N]`` padding mask (padding slots are not compared).
    """
    origin = stats.output_origin.to(pruned.device)
    worst = 0.0
    for row in range(pruned.shape[0]):
        slots = torch.nonzero(origin[row] >= 0, as_tuple=False).flatten()
        positions = origin[row, slots]
        keep = attention_mask[row, positions].bool()
        diff = (pruned[row, slots[keep]] - oracle[row, positions[keep]]).abs()
        if diff.numel():
            worst = max(worst, float(diff.max()))
    return worst


# ----------------------------------------------------------------- checks
def assert_keep_all_exact(model: nn.Module, inputs: dict[str, Any], policy: str, **options: Any) -> None:
    """Keeping every token through ``policy`` must give logits ``torch.equal`` to the unhooked model."""
    import tokenprune

    with torch.no_grad():
        reference = model(**inputs).logits
        with tokenprune.attach(model, policy=policy, ratio=1.0, options=options or None):
            pruned = model(**inputs).logits
    if not torch.equal(pruned, reference):
        raise AssertionError(f"keep-all through {policy!r} changed the logits (max diff {(pruned - reference).abs().max():.3g})")


def oracle_difference(model: nn.Module, inputs: dict[str, Any], **attach_kwargs: Any) -> float:
    """Prune with ``attach_kwargs``, run the oracle, return the largest difference on kept tokens.

    ``inputs`` must carry ``input_ids`` and a 2-D ``attention_mask``. Expect
    about 1e-6 in float32; a position or mask bug gives 1e-3 or more.
    """
    import tokenprune

    with torch.no_grad(), tokenprune.attach(model, **attach_kwargs) as handle:
        pruned = model(**inputs).logits
        stats = handle.stats
        adapter = handle.adapter
    assert stats is not None
    mask = inputs["attention_mask"]
    stages = visible_sets(stats, adapter.vision_mask(inputs["input_ids"]), mask)
    with torch.no_grad(), oracle_masks(adapter, mask, stages, pruned.dtype):
        oracle = model(**inputs).logits
    return max_kept_difference(pruned, oracle, stats, mask)


@dataclass
class LargestTensor:
    """The largest tensor a policy produced during one request (see :func:`largest_policy_tensor`)."""

    numel: int
    shape: tuple[int, ...]
    operation: str
    sequence_length: int


def largest_policy_tensor(model: nn.Module, inputs: dict[str, Any], **attach_kwargs: Any) -> LargestTensor:
    """Run one request and report the largest tensor any aten operation produced inside the policy.

    Everything the policy does at request start and at each pruning layer
    (its steps, and the attention rows it asks the engine for) is recorded
    at the dispatcher level, so a full ``[heads, N, N]`` or ``[N, N]``
    attention map shows up however it was computed. ``sequence_length`` is
    the request's ``N`` (padded prompt length). Use it to assert a policy
    never materialises attention-sized tensors:
    ``assert largest.numel < largest.sequence_length ** 2``.
    """
    import tokenprune
    from torch.utils._python_dispatch import TorchDispatchMode

    largest = LargestTensor(0, (), "", int(inputs["input_ids"].shape[1]))

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
            out = func(*args, **(kwargs or {}))
            for tensor in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(tensor, torch.Tensor) and tensor.numel() > largest.numel:
                    largest.numel, largest.shape, largest.operation = tensor.numel(), tuple(tensor.shape), str(func)
            return out

    def recorded(method: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with Recorder():
                return method(*args, **kwargs)

        return wrapper

    with torch.no_grad(), tokenprune.attach(model, **attach_kwargs) as handle:
        policy = handle.policy
        policy.select = recorded(policy.select)
        policy.begin_request = recorded(policy.begin_request)
        model(**inputs)
    return largest


@contextmanager
def fresh_plugin_manager() -> Iterator[Any]:
    """Rebuild the plugin manager from the ``tokenprune`` entry points; restore the old one on exit.

    Use it to check that a plugin is discovered through its entry point, e.g.
    after putting a ``*.dist-info`` with ``entry_points.txt`` on ``sys.path``.
    """
    from tokenprune import plugins

    saved = plugins._manager
    plugins._manager = None
    try:
        yield plugins.plugin_manager()
    finally:
        plugins._manager = saved


# -------------------------------------------------------------- strategies
def score_vectors(min_size: int = 1, max_size: int = 64) -> Any:
    """Hypothesis strategy: 1-D float32 score tensors, ties included (needs ``hypothesis``)."""
    from hypothesis import strategies as st

    values = st.one_of(
        st.floats(-10, 10, allow_nan=False, width=32),
        st.sampled_from([0.0, 0.5, 1.0]),  # frequent exact ties
    )
    return st.lists(values, min_size=min_size, max_size=max_size).map(
        lambda xs: torch.tensor(xs, dtype=torch.float32)
    )


def vision_features(max_tokens: int = 32, dim: int = 8) -> Any:
    """Hypothesis strategy: ``[n, dim]`` float32 feature tensors with ``n >= 1`` (needs ``hypothesis``)."""
    from hypothesis import strategies as st

    return st.tuples(st.integers(1, max_tokens), st.integers(0, 2**31 - 1)).map(
        lambda args: torch.randn(args[0], dim, generator=torch.Generator().manual_seed(args[1]))
    )
