"""Tiny random models and inputs built from configs (no downloads)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

IMAGE_TOKEN = 100
PER_IMAGE = 64  # 32 px images, 4 px patches


def tiny_llava(attn: str = "sdpa", layers: int = 4, seed: int = 0) -> LlavaForConditionalGeneration:
    """A 4-layer Llama decoder with a 2-layer CLIP tower, fp32, eval mode."""
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=4, projection_dim=32,
    )
    text = LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=128, max_position_embeddings=512, pad_token_id=0,
    )
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN, vision_feature_layer=-1)
    config._attn_implementation = attn
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


@dataclass
class Row:
    """One request row: system tokens, number of images, question tokens."""

    system: list[int]
    images: int
    question: list[int]

    def ids(self) -> list[int]:
        return self.system + [IMAGE_TOKEN] * (PER_IMAGE * self.images) + self.question


def batch(rows: list[Row], padding: str = "left", seed: int = 1) -> dict[str, torch.Tensor]:
    """Padded ``input_ids``/``attention_mask`` and ``pixel_values`` for every image in order."""
    sequences = [row.ids() for row in rows]
    width = max(len(s) for s in sequences)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for b, seq in enumerate(sequences):
        if padding == "left":
            ids[b, width - len(seq):] = torch.tensor(seq)
            mask[b, width - len(seq):] = 1
        else:
            ids[b, : len(seq)] = torch.tensor(seq)
            mask[b, : len(seq)] = 1
    inputs = {"input_ids": ids, "attention_mask": mask}
    n_images = sum(row.images for row in rows)
    if n_images:
        generator = torch.Generator().manual_seed(seed)
        inputs["pixel_values"] = torch.randn(n_images, 3, 32, 32, generator=generator)
    return inputs


ONE = [Row([1, 5, 6], 1, [7, 8, 9, 10])]
TWO_LEFT = [Row([1, 5, 6], 1, [7, 8, 9, 10, 11, 12]), Row([1, 5], 1, [9, 10])]
MIXED = [Row([1, 5, 6], 1, [7, 8, 9]), Row([1, 5, 6, 7, 8], 0, [9, 10, 11, 12])]
UNEVEN = [Row([1, 5], 2, [7, 8, 9]), Row([1, 5, 6, 7], 1, [9, 10, 11, 12, 13])]
