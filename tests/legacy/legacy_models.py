"""Tiny random models of the original LLaVA codebase (``llava-torch``), built from configs.

No hub access: a tiny CLIP vision tower and its image processor are saved to a
local directory, and ``mm_vision_tower`` points at it (the codebase accepts any
existing path). Mini-Gemini's code is not on PyPI, so ``MGMLlamaForCausalLM``
here is a stand-in: the codebase's LLaVA-Llama model under MGM's class name and
``model_type``, with MGM-HD's config fields, fed 5 views per image (global view
first, then the 2x2 crops). That reproduces what MGM's decoder sees: one
contiguous block of ``5 x tokens_per_view`` per image.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM
from llava.model.language_model.llava_mistral import LlavaMistralConfig, LlavaMistralForCausalLM

IMAGE_SIZE = 56  # 4x4 patches of 14 px per view
TOKENS_PER_VIEW = 16
IMAGE_TOKEN_INDEX = -200


class MGMConfig(LlavaConfig):
    """Stand-in config with Mini-Gemini's ``model_type``."""

    model_type = "mgm"


class MGMLlamaForCausalLM(LlavaLlamaForCausalLM):
    """Stand-in with Mini-Gemini's class name (its decoder sees the same spliced blocks)."""

    config_class = MGMConfig


def save_vision_tower(directory: Path) -> Path:
    """A tiny random CLIP vision tower and its image processor, saved for ``mm_vision_tower``."""
    torch.manual_seed(1)
    config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=IMAGE_SIZE, patch_size=14, projection_dim=32,
    )
    CLIPVisionModel(config).save_pretrained(directory)
    CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    ).save_pretrained(directory)
    return directory


def _fields(tower: Path, attn: str, layers: int) -> dict:
    return dict(
        vocab_size=120, hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        mm_vision_tower=str(tower), mm_hidden_size=32, mm_projector_type="mlp2x_gelu", mm_vision_select_layer=-2,
        mm_vision_select_feature="patch", mm_patch_merge_type="flat", image_aspect_ratio="pad",
        mm_use_im_start_end=False, mm_use_im_patch_token=False, tokenizer_padding_side="left",
    )


def build(family: str, tower: Path, attn: str = "sdpa", layers: int = 6, **extra) -> torch.nn.Module:
    """A tiny random model of ``family`` (``llava-llama``, ``llava-mistral``, ``mgm-hd``), eval mode."""
    fields = _fields(tower, attn, layers) | extra
    if family == "llava-llama":
        config, cls = LlavaConfig(**fields), LlavaLlamaForCausalLM
    elif family == "llava-mistral":
        config, cls = LlavaMistralConfig(**(dict(sliding_window=None) | fields)), LlavaMistralForCausalLM
    elif family == "mgm-hd":
        config, cls = MGMConfig(**(dict(image_grid=2, image_global=True) | fields)), MGMLlamaForCausalLM
    else:
        raise ValueError(family)
    config._attn_implementation = attn
    torch.manual_seed(0)
    model = cls(config)
    model.get_vision_tower().load_model()
    return model.eval()


def views_per_image(family: str) -> int:
    """Views each image is encoded as."""
    return 5 if family == "mgm-hd" else 1


def images(family: str, count: int, seed: int = 0) -> torch.Tensor:
    """``count`` random images: ``[count, 3, H, W]``, or ``[count, 5, 3, H, W]`` for MGM-HD's views."""
    generator = torch.Generator().manual_seed(seed)
    views = views_per_image(family)
    shape = (count, 3, IMAGE_SIZE, IMAGE_SIZE) if views == 1 else (count, views, 3, IMAGE_SIZE, IMAGE_SIZE)
    return torch.randn(*shape, generator=generator)


def prompts(rows: list[list[int]], pad_side: str = "left") -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token-id rows (``IMAGE_TOKEN_INDEX`` marks an image) into ``(input_ids, attention_mask)``."""
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if pad_side == "left" else slice(0, len(row))
        ids[i, span] = torch.tensor(row)
        mask[i, span] = 1
    return ids, mask
