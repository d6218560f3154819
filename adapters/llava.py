"""Adapter for ``LlavaForConditionalGeneration`` (LLaVA-1.5 and llava-hf checkpoints).

Vision tokens are the positions holding ``config.image_token_id``; each image
contributes a square patch grid (24x24 = 576 tokens for LLaVA-1.5 at 336 px).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch

import tokenprune
from tokenprune.adapters.tiny import demo_spec


class LlavaAdapter(tokenprune.Adapter):
    """LLaVA-1.5-style models: one square patch grid per image."""

    name = "llava"
    model_classes = ("LlavaForConditionalGeneration",)

    def vision_token_ids(self) -> tuple[int, ...]:
        """The image token id."""
        return (int(self.model.config.image_token_id),)

    def tokens_per_image(self) -> int | None:
        """Vision tokens per image when they form a square grid, else None."""
        config = self.model.config
        if getattr(config, "vision_feature_select_strategy", "default") != "default":
            return None  # "full" keeps the CLS token, which has no grid cell
        vision = config.vision_config
        side = int(vision.image_size) // int(vision.patch_size)
        return side * side

    def vision_grids(self, input_ids: torch.Tensor, call_kwargs: dict[str, Any]) -> list[tokenprune.VisionGrid | None]:
        """Image index, frame 0, row and column of each vision token, row-major per image."""
        per_image = self.tokens_per_image()
        grids: list[tokenprune.VisionGrid | None] = []
        for ids in input_ids:
            n = int(self.vision_mask(ids[None])[0].sum())
            if per_image is None or n == 0 or n % per_image:
                grids.append(None)
                continue
            side = math.isqrt(per_image)
            index = torch.arange(n)
            cells = torch.stack(
                [index // per_image, torch.zeros_like(index), (index % per_image) // side, index % side], dim=1
            )
            grids.append(tokenprune.VisionGrid(cells=cells, shapes=((1, side, side),) * (n // per_image)))
        return grids


@tokenprune.hookimpl
def tokenprune_adapters() -> list[type[tokenprune.Adapter]]:
    """Register the LLaVA adapter."""
    return [LlavaAdapter]


def tiny_random_llava(layers: int = 4, attn: str = "sdpa", seed: int = 0) -> Any:
    """A tiny LLaVA with RANDOM weights built from configs (64 vision tokens per image).

    For demos and tests of the machinery only: its answers mean nothing.
    """
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=4, projection_dim=32,
    )
    text = LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=128, max_position_embeddings=512, pad_token_id=0,
    )
    return _random_llava(LlavaConfig(vision_config=vision, text_config=text, image_token_id=100, vision_feature_layer=-1), attn, seed)


def _random_llava(config: Any, attn: str, seed: int) -> Any:
    """Random weights from ``config``, eval mode, generating without an end token (demo and timing models)."""
    from transformers import LlavaForConditionalGeneration

    config._attn_implementation = attn
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def tiny_random_inputs(model: Any, batch_size: int = 1, images_per_row: int = 1) -> dict[str, torch.Tensor]:
    """Left-padded sample prompts for :func:`tiny_random_llava`, ``images_per_row`` images per row."""
    config = model.config
    per_image = (config.vision_config.image_size // config.vision_config.patch_size) ** 2
    generator = torch.Generator().manual_seed(1)
    image_block = [config.image_token_id] * per_image * images_per_row
    rows = [[1, 5, 6] + image_block + [7, 8, 9, 10 + i][: 2 + (i % 3)] for i in range(batch_size)]
    width = max(len(r) for r in rows)
    ids = torch.zeros(batch_size, width, dtype=torch.long)
    mask = torch.zeros(batch_size, width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
    size = config.vision_config.image_size
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values": torch.randn(batch_size * images_per_row, 3, size, size, generator=generator),
    }


#: LLaVA-1.5-7B's decoder is 32 layers of width 4096 (MLP 11008, 32 heads of 64); the
#: performance model keeps the depth (so every policy's published pruning layers apply
#: unscaled), the head size, the MLP ratio and the 576 vision tokens per image, and
#: divides the width by 8
PERF_TEXT = dict(
    hidden_size=512, intermediate_size=1376, num_hidden_layers=32, num_attention_heads=8,
    num_key_value_heads=8, vocab_size=32064, max_position_embeddings=4096, pad_token_id=0,
)
PERF_PROMPT_TOKENS = 40  # text tokens around the image(s): a typical LLaVA-1.5 VQA prompt


def llava15_shaped_random(attn: str = "sdpa", seed: int = 0) -> Any:
    """A LLaVA-1.5-SHAPED model with RANDOM weights, sized for CPU timing (``tokenprune bench --perf``).

    336 px images in 14 px patches give LLaVA-1.5's 576 vision tokens per
    image; the vision tower is one narrow layer (its cost is not what pruning
    changes); the decoder is :data:`PERF_TEXT`. Answers are noise.
    """
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
        image_size=336, patch_size=14, projection_dim=64,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=LlamaConfig(**PERF_TEXT), image_token_id=32000, vision_feature_layer=-1,
    )
    return _random_llava(config, attn, seed)


def llava15_shaped_inputs(model: Any, batch_size: int = 1, images_per_row: int = 1) -> dict[str, torch.Tensor]:
    """Rows of ~40 text tokens around ``images_per_row`` images of 576 tokens (no padding: equal rows)."""
    config = model.config
    per_image = (config.vision_config.image_size // config.vision_config.patch_size) ** 2
    generator = torch.Generator().manual_seed(2)
    before, after = 5, PERF_PROMPT_TOKENS - 5
    rows = []
    for _ in range(batch_size):
        text = torch.randint(1, 32000, (PERF_PROMPT_TOKENS,), generator=generator).tolist()
        image_block = [config.image_token_id] * per_image * images_per_row
        rows.append(text[:before] + image_block + text[before : before + after])
    ids = torch.tensor(rows)
    size = config.vision_config.image_size
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": torch.randn(batch_size * images_per_row, 3, size, size, generator=generator),
    }


@tokenprune.hookimpl
def tokenprune_models() -> list[tokenprune.ModelSpec]:
    """Register the tiny random LLaVA (demo of the machinery) and the LLaVA-1.5-shaped timing model."""
    return [
        replace(demo_spec("tiny-random-llava", "LLaVA", tiny_random_llava, tiny_random_inputs), scaled_inputs=tiny_random_inputs),
        tokenprune.ModelSpec(
            name="llava-1.5-shaped-random",
            description=(
                "LLaVA-1.5-shaped (576 vision tokens per image, ~40-token prompt, 32x512 decoder) with random "
                "weights, for timing (tokenprune bench --perf); answers are noise"
            ),
            build=llava15_shaped_random,
            sample_inputs=llava15_shaped_inputs,
            scaled_inputs=llava15_shaped_inputs,
            timing_default=True,
        ),
    ]
