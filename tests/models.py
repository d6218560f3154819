"""Tiny random models and inputs built from configs (no downloads)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import LlavaForConditionalGeneration

from tokenprune.adapters.llava import tiny_random_llava

IMAGE_TOKEN = 100
PER_IMAGE = 64  # 32 px images, 4 px patches


def tiny_llava(attn: str = "sdpa", layers: int = 4, seed: int = 0) -> LlavaForConditionalGeneration:
    """A 4-layer Llama decoder with a 2-layer CLIP tower, fp32, eval mode, random weights."""
    return tiny_random_llava(layers=layers, attn=attn, seed=seed)


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
