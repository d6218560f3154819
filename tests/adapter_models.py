"""Tiny random models of every new adapter family, with the batches the adapter tests share.

Each :class:`Family` builds its model from configs (no downloads) and makes a
batch of one row and a left-padded batch of two rows that differ in image
size, number of frames or images, and prompt length.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
from torch import nn

from tokenprune.adapters.llava_next import anyres_inputs, tiny_random_llava_next, tiny_random_llava_onevision
from tokenprune.adapters.qwen2_vl import qwen_inputs, tiny_random_qwen2_5_vl, tiny_random_qwen2_vl
from tokenprune.adapters.video_llava import tiny_random_video_llava, video_llava_inputs

Inputs = dict[str, Any]


@dataclass(frozen=True)
class Family:
    """One adapter family under test.

    Attributes:
        adapter: the adapter's registered name.
        build: ``attn -> model`` (fp32, eval, random weights).
        one: batch of one row.
        two: left-padded batch of two different rows.
        mrope: positions are 3-D M-RoPE, computed by the model from the
            whole sequence (the oracle then needs no explicit position ids).
    """

    adapter: str
    build: Callable[[str], nn.Module]
    one: Callable[[nn.Module], Inputs]
    two: Callable[[nn.Module], Inputs]
    mrope: bool = False


# an image + a 2-frame video next to a 3-frame video of another size
QWEN_TWO = [
    ([1, 5, 6], [("image", (1, 8, 12)), ("video", (2, 4, 8))], [7, 8, 9, 10]),
    ([1], [("video", (3, 4, 4))], [9, 10]),
]

FAMILIES = {
    "video-llava": Family(
        "video-llava",
        lambda attn: tiny_random_video_llava(attn=attn),
        lambda m: video_llava_inputs(m, [([1, 5], ["image", "video"], [7, 8, 9])]),
        # an image + a video next to two videos (2 vs 4 frames in the row), different prompts
        lambda m: video_llava_inputs(
            m, [([1, 5, 6], ["image", "video"], [7, 8, 9, 10, 11]), ([1], ["video", "video"], [9])]
        ),
    ),
    "llava-next": Family(
        "llava-next",
        lambda attn: tiny_random_llava_next(attn=attn),
        lambda m: anyres_inputs(m, [([1, 5], [("image", (32, 32))], [7, 8, 9])]),
        lambda m: anyres_inputs(
            m, [([1, 5, 6], [("image", (12, 32))], [7, 8, 9, 10]), ([1], [("image", (32, 20))], [9, 10])]
        ),
    ),
    "llava-onevision": Family(
        "llava-onevision",
        lambda attn: tiny_random_llava_onevision(attn=attn),
        lambda m: anyres_inputs(m, [([1, 5], [("image", (32, 32))], [7, 8, 9])]),
        # a tiled image next to two untiled images and a 3-frame video
        lambda m: anyres_inputs(
            m,
            [
                ([1, 5, 6], [("image", (12, 32))], [7, 8, 9, 10]),
                ([1], [("image", (32, 20)), ("image", (16, 16)), ("video", 3)], [9, 10]),
            ],
        ),
    ),
    "qwen2-vl": Family(
        "qwen2-vl",
        lambda attn: tiny_random_qwen2_vl(attn=attn),
        lambda m: qwen_inputs([([1, 5], [("image", (1, 8, 8))], [7, 8, 9])]),
        lambda m: qwen_inputs(QWEN_TWO),
        mrope=True,
    ),
    "qwen2.5-vl": Family(
        "qwen2.5-vl",
        lambda attn: tiny_random_qwen2_5_vl(attn=attn),
        lambda m: qwen_inputs([([1, 5], [("image", (1, 8, 8))], [7, 8, 9])]),
        lambda m: qwen_inputs(QWEN_TWO),
        mrope=True,
    ),
}


@cache
def tiny(family: str, attn: str = "sdpa") -> nn.Module:
    """The family's tiny model, built once per session (tests never mutate it)."""
    return FAMILIES[family].build(attn)


def continuation_inputs(family: Family, inputs: Inputs, sequences: torch.Tensor) -> Inputs:
    """Inputs for an UNHOOKED forward over prompt + generated tokens (the generate oracle).

    Models with 1-D RoPE get the position ids ``generate`` uses; M-RoPE models
    recompute 3-D positions from the whole sequence (generated tokens are text).
    """
    from tokenprune.testing import generation_positions

    extra = sequences.shape[1] - inputs["input_ids"].shape[1]
    rows = len(sequences)
    mask = torch.cat([inputs["attention_mask"], torch.ones(rows, extra, dtype=torch.long)], dim=1)
    result = dict(inputs, input_ids=sequences, attention_mask=mask)
    if family.mrope:
        types = inputs["mm_token_type_ids"]
        result["mm_token_type_ids"] = torch.cat([types, torch.zeros(rows, extra, dtype=types.dtype)], dim=1)
    else:
        result["position_ids"] = generation_positions(mask)
    return result
