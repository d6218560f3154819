"""Adapter for ``VideoLlavaForConditionalGeneration`` (Video-LLaVA).

A request may hold images, videos or both. Image tokens carry
``config.image_token_id`` and hold one patch grid per image (the CLS token is
dropped with the default ``vision_feature_select_strategy``). Video tokens
carry ``config.video_token_id``; every frame contributes its CLS token followed
by its patch grid (8 x 257 = 2056 tokens per video in the released model).

Grid: images are ``(image, 0, row, column)``; a video's tokens are
``(video, frame, row, column)`` and each frame's CLS token sits one past the
patch columns, at ``(video, frame, 0, side)``. Images and videos share one
index per row, in sequence order.
"""

from __future__ import annotations

from typing import Any

import torch

import tokenprune
from tokenprune.adapters.grids import Block, Grids, assign_blocks, block, extra_cell, patch_cells, runs
from tokenprune.adapters.tiny import demo_spec, left_pad, ready_to_generate, tiny_text_config


class VideoLlavaAdapter(tokenprune.Adapter):
    """Video-LLaVA: image patch grids and frame x (CLS + patch grid) videos."""

    name = "video-llava"
    model_classes = ("VideoLlavaForConditionalGeneration",)

    def vision_token_ids(self) -> tuple[int, ...]:
        """The image and video token ids."""
        config = self.model.config
        return (int(config.image_token_id), int(config.video_token_id))

    @property
    def side(self) -> int:
        """Patches per side of one frame or image."""
        vision = self.model.config.vision_config
        return int(vision.image_size) // int(vision.patch_size)

    def image_block(self, strategy: str) -> Block:
        """One image: its patch grid, preceded by the CLS token when the strategy keeps it (``full``)."""
        patches = patch_cells(self.side, self.side)
        if strategy == "default":
            return block(patches)
        return block(extra_cell(0, 0), patches)

    def video_block(self, frames: int) -> Block:
        """One video: per frame, the CLS token then the patch grid (videos always keep CLS)."""
        parts = []
        for frame in range(frames):
            parts += [extra_cell(frame, 0), patch_cells(self.side, self.side, frame)]
        return block(*parts)

    def vision_grids(self, input_ids: torch.Tensor, call_kwargs: dict[str, Any]) -> Grids:
        """Cells of the images and videos of the call.

        Images have a fixed size, so runs of image tokens are cut into images.
        A video's frame count comes from ``pixel_values_videos``; ``generate``
        encodes videos before the prefill and drops them, and then every run of
        video tokens is taken as one video (the processor expands each video
        placeholder into one run).
        """
        config = self.model.config
        strategy = call_kwargs.get("vision_feature_select_strategy") or config.vision_feature_select_strategy
        image = self.image_block(strategy)
        image_id, video_id = int(config.image_token_id), int(config.video_token_id)
        image_runs, video_runs = [], []
        for ids in input_ids:
            for token, start, stop in runs(ids, (image_id, video_id)):
                (image_runs if token == image_id else video_runs).append(stop - start)
        blocks = {
            image_id: [image] * (sum(image_runs) // image.size),
            video_id: self.video_blocks(video_runs, call_kwargs),
        }
        return assign_blocks(input_ids, blocks)

    def video_blocks(self, video_runs: list[int], call_kwargs: dict[str, Any]) -> list[Block | None]:
        """One block per video, in batch order, given the lengths of the runs of video tokens."""
        videos = call_kwargs.get("pixel_values_videos")
        if videos is not None:
            return [self.video_block(int(videos.shape[1]))] * int(videos.shape[0])
        per_frame = self.side * self.side + 1
        return [self.video_block(n // per_frame) if n % per_frame == 0 else None for n in video_runs]


@tokenprune.hookimpl
def tokenprune_adapters() -> list[type[tokenprune.Adapter]]:
    """Register the Video-LLaVA adapter."""
    return [VideoLlavaAdapter]


IMAGE_TOKEN, VIDEO_TOKEN = 100, 101


def tiny_random_video_llava(layers: int = 4, attn: str = "sdpa", seed: int = 0) -> Any:
    """A tiny Video-LLaVA with RANDOM weights built from configs (16 tokens per image, 17 per frame).

    For demos and tests of the machinery only: its answers mean nothing.
    """
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        VideoLlavaConfig,
        VideoLlavaForConditionalGeneration,
    )

    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        image_size=16, patch_size=4, projection_dim=32,
    )
    text = LlamaConfig(**tiny_text_config(layers))
    config = VideoLlavaConfig(
        vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN, video_token_index=VIDEO_TOKEN,
        vision_feature_layer=-1,
    )
    config._attn_implementation = attn
    torch.manual_seed(seed)
    return ready_to_generate(VideoLlavaForConditionalGeneration(config).eval(), (IMAGE_TOKEN, VIDEO_TOKEN))


def video_llava_inputs(
    model: Any, rows: list[tuple[list[int], list[str], list[int]]], frames: int = 2, seed: int = 1
) -> dict[str, torch.Tensor]:
    """Inputs for a tiny Video-LLaVA: per row ``(prefix ids, ["image" | "video", ...], suffix ids)``.

    Every video has ``frames`` frames (``pixel_values_videos`` is one tensor);
    items are separated by one text token, as a chat template would.
    """
    vision = model.config.vision_config
    per_image = (vision.image_size // vision.patch_size) ** 2
    tokens = {"image": [IMAGE_TOKEN] * per_image, "video": [VIDEO_TOKEN] * (frames * (per_image + 1))}
    sequences = []
    for prefix, items, suffix in rows:
        ids = list(prefix)
        for item in items:
            ids += tokens[item] + [6]
        sequences.append(ids + suffix)
    inputs: dict[str, Any] = left_pad(sequences)
    counts = {kind: sum(items.count(kind) for _, items, _ in rows) for kind in tokens}
    generator = torch.Generator().manual_seed(seed)
    size = vision.image_size
    if counts["image"]:
        inputs["pixel_values"] = torch.randn(counts["image"], 3, size, size, generator=generator)
    if counts["video"]:
        shape = (counts["video"], frames, 3, size, size)
        inputs["pixel_values_videos"] = torch.randn(shape, generator=generator)
    return inputs


def tiny_random_inputs(model: Any, batch_size: int = 1) -> dict[str, torch.Tensor]:
    """Left-padded prompts: row 0 an image and a 2-frame video; further rows a video or an image."""
    items = [["image", "video"], ["video"], ["image"]]
    rows = [([1, 5], items[min(i, 1 + i % 2)], [7, 8, 9, 10 + i][: 2 + i % 3]) for i in range(batch_size)]
    return video_llava_inputs(model, rows)


@tokenprune.hookimpl
def tokenprune_models() -> list[tokenprune.ModelSpec]:
    """Register the tiny random Video-LLaVA (demo of the machinery)."""
    return [demo_spec("tiny-random-video-llava", "Video-LLaVA", tiny_random_video_llava, tiny_random_inputs)]
