"""Families the engine cannot prune correctly are refused with a typed error naming what is missing."""

from __future__ import annotations

import pytest
import torch
import transformers
from helpers import hook_count
from transformers import LlamaForCausalLM, MistralConfig

import tokenprune
from tokenprune import UnsupportedModelError

# class stem -> words the error must contain; default configs, built on the meta device (no memory)
REFUSED = {
    "PaliGemma": "bidirectional attention over the image and prompt prefix",
    "Gemma3": "bidirectional attention among image tokens",
    "Gemma4": "bidirectional attention among image tokens",
    "Gemma3n": "per-layer input embeddings",
    "Qwen3VL": "DeepStack",
    "Qwen3VLMoe": "DeepStack",
}


def _meta_model(stem: str) -> torch.nn.Module:
    config_class = getattr(transformers, f"{stem}Config")
    model_class = getattr(transformers, f"{stem}ForConditionalGeneration")
    if stem == "Gemma3n":
        pytest.importorskip("timm", reason="Gemma3n's vision tower needs timm to be built")
    with torch.device("meta"):
        return model_class(config_class())


@pytest.mark.parametrize("stem", REFUSED)
def test_family_is_refused_with_the_missing_mechanism_named(stem):
    model = _meta_model(stem)
    before = hook_count(model)
    with pytest.raises(UnsupportedModelError, match=REFUSED[stem]) as error:
        tokenprune.attach(model, policy="random", keep=4)
    assert f"{stem}ForConditionalGeneration is not supported yet" in str(error.value)
    assert hook_count(model) == before


def test_refused_families_are_not_listed_as_supported():
    config = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=64
    )
    text = LlamaForCausalLM(config)
    with pytest.raises(UnsupportedModelError, match="no tokenprune adapter") as error:
        tokenprune.attach(text, policy="random", keep=4)
    assert "Gemma3" not in str(error.value) and "Qwen3VL" not in str(error.value)
    assert "Qwen2VLForConditionalGeneration" in str(error.value)


def test_sliding_window_qwen2_vl_decoder_is_refused():
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    text = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
        num_key_value_heads=2, vocab_size=128, use_sliding_window=True, sliding_window=16,
        max_window_layers=2,
        rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
    )
    vision = dict(depth=1, embed_dim=16, hidden_size=32, num_heads=2, patch_size=2)
    with torch.device("meta"):
        model = Qwen2VLForConditionalGeneration(Qwen2VLConfig(text_config=text, vision_config=vision))
    with pytest.raises(UnsupportedModelError, match="sliding_attention"):
        tokenprune.attach(model, policy="random", keep=4)


def test_sliding_window_llava_next_decoder_is_refused():
    """A Mistral decoder with a sliding window, as some LLaVA-NeXT-Mistral configs set."""
    from transformers import CLIPVisionConfig, LlavaNextConfig, LlavaNextForConditionalGeneration

    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        image_size=16, patch_size=4,
    )
    text = MistralConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=128, sliding_window=16,
    )
    config = LlavaNextConfig(
        vision_config=vision, text_config=text, image_token_index=100,
        image_grid_pinpoints=[[16, 32], [32, 16]],
    )
    with torch.device("meta"):
        model = LlavaNextForConditionalGeneration(config)
    with pytest.raises(UnsupportedModelError, match="sliding"):
        tokenprune.attach(model, policy="random", keep=4)
