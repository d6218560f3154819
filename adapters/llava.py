"""Adapter for ``LlavaForConditionalGeneration`` (LLaVA-1.5 and llava-hf checkpoints).

Vision tokens are the positions holding ``config.image_token_id``; each image
contributes a square patch grid (24x24 = 576 tokens for LLaVA-1.5 at 336 px).
"""

from __future__ import annotations

import math
from typing import Any

import torch

import tokenprune


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
