"""How transformers 4.36 / 4.37 decoders take masks, positions, rotary tables and caches.

The original LLaVA codebase and Mini-Gemini pin these versions. Their
decoder layers differ from transformers 5.x in four ways that matter here:

* rotary ``(cos, sin)`` are computed INSIDE attention from a table cut to the
  layer's key count, then indexed by ``position_ids``: after pruning, original
  positions index past the cut, so the table must be requested at the full
  sequence length (:class:`RotaryLength`);
* the layer's mask is a 4-D additive mask (or None for sdpa without padding),
  built by ``modeling_attn_mask_utils`` helpers (:func:`causal_mask`);
* the cache reaches the layer as ``past_key_value`` and the model returns it
  as a tuple of ``(keys, values)`` per layer (the "legacy" format);
* generation reads only layer 0's cache length, so layer 0 is never pruned
  (the engine never prunes before layer 1).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

import tokenprune

#: transformers versions whose decoder interface this module implements
SUPPORTED_TRANSFORMERS = ("4.36.", "4.37.")


def causal_mask(hidden: torch.Tensor, mask_2d: torch.Tensor, implementation: str, sliding_window: int | None) -> Any:
    """The layer mask for ``hidden`` ``[B, q, D]`` over keys ``mask_2d`` ``[B, kv]``, as the model builds it."""
    from transformers.modeling_attn_mask_utils import (
        _prepare_4d_causal_attention_mask,
        _prepare_4d_causal_attention_mask_for_sdpa,
    )

    batch, q_len = hidden.shape[:2]
    past = mask_2d.shape[1] - q_len
    if implementation == "sdpa":
        return _prepare_4d_causal_attention_mask_for_sdpa(mask_2d, (batch, q_len), hidden, past)
    return _prepare_4d_causal_attention_mask(mask_2d, (batch, q_len), hidden, past, sliding_window=sliding_window)


def cache_length(cache: Any, layer: int) -> int:
    """Tokens cached by ``layer``: a legacy tuple, a 4.3x ``Cache``, or None."""
    if cache is None:
        return 0
    if isinstance(cache, (tuple, list)):
        return int(cache[layer][0].shape[-2]) if layer < len(cache) else 0
    return int(cache.get_seq_length(layer))


def cache_tensors(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Per layer ``(keys, values)`` of a legacy tuple or a 4.3x ``DynamicCache``."""
    if cache is None:
        return None
    if isinstance(cache, (tuple, list)):
        return [(layer[0], layer[1]) for layer in cache]
    if hasattr(cache, "key_cache") and hasattr(cache, "value_cache"):
        return list(zip(cache.key_cache, cache.value_cache))
    return None


def rotary_position_embeddings(
    attention: nn.Module, hidden: torch.Tensor, position_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)`` ``[B|1, N, d]`` exactly as the attention module indexes them."""
    length = int(position_ids.max()) + 1
    cos, sin = attention.rotary_emb(hidden, seq_len=length)
    return cos[position_ids], sin[position_ids]


class RotaryLength:
    """Makes the rotary modules of some layers return their table for the whole sequence.

    Attention asks its rotary module for ``seq_len = keys held by the layer``;
    after pruning that is fewer than the largest original position. The hook
    raises ``seq_len`` to the full sequence length (what layer 0 asks for), so
    the table, and any extension of it, are the ones the unpruned layer uses.
    """

    def __init__(self) -> None:
        self.sequence_length = 0
        self._handles: list[RemovableHandle] = []

    def install(self, rotary_modules: list[nn.Module]) -> RotaryLength:
        """Hook each rotary module; returns self (removable)."""
        for module in rotary_modules:
            self._handles.append(module.register_forward_pre_hook(self._raise_length, with_kwargs=True))
        return self

    def _raise_length(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        requested = kwargs.get("seq_len", args[1] if len(args) > 1 else None)
        if requested is None or requested >= self.sequence_length:
            return None
        kwargs = dict(kwargs)
        kwargs["seq_len"] = self.sequence_length
        return args[:1], kwargs

    def remove(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def check_rope(config: Any, model_name: str) -> None:
    """Refuse rotary scalings whose table depends on the requested length."""
    scaling = getattr(config, "rope_scaling", None) or {}
    kind = scaling.get("type") if isinstance(scaling, dict) else None
    if kind not in (None, "linear"):
        raise tokenprune.UnsupportedModelError(
            f"{model_name}: rope_scaling type {kind!r} rebuilds its rotary table from the number of keys a "
            "layer holds, which pruning changes; only unscaled or linear-scaled rotary embeddings are supported"
        )


def check_transformers_version() -> None:
    """Refuse transformers versions whose decoder interface this module does not implement."""
    import transformers

    version = transformers.__version__
    if not version.startswith(SUPPORTED_TRANSFORMERS):
        raise tokenprune.UnsupportedModelError(
            f"the llava-codebase adapter drives the decoder interface of transformers 4.36/4.37 (found {version}); "
            "install the extra: pip install 'tokenprune[llava-codebase]' (see docs/adapters.md)"
        )
