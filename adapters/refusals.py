"""Clear refusals for VLM families the engine cannot prune correctly yet.

Without this plugin such a model gets the generic "no tokenprune adapter
handles X". With it, ``attach`` raises :class:`tokenprune.UnsupportedModelError`
naming the mechanism that is missing, so a user knows whether to wait, or to
write an adapter that handles it. The refusing adapter lists no supported
model classes, so listings and error messages never present these families as
supported.

Decoders with sliding-window or hybrid layers inside otherwise supported
families (a Mistral-based LLaVA-NeXT, Qwen2-VL with ``use_sliding_window``) are
refused by :meth:`tokenprune.Adapter.check_supported` of their own adapter.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

import tokenprune

BIDIRECTIONAL = (
    "Gemma-style bidirectional attention among image tokens (a mask built from token_type_ids); "
    "tokenprune builds causal masks only"
)
SLIDING = "sliding-window / hybrid decoder layers (their mask window counts slots, not original positions)"
DEEPSTACK = (
    "DeepStack injection: vision features are added to the hidden states of the first decoder layers "
    "at the image positions (visual_pos_masks), which pruning would have to gather as well"
)
PER_LAYER_INPUTS = "per-layer input embeddings and KV-cache sharing between decoder layers"


class RefusedFamilies(tokenprune.Adapter):
    """Matches VLM classes with attention or feature mechanisms the engine lacks, and refuses them."""

    name = "refused-families"
    model_classes = ()  # supports nothing; see REFUSED for what it recognises

    #: class name -> what the engine would need to handle
    REFUSED: ClassVar[dict[str, tuple[str, ...]]] = {
        "PaliGemmaForConditionalGeneration": (
            "bidirectional attention over the image and prompt prefix (prefix-LM mask from token_type_ids)",
        ),
        "Gemma3ForConditionalGeneration": (BIDIRECTIONAL, SLIDING),
        "Gemma4ForConditionalGeneration": (BIDIRECTIONAL, SLIDING),
        "Gemma3nForConditionalGeneration": (SLIDING, PER_LAYER_INPUTS),
        "Qwen3VLForConditionalGeneration": (DEEPSTACK,),
        "Qwen3VLMoeForConditionalGeneration": (DEEPSTACK,),
    }

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """True for a listed class, or any model whose vision config declares DeepStack layers."""
        return type(model).__name__ in cls.REFUSED or bool(_deepstack_layers(model))

    def check_supported(self) -> None:
        """Always raises :class:`tokenprune.UnsupportedModelError` naming what is missing."""
        name = type(self.model).__name__
        reasons = self.REFUSED.get(name) or (DEEPSTACK,)
        raise tokenprune.UnsupportedModelError(
            f"{name} is not supported yet: tokenprune does not handle {'; nor '.join(reasons)}"
        )


def _deepstack_layers(model: nn.Module) -> Any:
    """The ``deepstack_visual_indexes`` of the model's vision config, if any."""
    config = getattr(model, "config", None)
    vision = getattr(config, "vision_config", None)
    return getattr(vision, "deepstack_visual_indexes", None)


@tokenprune.hookimpl
def tokenprune_adapters() -> list[type[tokenprune.Adapter]]:
    """Register the refusing adapter."""
    return [RefusedFamilies]
