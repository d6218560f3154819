"""Adapter for models of the original LLaVA codebase (``llava-torch``) and Mini-Gemini.

Recognised by class (``LlavaLlamaForCausalLM``, ``LlavaMistralForCausalLM``,
``MGM{Llama,Mistral,Mixtral}ForCausalLM``) or ``config.model_type``. Vision
blocks are located by wrapping the instance's
``prepare_inputs_labels_for_multimodal``: from its arguments and results the
adapter rebuilds the token ids of the spliced sequence (see
:mod:`.layout`), so batches, padding on either side and several images per
row are handled. Everything that differs in transformers 4.36/4.37 decoders
lives in :mod:`.decoder`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import tokenprune
from tokenprune.adapters.llava_codebase import decoder
from tokenprune.adapters.llava_codebase.layout import spliced_token_ids, view_count, view_layout

#: the codebase's placeholder id for an image in a prompt (``llava.constants.IMAGE_TOKEN_INDEX``)
IMAGE_TOKEN_INDEX = -200
_PREPARE = "prepare_inputs_labels_for_multimodal"


@dataclass(frozen=True)
class SplicedRequest:
    """What one call of ``prepare_inputs_labels_for_multimodal`` produced, as the adapter needs it."""

    ids: torch.Tensor
    blocks: list[list[int]]


class PrepareWrapper:
    """Wraps the instance's ``prepare_inputs_labels_for_multimodal`` to record where images land.

    Removing it deletes the instance attribute again (or restores one that was
    there before), leaving the model exactly as it was.
    """

    def __init__(self, adapter: LlavaCodebaseAdapter) -> None:
        self.adapter = adapter
        model = adapter.model
        self._had_own = _PREPARE in vars(model)
        self._previous = vars(model).get(_PREPARE)
        original = getattr(model, _PREPARE)
        parameters = list(inspect.signature(original).parameters)

        def prepare(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            bound = dict(zip(parameters, args)) | kwargs
            adapter.record_splice(bound.get("input_ids"), bound.get("attention_mask"), result)
            return result

        setattr(model, _PREPARE, prepare)

    def remove(self) -> None:
        """Restore the model's own method."""
        model = self.adapter.model
        if self._had_own:
            setattr(model, _PREPARE, self._previous)
        else:
            vars(model).pop(_PREPARE, None)


class LlavaCodebaseAdapter(tokenprune.Adapter):
    """LLaVA-1.5 and Mini-Gemini on the original LLaVA codebase (transformers 4.36/4.37)."""

    name = "llava-codebase"
    model_classes = (
        "LlavaLlamaForCausalLM",
        "LlavaMistralForCausalLM",
        "MGMLlamaForCausalLM",
        "MGMMistralForCausalLM",
        "MGMMixtralForCausalLM",
    )
    model_types = ("llava_llama", "llava_mistral", "mgm", "mgm_mistral", "mgm_mixtral")
    #: recognised, but their decoder needs transformers >= 4.38 (a different interface)
    refused_classes = ("MGMGemmaForCausalLM",)
    refused_model_types = ("mgm_gemma",)

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self._pending: SplicedRequest | None = None
        self._current: SplicedRequest | None = None
        self._rotary = decoder.RotaryLength()

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """By class name, or by ``model_type`` on a model that splices images the codebase's way."""
        name = type(model).__name__
        if name in cls.model_classes or name in cls.refused_classes:
            return True
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        known = cls.model_types + cls.refused_model_types
        return model_type in known and hasattr(model, _PREPARE)

    # ----------------------------------------------------------------- structure
    def multimodal_module(self) -> nn.Module:
        """The decoder model itself: it receives ``input_ids`` on decode steps, embeddings at prefill."""
        return self.text_model()

    def text_model(self) -> nn.Module:
        """``model.get_model()``: the Llama/Mistral/Mixtral model holding the layers."""
        return self.model.get_model()

    @property
    def text_config(self) -> Any:
        """The model config (the codebase's configs subclass the decoder's config)."""
        return self.model.config

    def attention_implementation(self) -> str:
        """``config._attn_implementation`` of transformers 4.36/4.37."""
        return str(getattr(self.model.config, "_attn_implementation", None) or "eager")

    # ------------------------------------------------------------ support check
    def check_supported(self) -> None:
        """Refuse what the 4.36/4.37 decoder cannot do under pruning, before anything runs."""
        name = type(self.model).__name__
        config = self.model.config
        if name in self.refused_classes or getattr(config, "model_type", None) in self.refused_model_types:
            raise tokenprune.UnsupportedModelError(
                f"{name}: Gemma-based Mini-Gemini needs transformers >= 4.38, whose decoder interface the "
                "llava-codebase adapter does not drive (it targets 4.36/4.37)"
            )
        decoder.check_transformers_version()
        implementation = self.attention_implementation()
        if implementation not in ("sdpa", "eager"):
            raise tokenprune.UnsupportedModelError(
                f"{name}: attention implementation {implementation!r} is not supported by the llava-codebase "
                "adapter (sdpa and eager are); load the model with attn_implementation='sdpa'"
            )
        decoder.check_rope(config, name)
        if getattr(self.model, "get_vision_tower", None) is None:
            raise tokenprune.UnsupportedModelError(f"{name} has no get_vision_tower(); not a LLaVA-codebase model")

    # ------------------------------------------------------------ vision tokens
    def vision_token_ids(self) -> tuple[int, ...]:
        """The codebase's image placeholder id, used in the rebuilt ids at every vision position."""
        return (IMAGE_TOKEN_INDEX,)

    def record_splice(self, input_ids: Any, attention_mask: Any, result: tuple[Any, ...]) -> None:
        """Called with each ``prepare_inputs_labels_for_multimodal`` result; remembers the spliced layout."""
        self._pending = None
        embeds, output_mask = result[4], result[2]
        if embeds is None or not isinstance(input_ids, torch.Tensor):
            return  # text only, or a decode step: ids reach the decoder unchanged
        ids, blocks = spliced_token_ids(input_ids, attention_mask, output_mask, embeds.shape[1], IMAGE_TOKEN_INDEX)
        text = ids != IMAGE_TOKEN_INDEX
        valid = torch.ones_like(text) if output_mask is None else output_mask.bool()
        text &= valid
        # the text positions must hold exactly the embeddings of their ids, or the layout is wrong
        embed = self.text_model().embed_tokens
        if not torch.equal(embeds[text], embed(ids[text]).to(embeds.dtype)):
            raise tokenprune.UnsupportedInputError(
                "could not locate the image blocks in the spliced sequence (its text embeddings do not "
                "match the prompt); images of different token counts in one row are not supported"
            )
        self._pending = SplicedRequest(ids, blocks)

    def request_input_ids(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
        """Decode steps pass ``input_ids``; a prefill with images gets the rebuilt spliced ids."""
        ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        pending, self._pending = self._pending, None
        cache = kwargs.get("past_key_values")
        new = ids if isinstance(ids, torch.Tensor) else embeds
        if isinstance(new, torch.Tensor):
            self._rotary.sequence_length = decoder.cache_length(cache, 0) + new.shape[1]
            self._check_window(self._rotary.sequence_length)
        if isinstance(ids, torch.Tensor):
            self._current = None
            return ids
        if pending is None or embeds is None or pending.ids.shape != embeds.shape[:2]:
            return None
        self._current = pending
        return pending.ids

    def _check_window(self, length: int) -> None:
        window = getattr(self.model.config, "sliding_window", None)
        if window is not None and length > window:
            raise tokenprune.UnsupportedInputError(
                f"the sequence ({length} tokens) is longer than the sliding window ({window}); pruned layers "
                "would need the window applied on original positions, which the 4.3x decoder cannot do"
            )

    def tokens_per_view(self) -> int | None:
        """Patch tokens of one view (576 for a 336 px CLIP ViT-L/14), or None if unknown."""
        side = getattr(self.model.get_vision_tower(), "num_patches_per_side", None)
        return int(side) ** 2 if side else None

    def views(self) -> int:
        """Views per image from the config: Mini-Gemini-HD's ``image_grid`` crops plus its global view."""
        config = self.model.config
        return view_count(int(getattr(config, "image_grid", 1) or 1), bool(getattr(config, "image_global", False)))

    def vision_grids(self, input_ids: torch.Tensor, call_kwargs: dict[str, Any]) -> list[tokenprune.VisionGrid | None]:
        """(image, view, row, column) per vision token; None where a block is not ``views`` square grids."""
        request, per_view = self._current, self.tokens_per_view()
        if request is None or per_view is None:
            return [None] * input_ids.shape[0]
        config = self.model.config
        side = int(round(per_view**0.5))
        views = self.views()
        layout = view_layout(side, int(getattr(config, "image_grid", 1) or 1), bool(getattr(config, "image_global", False)))
        grids: list[tokenprune.VisionGrid | None] = []
        for blocks in request.blocks:
            if not blocks or any(n != views * per_view for n in blocks):
                grids.append(None)
                continue
            cells = torch.cat(
                [torch.cat([torch.full((len(layout), 1), image), layout], dim=1) for image in range(len(blocks))]
            )
            grids.append(tokenprune.VisionGrid(cells=cells, shapes=((views, side, side),) * len(blocks)))
        return grids

    # ------------------------------------------------------------------ hooks
    def install_hooks(self, layers: tuple[int, ...]) -> list[Any]:
        """Wrap the splicing method; give the rotary modules of pruned layers the full-length table."""
        rotary = [self.attention_module(layer).rotary_emb for layer in self.decoder_layers()[layers[0]:]]
        wrapper = PrepareWrapper(self)
        try:
            return [wrapper, self._rotary.install(rotary)]
        except BaseException:
            wrapper.remove()
            raise

    # ------------------------------------------------------ layer call protocol
    def read_layer_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tokenprune.LayerCall:
        """4.3x layers take ``past_key_value`` (singular) and no rotary embeddings."""
        call = super().read_layer_call(args, kwargs)
        call.cache = kwargs.get("past_key_value")
        return call

    def attention_inputs(
        self, attention: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The attention input and the ``(cos, sin)`` it will index from its own rotary table."""
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        return hidden, decoder.rotary_position_embeddings(attention, hidden, kwargs["position_ids"])

    def build_mask(self, hidden_states: torch.Tensor, mask_2d: torch.Tensor, cache: Any, layer_idx: int) -> Any:
        """The 4-D mask (or None) the 4.3x model would build for this key set."""
        return decoder.causal_mask(
            hidden_states, mask_2d, self.attention_implementation(), getattr(self.model.config, "sliding_window", None)
        )

    # ------------------------------------------------------------------- caches
    def check_cache(self, cache: Any) -> None:
        """Accept no cache, a legacy tuple, or a ``DynamicCache``."""
        if cache is None or isinstance(cache, (tuple, list)) or type(cache).__name__ == "DynamicCache":
            return
        raise tokenprune.UnsupportedInputError(f"{type(cache).__name__} is not supported; use the default cache")

    def cache_length(self, cache: Any, layer: int) -> int:
        """Tokens held by ``layer`` of a legacy tuple or a ``DynamicCache``."""
        return decoder.cache_length(cache, layer)

    def cache_tensors(self, cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Per-layer keys and values of a legacy tuple or a ``DynamicCache``."""
        return decoder.cache_tensors(cache)


@tokenprune.hookimpl
def tokenprune_adapters() -> list[type[tokenprune.Adapter]]:
    """Register the original-LLaVA-codebase / Mini-Gemini adapter."""
    return [LlavaCodebaseAdapter]
