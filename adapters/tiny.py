"""Helpers for the tiny random-weight models the built-in adapters register (demos and tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

import tokenprune


def left_pad(rows: list[list[int]], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` ``[B, N]`` of token lists, left-padded with ``pad_id``."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row):] = 1
    return {"input_ids": ids, "attention_mask": mask}


def tiny_text_config(layers: int = 4) -> dict[str, int]:
    """Keyword arguments of a 64-wide decoder config (4 heads, 2 KV heads, 128-token vocabulary).

    Every tiny model uses the same decoder shape, so their numbers compare.
    """
    return dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=128, max_position_embeddings=512, pad_token_id=0,
    )


def ready_to_generate(model: torch.nn.Module, special_ids: Iterable[int]) -> torch.nn.Module:
    """Make ``generate`` on random weights behave like a trained model's.

    No EOS, so it runs the requested number of tokens; ``special_ids``
    (image/video placeholders and markers) are never emitted, as a trained
    model would not emit them either.
    """
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    model.generation_config.suppress_tokens = sorted(special_ids)
    return model


def demo_spec(
    name: str, family: str, build: Callable[[], Any], sample_inputs: Callable[[Any, int], dict[str, torch.Tensor]]
) -> tokenprune.ModelSpec:
    """The registration of a tiny random-weight model, labelled as such (its answers are noise)."""
    return tokenprune.ModelSpec(
        name=name,
        description=f"4-layer {family} with random weights built from configs (machinery demo; answers are noise)",
        build=build,
        sample_inputs=sample_inputs,
    )
