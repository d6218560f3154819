"""Adapters for ``Qwen2VLForConditionalGeneration`` and ``Qwen2_5_VLForConditionalGeneration``.

Vision tokens carry ``image_token_id`` or ``video_token_id``. Each image or
video covers ``t x h x w`` patches (``image_grid_thw`` / ``video_grid_thw``);
the vision tower merges ``m x m`` neighbouring patches
(``spatial_merge_size``), so it holds ``t x (h/m) x (w/m)`` tokens, frame by
frame, row-major. That is the grid this adapter reports:
``(item, frame, row, column)``, images and videos sharing one index per row in
sequence order.

Positions are 3-D (M-RoPE: temporal, height, width). transformers 5 mixes
the three sections inside the text model's rotary embedding, so each decoder
layer receives ordinary ``(cos, sin)`` of shape ``[B, N, head_dim]``, plus
``position_ids`` ``[B, N]`` (the text positions, only when ``generate`` built
them). The engine GATHERS both at a pruning layer, so every kept token keeps
its 3-D position; nothing is recomputed. ``generate`` numbers new tokens from
the 2-D mask plus ``model.model.rope_deltas``, which pruning leaves untouched.

The decoder is full-attention only (``layer_types``); a config with
``use_sliding_window`` is refused by :meth:`tokenprune.Adapter.check_supported`.
Qwen2.5-VL's window attention lives in the vision tower (``fullatt_block_indexes``
/ ``window_size`` of ``vision_config``), which runs before the decoder and is
never hooked.
"""

from __future__ import annotations

from typing import Any

import torch

import tokenprune
from tokenprune.adapters.grids import Block, Grids, assign_blocks, bounding_shape, grid_of, runs, video_block
from tokenprune.adapters.tiny import demo_spec, left_pad, ready_to_generate, tiny_text_config


class Qwen2VLAdapter(tokenprune.Adapter):
    """Qwen2-VL: dynamic-resolution images and videos, 3-D M-RoPE positions."""

    name = "qwen2-vl"
    model_classes = ("Qwen2VLForConditionalGeneration",)

    def vision_token_ids(self) -> tuple[int, ...]:
        """The image and video token ids."""
        config = self.model.config
        return (int(config.image_token_id), int(config.video_token_id))

    def blocks(self, grid_thw: torch.Tensor | None) -> list[Block]:
        """One block per row of ``grid_thw`` ``[n, 3]`` (patches), after the spatial merge."""
        if grid_thw is None:
            return []
        merge = int(self.model.config.vision_config.spatial_merge_size)
        return [video_block(int(t), int(h) // merge, int(w) // merge) for t, h, w in grid_thw.tolist()]

    def vision_grids(self, input_ids: torch.Tensor, call_kwargs: dict[str, Any]) -> Grids:
        """Cells from the call's 3-D positions, or else from ``image_grid_thw`` / ``video_grid_thw``.

        ``generate`` encodes images before the prefill and calls the model
        without the grids, but with the M-RoPE ``position_ids`` it computed:
        the model's own ``(t, h, w)`` position of every vision token.
        """
        positions = rope_positions(call_kwargs.get("position_ids"))
        if positions is not None:
            return grids_from_positions(input_ids, positions, self.vision_token_ids())
        config = self.model.config
        return assign_blocks(
            input_ids,
            {
                int(config.image_token_id): self.blocks(call_kwargs.get("image_grid_thw")),
                int(config.video_token_id): self.blocks(call_kwargs.get("video_grid_thw")),
            },
        )


def rope_positions(position_ids: Any) -> torch.Tensor | None:
    """``[3, B, N]`` temporal/height/width positions from M-RoPE ``position_ids``, if they are 3-D.

    ``generate`` passes ``[4, B, N]`` (text positions first); a forward may
    pass ``[3, B, N]``.
    """
    if isinstance(position_ids, torch.Tensor) and position_ids.dim() == 3 and position_ids.shape[0] in (3, 4):
        return position_ids[-3:]
    return None


def grids_from_positions(
    input_ids: torch.Tensor, positions: torch.Tensor, token_ids: tuple[int, ...]
) -> Grids:
    """Grids read off M-RoPE positions ``[3, B, N]``: one item per run of one vision token id.

    Within an item, rows and columns are height/width positions minus the
    item's smallest; frames number its distinct temporal positions (their
    spacing, e.g. Qwen2.5-VL's seconds-based interval, does not matter).
    Every item must fill its ``frames x rows x columns`` box; otherwise the
    positions are not M-RoPE grids (e.g. ``generate`` without
    ``mm_token_type_ids`` falls back to 1-D positions) and every row gets None.
    """
    grids: Grids = []
    for row, ids in enumerate(input_ids):
        blocks = []
        for _, start, stop in runs(ids, token_ids):
            t, h, w = positions[:, row, start:stop].to(torch.long)
            frame = torch.unique(t, return_inverse=True)[1]
            cells = torch.stack([frame, h - h.min(), w - w.min()], dim=1).cpu()
            shape = bounding_shape(cells)
            if shape[0] * shape[1] * shape[2] != len(cells):
                return [None] * input_ids.shape[0]
            blocks.append(Block(cells=cells, shape=shape))
        grids.append(grid_of(blocks))
    return grids


class Qwen2_5_VLAdapter(Qwen2VLAdapter):
    """Qwen2.5-VL: Qwen2-VL's decoder and token layout; window attention only in the vision tower."""

    name = "qwen2.5-vl"
    model_classes = ("Qwen2_5_VLForConditionalGeneration",)


@tokenprune.hookimpl
def tokenprune_adapters() -> list[type[tokenprune.Adapter]]:
    """Register the Qwen2-VL and Qwen2.5-VL adapters."""
    return [Qwen2VLAdapter, Qwen2_5_VLAdapter]


# ----------------------------------------------------------- tiny models
IMAGE_TOKEN, VIDEO_TOKEN, VISION_START, VISION_END = 100, 101, 102, 103
SPECIAL_TOKENS = (IMAGE_TOKEN, VIDEO_TOKEN, VISION_START, VISION_END)
PATCH, TEMPORAL, MERGE = 2, 2, 2  # pixels per patch side, frames per temporal patch, spatial merge


def _tiny_qwen_configs(layers: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(text, shared vision)`` config keyword arguments; head_dim 16 splits M-RoPE as 2+3+3."""
    text = dict(
        tiny_text_config(layers), bos_token_id=1, eos_token_id=None,
        rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
    )
    vision = dict(patch_size=PATCH, temporal_patch_size=TEMPORAL, spatial_merge_size=MERGE, num_heads=2)
    return text, vision


def tiny_random_qwen2_vl(layers: int = 4, attn: str = "sdpa", seed: int = 0) -> Any:
    """A tiny Qwen2-VL with RANDOM weights built from configs (2-px patches, 2 x 2 merge)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    text, vision = _tiny_qwen_configs(layers)
    config = Qwen2VLConfig(
        text_config=text, vision_config=dict(vision, depth=1, embed_dim=32, hidden_size=64),
        image_token_id=IMAGE_TOKEN, video_token_id=VIDEO_TOKEN,
        vision_start_token_id=VISION_START, vision_end_token_id=VISION_END,
    )
    config._attn_implementation = attn
    torch.manual_seed(seed)
    return ready_to_generate(Qwen2VLForConditionalGeneration(config).eval(), SPECIAL_TOKENS)


def tiny_random_qwen2_5_vl(layers: int = 4, attn: str = "sdpa", seed: int = 0) -> Any:
    """A tiny Qwen2.5-VL with RANDOM weights: a 2-block vision tower, block 0 windowed, block 1 full."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text, vision = _tiny_qwen_configs(layers)
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=dict(
            vision, depth=2, hidden_size=32, intermediate_size=64, out_hidden_size=64,
            window_size=8, fullatt_block_indexes=[1],
        ),
        image_token_id=IMAGE_TOKEN, video_token_id=VIDEO_TOKEN,
        vision_start_token_id=VISION_START, vision_end_token_id=VISION_END,
    )
    config._attn_implementation = attn
    torch.manual_seed(seed)
    return ready_to_generate(Qwen2_5_VLForConditionalGeneration(config).eval(), SPECIAL_TOKENS)


def qwen_inputs(
    rows: list[tuple[list[int], list[tuple[str, tuple[int, int, int]]], list[int]]], seed: int = 1
) -> dict[str, torch.Tensor]:
    """Inputs for a tiny Qwen model: per row ``(prefix ids, [(kind, (t, h, w))...], suffix ids)``.

    ``kind`` is ``"image"`` or ``"video"``; ``(t, h, w)`` counts patches (``t``
    is 1 for images). Each item is wrapped in vision start/end tokens, as the
    processor does, and ``mm_token_type_ids`` mark images (1) and videos (2).
    """
    sequences, grids = [], {"image": [], "video": []}
    for prefix, items, suffix in rows:
        ids = list(prefix)
        for kind, (t, h, w) in items:
            token = IMAGE_TOKEN if kind == "image" else VIDEO_TOKEN
            ids += [VISION_START] + [token] * (t * h * w // MERGE**2) + [VISION_END]
            grids[kind].append((t, h, w))
        sequences.append(ids + suffix)
    inputs: dict[str, Any] = left_pad(sequences)
    ids = inputs["input_ids"]
    inputs["mm_token_type_ids"] = (ids == IMAGE_TOKEN).int() + 2 * (ids == VIDEO_TOKEN).int()
    generator = torch.Generator().manual_seed(seed)
    for kind, key in (("image", "pixel_values"), ("video", "pixel_values_videos")):
        if grids[kind]:
            thw = torch.tensor(grids[kind])
            patches = int(thw.prod(-1).sum())
            inputs[key] = torch.randn(patches, 3 * TEMPORAL * PATCH * PATCH, generator=generator)
            inputs[f"{kind}_grid_thw"] = thw
    return inputs


def tiny_random_inputs(model: Any, batch_size: int = 1) -> dict[str, torch.Tensor]:
    """Left-padded prompts: row 0 an 8 x 8-patch image, further rows other image sizes or a video."""
    items = [[("image", (1, 8, 8))], [("image", (1, 8, 12))], [("video", (2, 8, 8))]]
    rows = [([1, 5, 6], items[i % 3], [7, 8, 9, 10 + i][: 2 + i % 3]) for i in range(batch_size)]
    return qwen_inputs(rows)


@tokenprune.hookimpl
def tokenprune_models() -> list[tokenprune.ModelSpec]:
    """Register the tiny random Qwen2-VL and Qwen2.5-VL (demos of the machinery)."""
    return [
        demo_spec("tiny-random-qwen2-vl", "Qwen2-VL", tiny_random_qwen2_vl, tiny_random_inputs),
        demo_spec("tiny-random-qwen2.5-vl", "Qwen2.5-VL", tiny_random_qwen2_5_vl, tiny_random_inputs),
    ]
