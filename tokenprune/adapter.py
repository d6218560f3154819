"""The adapter contract: what the engine needs to know about a model family.

An adapter answers where the decoder layers are, which tokens are vision
tokens (from token ids, never offsets), and how the family passes masks,
positions and rotary embeddings to its layers. The defaults here follow the
conventions transformers 5.x uses for Llama-style decoders, so an adapter for
a new family is usually a few lines: ``name``, ``model_classes`` and
``vision_token_ids``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from tokenprune.errors import UnsupportedInputError, UnsupportedModelError

SUPPORTED_ATTENTION = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")


@dataclass
class LayerCall:
    """The sequence-shaped inputs of one decoder-layer call, read from its arguments."""

    hidden_states: torch.Tensor
    attention_mask: Any
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None
    position_ids: torch.Tensor | None
    cache: Any = None


@dataclass(frozen=True)
class VisionGrid:
    """Where each vision token of one row sits: ``cells[i] = (image, frame, row, column)``.

    ``image`` counts images/videos in the row, ``frame`` is 0 for still images
    (an adapter may number the views of one image there instead, e.g. LLaVA-NeXT's
    base and any-resolution views). ``shapes[image] = (frames, rows, columns)``
    bounds the patch cells of that image; a token that is not a patch (an
    ``image_newline``, a frame's CLS token) sits at column ``columns`` of its
    row. ``docs/adapters.md`` gives each family's layout.
    """

    cells: torch.Tensor  # [n_vision, 4] long
    shapes: tuple[tuple[int, int, int], ...]


class Adapter:
    """Base class of model-family adapters (one instance per attached model).

    Subclasses set :attr:`name`, :attr:`model_classes` and implement
    :meth:`vision_token_ids`; everything else has working defaults for
    transformers-5 decoders and may be overridden.
    """

    #: unique adapter name (``tokenprune adapters`` lists it)
    name: ClassVar[str] = ""
    #: class names this adapter handles, shown in errors and listings
    model_classes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    # ------------------------------------------------------------------ matching
    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """True if this adapter handles ``model`` (default: exact class name match)."""
        return type(model).__name__ in cls.model_classes

    # ----------------------------------------------------------------- structure
    def top_module(self) -> nn.Module:
        """The module users call (``forward``/``generate``); ``labels`` are checked here."""
        return self.model

    def multimodal_module(self) -> nn.Module:
        """The module that still receives ``input_ids`` (to find vision tokens)."""
        return self.model.model

    def text_model(self) -> nn.Module:
        """The language decoder (receives the 2-D mask, the cache, the embeddings)."""
        return self.model.model.language_model

    def decoder_layers(self) -> Sequence[nn.Module]:
        """The decoder layers, in order."""
        return list(self.text_model().layers)

    def attention_module(self, layer: nn.Module) -> nn.Module:
        """The self-attention module of a decoder layer."""
        return layer.self_attn

    @property
    def text_config(self) -> Any:
        """The decoder's config."""
        return self.model.config.get_text_config()

    @property
    def num_layers(self) -> int:
        """Decoder depth."""
        return len(self.decoder_layers())

    def attention_implementation(self) -> str:
        """The decoder's attention backend name (``sdpa``, ``eager``, ...)."""
        return str(getattr(self.text_config, "_attn_implementation", None) or "eager")

    # ------------------------------------------------------------ vision tokens
    def vision_token_ids(self) -> tuple[int, ...]:
        """Token ids that mark vision tokens (image, video, ...)."""
        raise NotImplementedError

    def vision_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` bool: which input positions are vision tokens."""
        ids = torch.tensor(self.vision_token_ids(), device=input_ids.device)
        return torch.isin(input_ids, ids)

    def request_input_ids(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
        """The token ids of a multimodal-module call, aligned with the decoder's sequence.

        The default reads the ``input_ids`` argument. A family whose decoder
        never sees token ids (images spliced in as embeddings) returns ids it
        reconstructed, with its vision token id at the vision positions.
        """
        ids = kwargs.get("input_ids", args[0] if args else None)
        return ids if isinstance(ids, torch.Tensor) else None

    def install_hooks(self, layers: tuple[int, ...]) -> list[Any]:
        """Family-specific hooks for one attachment; each returned object has ``remove()``.

        ``layers`` are the pruning layers. The default installs nothing.
        """
        return []

    def vision_grids(self, input_ids: torch.Tensor, call_kwargs: dict[str, Any]) -> list[VisionGrid | None]:
        """Per row, the grid cell of each vision token; None where unknown.

        ``call_kwargs`` are the keyword arguments of the multimodal module call
        (``pixel_values``, ``image_sizes``, ...).
        """
        return [None] * input_ids.shape[0]

    # ------------------------------------------------------------ support check
    def check_supported(self) -> None:
        """Raise :class:`UnsupportedModelError` for setups the engine would compute wrongly."""
        require_transformers_5(type(self.model).__name__)
        config = self.text_config
        layer_types = getattr(config, "layer_types", None)
        if layer_types and any(kind != "full_attention" for kind in layer_types):
            kinds = sorted(set(layer_types))
            raise UnsupportedModelError(
                f"{type(self.model).__name__}: decoder layer types {kinds} are not supported; "
                "tokenprune handles full-attention decoders only (sliding-window / hybrid layers "
                "need their own masks)"
            )
        window = getattr(config, "sliding_window", None)
        if window is not None and getattr(config, "use_sliding_window", True):
            raise UnsupportedModelError(
                f"{type(self.model).__name__}: sliding-window attention (sliding_window={window}) "
                "is not supported"
            )
        if getattr(config, "use_bidirectional_attention", False) or not getattr(config, "is_causal", True):
            raise UnsupportedModelError(
                f"{type(self.model).__name__}: bidirectional attention masks are not supported"
            )
        impl = self.attention_implementation()
        if impl not in SUPPORTED_ATTENTION:
            raise UnsupportedModelError(
                f"attention implementation {impl!r} is not supported; use one of {SUPPORTED_ATTENTION}"
            )

    # ------------------------------------------------------ layer call protocol
    def read_layer_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> LayerCall:
        """Extract the sequence-shaped inputs of a decoder-layer call."""
        hidden = args[0] if args else kwargs["hidden_states"]
        return LayerCall(
            hidden_states=hidden,
            attention_mask=kwargs.get("attention_mask"),
            position_embeddings=kwargs.get("position_embeddings"),
            position_ids=kwargs.get("position_ids"),
            cache=kwargs.get("past_key_values", kwargs.get("cache")),
        )

    def attention_inputs(
        self, attention: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """From an attention-module call: its input ``[B, N, D]`` and rotary ``(cos, sin)`` ``[B|1, N, d]``."""
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        return hidden, kwargs["position_embeddings"]

    # ------------------------------------------------------------------- caches
    def check_cache(self, cache: Any) -> None:
        """Refuse a cache the engine cannot prune (default: anything but ``DynamicCache``)."""
        if cache is None:
            return
        from transformers import DynamicCache

        if type(cache) is not DynamicCache:
            raise UnsupportedInputError(
                f"{type(cache).__name__} is not supported; tokenprune prunes with the default "
                "DynamicCache (a static cache would keep its full allocation anyway)"
            )

    def cache_length(self, cache: Any, layer: int) -> int:
        """Tokens held by ``layer`` of ``cache`` (0 for no cache)."""
        if cache is None:
            return 0
        return int(cache.get_seq_length(layer))

    def cache_tensors(self, cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Per layer ``(keys, values)`` of ``cache``, or None if it cannot be read."""
        if cache is None or not hasattr(cache, "layers"):
            return None
        return [(layer.keys, layer.values) for layer in cache.layers]

    def write_layer_call(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], call: LayerCall
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Put (possibly pruned) inputs back into a decoder-layer call."""
        kwargs = dict(kwargs)
        if args:
            args = (call.hidden_states, *args[1:])
        else:
            kwargs["hidden_states"] = call.hidden_states
        kwargs["attention_mask"] = call.attention_mask
        if call.position_embeddings is not None:
            kwargs["position_embeddings"] = call.position_embeddings
        if call.position_ids is not None:
            kwargs["position_ids"] = call.position_ids
        return args, kwargs

    def gather_position_embeddings(
        self, position_embeddings: tuple[torch.Tensor, torch.Tensor], index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gather rotary ``(cos, sin)`` ``[B|1, N, d]`` at ``index`` ``[B, N']`` (sequence dim -2).

        Gathering, never recomputing, is what keeps every token's ORIGINAL position.
        """
        return tuple(gather_sequence(t, index, dim=-2) for t in position_embeddings)  # type: ignore[return-value]

    def gather_position_ids(self, position_ids: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Gather ``position_ids`` (``[B|1, N]``, or ``[k, B, N]`` for multi-axis RoPE) at ``index``."""
        return gather_sequence(position_ids, index, dim=-1)

    def build_mask(self, hidden_states: torch.Tensor, mask_2d: torch.Tensor, cache: Any, layer_idx: int) -> Any:
        """The layer's attention mask for the pruned space, via transformers' own mask builder.

        ``mask_2d`` ``[B, kv]`` covers cached and new tokens of the pruned space.
        """
        from transformers.masking_utils import create_causal_mask

        return create_causal_mask(
            config=self.text_config,
            inputs_embeds=hidden_states,
            attention_mask=mask_2d,
            cache=cache,
            position_ids=None,  # gapped ids would be read as packed sequences
            layer_idx=layer_idx,
        )

    def queries(
        self,
        attention: nn.Module,
        hidden: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        query_index: torch.Tensor,
    ) -> tuple[torch.Tensor, float]:
        """Rotary-embedded queries ``[H, n_q, d]`` of some rows of ONE sequence, and the logit scaling.

        Args:
            attention: the layer's attention module.
            hidden: ``[N, D]`` the attention module's input (after the layer norm).
            position_embeddings: ``(cos, sin)`` each ``[N, d]`` for this sequence.
            query_index: ``[n_q]`` rows whose queries are needed.
        """
        head_dim = attention.head_dim
        heads = attention.q_proj.out_features // head_dim
        q = attention.q_proj(hidden[query_index]).view(len(query_index), heads, head_dim)
        if getattr(attention, "q_norm", None) is not None:
            q = attention.q_norm(q)
        cos, sin = position_embeddings
        q = apply_rotary(q.transpose(0, 1), cos[query_index], sin[query_index])
        scaling = getattr(attention, "scaling", None)
        return q, float(scaling if scaling is not None else head_dim**-0.5)

    def keys(
        self, attention: nn.Module, hidden: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """Rotary-embedded keys ``[H_kv, N, d]`` of ONE sequence, recomputed from the attention input.

        The engine reads them from the KV cache instead when the request has
        one (the model already computed them); this is the fallback.
        """
        head_dim = attention.head_dim
        kv_heads = attention.k_proj.out_features // head_dim
        k = attention.k_proj(hidden).view(hidden.shape[0], kv_heads, head_dim)
        if getattr(attention, "k_norm", None) is not None:
            k = attention.k_norm(k)
        cos, sin = position_embeddings
        return apply_rotary(k.transpose(0, 1), cos, sin)

    def queries_keys(
        self,
        attention: nn.Module,
        hidden: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        query_index: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """:meth:`queries` and :meth:`keys`, with key heads repeated to match query heads (GQA).

        Returns:
            ``(q [H, n_q, d], k [H, N, d], scaling)``.
        """
        q, scaling = self.queries(attention, hidden, position_embeddings, query_index)
        k = self.keys(attention, hidden, position_embeddings)
        return q, repeat_heads(k, q.shape[0]), scaling


def repeat_heads(keys: torch.Tensor, heads: int) -> torch.Tensor:
    """Repeat ``[H_kv, N, d]`` key heads to ``heads`` (grouped-query attention)."""
    return keys.repeat_interleave(heads // keys.shape[0], dim=0)


def require_transformers_5(model_name: str) -> None:
    """The default decoder protocol is transformers 5.x's; refuse older versions clearly."""
    import transformers

    major = int(transformers.__version__.split(".")[0])
    if major < 5:
        raise UnsupportedModelError(
            f"{model_name}: this adapter drives transformers 5.x decoders, found transformers "
            f"{transformers.__version__}; upgrade transformers (older codebases: see the llava-codebase adapter)"
        )


def gather_sequence(tensor: torch.Tensor, index: torch.Tensor, dim: int) -> torch.Tensor:
    """Gather ``tensor`` along its sequence ``dim`` with a per-row ``index`` ``[B, N']``.

    ``tensor`` has its batch dim right before the sequence dim for ``dim=-2``
    (``[B|1, N, d]``) or at -2 for ``dim=-1`` (``[..., B|1, N]``); a batch of 1
    is broadcast. Negative indices are clamped to 0 (callers overwrite those
    slots).
    """
    index = index.clamp(min=0).to(tensor.device)
    batch, new_len = index.shape
    if dim == -2:
        expanded = tensor.expand(batch, *tensor.shape[-2:]) if tensor.shape[0] != batch else tensor
        return expanded.gather(1, index[:, :, None].expand(batch, new_len, tensor.shape[-1]))
    if dim == -1:
        lead = tensor.shape[:-2]
        expanded = tensor.expand(*lead, batch, tensor.shape[-1]) if tensor.shape[-2] != batch else tensor
        return expanded.gather(-1, index.expand(*lead, batch, new_len))
    raise ValueError("dim must be -1 or -2")


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Rotate the two halves of the last dim: ``(a, b) -> (-b, a)``."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding ``x*cos + rotate_half(x)*sin`` on ``x [H, n, d]``; partial rotary if ``cos`` is narrower."""
    rot = cos.shape[-1]
    if rot == x.shape[-1]:
        return x * cos + rotate_half(x) * sin
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    return torch.cat((x_rot * cos + rotate_half(x_rot) * sin, x_pass), dim=-1)
