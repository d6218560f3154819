"""Adapters for any-resolution LLaVA: LLaVA-NeXT and LLaVA-OneVision.

Model classes: ``LlavaNextForConditionalGeneration``,
``LlavaOnevisionForConditionalGeneration``.

Token layout of one image (transformers' ``pack_image_features``): the base
view (a ``side x side`` patch grid of the whole image, resized), then the
any-resolution view: the tiles of the chosen resolution stitched into one
grid, with the padding rows/columns removed (``unpad_image``; OneVision also
shrinks grids larger than ``anyres_max_N`` tiles), each row followed by one
``image_newline`` token. An image that is not tiled (a OneVision multi-image
row) is its base view followed by a single ``image_newline``. A OneVision
video is ``frames x ceil(side/2)^2`` pooled tokens followed by one
``image_newline``. So rows of a batch hold different numbers of vision
tokens, decided by ``image_sizes``.

``image_newline`` tokens carry the image token id and are vision tokens like
any other: policies may drop or merge them (``docs/adapters.md`` says why).
Their grid cell tells them apart: column ``shapes[item][2]``, one past every
patch column of the image.

Grid: ``frame`` is the view for images (0 = base view, 1 = any-resolution
view) and the frame for videos.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

import torch

import tokenprune
from tokenprune.adapters.grids import (
    Block,
    Grids,
    assign_blocks,
    block,
    extra_cell,
    patch_cells,
    patch_cells_with_row_ends,
)
from tokenprune.adapters.tiny import demo_spec, left_pad, ready_to_generate, tiny_text_config


class AnyResolutionAdapter(tokenprune.Adapter):
    """Shared layout logic of the any-resolution LLaVA family (not registered itself)."""

    @property
    def side(self) -> int:
        """Patches per side of one tile (and of the base view)."""
        vision = self.model.config.vision_config
        return int(vision.image_size) // int(vision.patch_size)

    def modeling_module(self) -> Any:
        """The model's own modeling module: its any-res helpers define the layout mirrored here."""
        return importlib.import_module(type(self.model).__module__)

    def tiled_shape(self, image_size: Any, call_kwargs: dict[str, Any]) -> tuple[int, int]:
        """``(rows, columns)`` of the any-resolution view of an image of ``image_size`` (H, W)."""
        modeling = self.modeling_module()
        config = self.model.config
        tiles_h, tiles_w = modeling.get_anyres_image_grid_shape(
            image_size, config.image_grid_pinpoints, config.vision_config.image_size
        )
        # unpad_image on an empty-channel tensor gives the model's exact crop
        # (including its rounding) without any feature data.
        stitched = torch.empty(0, tiles_h * self.side, tiles_w * self.side)
        rows, columns = modeling.unpad_image(stitched, image_size).shape[1:]
        return int(rows), int(columns)

    def image_block(self, image_size: Any, tiled: bool, call_kwargs: dict[str, Any]) -> Block:
        """One image of ``image_size`` (H, W), with or without its any-resolution view."""
        if not tiled:
            return self.untiled_block()
        return self.tiled_block(*self.tiled_shape(image_size, call_kwargs))

    def tiled_block(self, rows: int, columns: int) -> Block:
        """Base view (frame 0), then a ``rows x columns`` any-res view with row-end newlines (frame 1)."""
        base = patch_cells(self.side, self.side, frame=0)
        return block(base, patch_cells_with_row_ends(rows, columns, frame=1))

    def untiled_block(self) -> Block:
        """Base view followed by one ``image_newline``."""
        return block(patch_cells(self.side, self.side, frame=0), extra_cell(0, self.side - 1))

    def image_blocks(self, call_kwargs: dict[str, Any]) -> list[Block | None]:
        """Blocks of every image of the call, in batch order.

        From ``image_sizes`` when the call has them; ``generate`` instead
        encodes the images first and passes the packed features
        (``mm_encoder_outputs``), whose ``image_newline`` vectors mark the row
        ends of the any-resolution view.
        """
        sizes = call_kwargs.get("image_sizes")
        if sizes is not None and call_kwargs.get("pixel_values") is not None:
            tiled = self.tiled_images(call_kwargs, len(sizes))
            return [self.image_block(size, tile, call_kwargs) for size, tile in zip(sizes, tiled)]
        encoded = (call_kwargs.get("mm_encoder_outputs") or {}).get("image")
        if encoded is None:
            return []
        return [self.block_from_features(features) for features in encoded.pooler_output]

    def block_from_features(self, features: torch.Tensor) -> Block | None:
        """The block of one image from its packed features ``[n, D]``; None if they do not fit the layout."""
        newline = self.model.model.image_newline.to(features.device, features.dtype)
        is_newline = (features == newline).all(dim=-1)
        base = self.side * self.side
        if len(features) == base + 1 and int(is_newline.sum()) == 1 and bool(is_newline[-1]):
            return self.untiled_block()
        ends = torch.nonzero(is_newline[base:], as_tuple=False).flatten()
        if ends.numel() == 0:
            return None
        rows, columns = int(ends.numel()), int(ends[0])
        expected = torch.arange(1, rows + 1, device=ends.device) * (columns + 1) - 1
        if len(features) != base + rows * (columns + 1) or not torch.equal(ends, expected):
            return None
        return self.tiled_block(rows, columns)

    def tiled_images(self, call_kwargs: dict[str, Any], n_images: int) -> list[bool]:
        """Whether each image gets the any-resolution view (always, for LLaVA-NeXT)."""
        return [True] * n_images


class LlavaNextAdapter(AnyResolutionAdapter):
    """LLaVA-NeXT (1.6): base view + any-resolution tiles + ``image_newline`` per row."""

    name = "llava-next"
    model_classes = ("LlavaNextForConditionalGeneration",)

    def vision_token_ids(self) -> tuple[int, ...]:
        """The image token id (``image_newline`` tokens carry it too)."""
        return (int(self.model.config.image_token_id),)

    def vision_grids(self, input_ids: torch.Tensor, call_kwargs: dict[str, Any]) -> Grids:
        """Cells of every image (see :meth:`image_blocks`)."""
        image_id = int(self.model.config.image_token_id)
        return assign_blocks(input_ids, {image_id: self.image_blocks(call_kwargs)})


class LlavaOnevisionAdapter(AnyResolutionAdapter):
    """LLaVA-OneVision: LLaVA-NeXT's image layout (grids capped at ``anyres_max_N``) plus pooled videos."""

    name = "llava-onevision"
    model_classes = ("LlavaOnevisionForConditionalGeneration",)

    def vision_token_ids(self) -> tuple[int, ...]:
        """The image and video token ids."""
        config = self.model.config
        return (int(config.image_token_id), int(config.video_token_id))

    def tiled_images(self, call_kwargs: dict[str, Any], n_images: int) -> list[bool]:
        """Images of multi-image rows are not tiled (``batch_num_images``), as in the model."""
        per_row = call_kwargs.get("batch_num_images")
        if per_row is None:
            return [True] * n_images
        return [int(n) == 1 for n in per_row for _ in range(int(n))]

    def tiled_shape(self, image_size: Any, call_kwargs: dict[str, Any]) -> tuple[int, int]:
        """The unpadded any-res grid, shrunk like ``LlavaOnevisionModel.pack_image_features`` does."""
        rows, columns = super().tiled_shape(image_size, call_kwargs)
        aspect = call_kwargs.get("vision_aspect_ratio") or self.model.config.vision_aspect_ratio
        max_tiles = int(aspect.strip("anyres_max_"))
        ratio = math.sqrt(rows * columns / (max_tiles * self.side**2))
        if ratio > 1.1:  # the model's threshold for bilinear downsizing
            rows, columns = int(rows // ratio), int(columns // ratio)
        return rows, columns

    def video_block(self, frames: int) -> Block:
        """One video: per frame a 2x2-pooled patch grid, then one ``image_newline`` after the last frame."""
        pooled = math.ceil(self.side / 2)
        parts = [patch_cells(pooled, pooled, frame) for frame in range(frames)]
        return block(*parts, extra_cell(frames - 1, pooled - 1))

    def video_blocks(self, call_kwargs: dict[str, Any]) -> list[Block]:
        """Blocks of every video of the call: frames from ``pixel_values_videos`` or the encoded videos."""
        videos = call_kwargs.get("pixel_values_videos")
        if videos is not None:
            return [self.video_block(int(videos.shape[1]))] * int(videos.shape[0])
        encoded = (call_kwargs.get("mm_encoder_outputs") or {}).get("video")
        if encoded is None:
            return []
        features = encoded.pooler_output  # [videos, frames * pooled^2 + 1, D]
        frames = (int(features.shape[1]) - 1) // math.ceil(self.side / 2) ** 2
        return [self.video_block(frames)] * int(features.shape[0])

    def vision_grids(self, input_ids: torch.Tensor, call_kwargs: dict[str, Any]) -> Grids:
        """Cells of the images and videos of the call (see :meth:`image_blocks`, :meth:`video_blocks`)."""
        config = self.model.config
        blocks = {
            int(config.image_token_id): self.image_blocks(call_kwargs),
            int(config.video_token_id): self.video_blocks(call_kwargs),
        }
        return assign_blocks(input_ids, blocks)


@tokenprune.hookimpl
def tokenprune_adapters() -> list[type[tokenprune.Adapter]]:
    """Register the LLaVA-NeXT and LLaVA-OneVision adapters."""
    return [LlavaNextAdapter, LlavaOnevisionAdapter]


# ----------------------------------------------------------- tiny models
IMAGE_TOKEN, VIDEO_TOKEN = 100, 101
SPECIAL_TOKENS = (IMAGE_TOKEN, VIDEO_TOKEN)
TILE = 16  # pixels per tile side; 4-pixel patches give 4 x 4 = 16 tokens per tile
PINPOINTS = [[16, 32], [32, 16], [32, 32]]


def _tiny_vision(kind: str) -> Any:
    from transformers import CLIPVisionConfig, SiglipVisionConfig

    config_class = CLIPVisionConfig if kind == "clip" else SiglipVisionConfig
    return config_class(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        image_size=TILE, patch_size=4,
    )


def tiny_random_llava_next(layers: int = 4, attn: str = "sdpa", seed: int = 0) -> Any:
    """A tiny LLaVA-NeXT (CLIP + Llama) with RANDOM weights: 16-px tiles, up to 2 x 2 tiles per image."""
    from transformers import LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration

    config = LlavaNextConfig(
        vision_config=_tiny_vision("clip"), text_config=LlamaConfig(**tiny_text_config(layers)),
        image_token_index=IMAGE_TOKEN, vision_feature_layer=-1, image_grid_pinpoints=PINPOINTS,
    )
    config._attn_implementation = attn
    torch.manual_seed(seed)
    return ready_to_generate(LlavaNextForConditionalGeneration(config).eval(), SPECIAL_TOKENS)


def tiny_random_llava_onevision(layers: int = 4, attn: str = "sdpa", seed: int = 0) -> Any:
    """A tiny LLaVA-OneVision (SigLIP + Qwen2) with RANDOM weights: 16-px tiles, pooled video frames."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, Qwen2Config

    config = LlavaOnevisionConfig(
        vision_config=_tiny_vision("siglip"), text_config=Qwen2Config(**tiny_text_config(layers)),
        image_token_index=IMAGE_TOKEN, video_token_index=VIDEO_TOKEN, vision_feature_layer=-1,
        image_grid_pinpoints=PINPOINTS,
    )
    config._attn_implementation = attn
    torch.manual_seed(seed)
    return ready_to_generate(LlavaOnevisionForConditionalGeneration(config).eval(), SPECIAL_TOKENS)


def anyres_inputs(
    model: Any, rows: list[tuple[list[int], list[tuple[str, Any]], list[int]]], seed: int = 1
) -> dict[str, torch.Tensor]:
    """Inputs for a tiny any-res model: per row ``(prefix ids, items, suffix ids)``.

    An item is ``("image", (height, width))`` or, for OneVision, ``("video",
    frames)``; all videos of a batch need the same number of frames (one
    tensor). Vision tokens are counted with the adapter's own layout;
    ``pixel_values`` hold random tiles, zero-padded to the largest tile count
    as the processor does.
    """
    onevision = "Onevision" in type(model).__name__
    adapter = (LlavaOnevisionAdapter if onevision else LlavaNextAdapter)(model)
    sizes = [size for _, items, _ in rows for kind, size in items if kind == "image"]
    frames = {value for _, items, _ in rows for kind, value in items if kind == "video"}
    if len(frames) > 1:
        raise ValueError("all videos of a batch must have the same number of frames")
    meta: dict[str, Any] = {"image_sizes": torch.tensor(sizes).reshape(-1, 2)}
    if onevision:
        meta["batch_num_images"] = torch.tensor([sum(k == "image" for k, _ in items) for _, items, _ in rows])
    tiled = adapter.tiled_images(meta, len(sizes))
    image_blocks = iter(adapter.image_block(size, tile, {}) for size, tile in zip(meta["image_sizes"], tiled))
    sequences = []
    for prefix, items, suffix in rows:
        ids = list(prefix)
        for kind, value in items:
            if kind == "image":
                ids += [IMAGE_TOKEN] * next(image_blocks).size + [6]
            else:
                ids += [VIDEO_TOKEN] * LlavaOnevisionAdapter(model).video_block(value).size + [6]
        sequences.append(ids + suffix)
    inputs: dict[str, Any] = left_pad(sequences)
    generator = torch.Generator().manual_seed(seed)
    if sizes:
        modeling = adapter.modeling_module()
        tiles = [modeling.image_size_to_num_patches(torch.tensor(size), PINPOINTS, TILE) for size in sizes]
        pixels = torch.zeros(len(sizes), max(tiles), 3, TILE, TILE)
        for i, n in enumerate(tiles):
            pixels[i, :n] = torch.randn(n, 3, TILE, TILE, generator=generator)
        inputs.update(pixel_values=pixels, image_sizes=meta["image_sizes"])
        if onevision:
            inputs["batch_num_images"] = meta["batch_num_images"]
    if frames:
        n_videos = sum(kind == "video" for _, items, _ in rows for kind, _ in items)
        shape = (n_videos, frames.pop(), 3, TILE, TILE)
        inputs["pixel_values_videos"] = torch.randn(shape, generator=generator)
    return inputs


def tiny_random_inputs(model: Any, batch_size: int = 1) -> dict[str, torch.Tensor]:
    """Left-padded prompts with one image per row, each row a different image size."""
    sizes = [(32, 32), (12, 32), (32, 20)]
    rows = [([1, 5], [("image", sizes[i % 3])], [7, 8, 9, 10 + i][: 2 + i % 3]) for i in range(batch_size)]
    return anyres_inputs(model, rows)


@tokenprune.hookimpl
def tokenprune_models() -> list[tokenprune.ModelSpec]:
    """Register the tiny random LLaVA-NeXT and LLaVA-OneVision (demos of the machinery)."""
    return [
        demo_spec("tiny-random-llava-next", "LLaVA-NeXT", tiny_random_llava_next, tiny_random_inputs),
        demo_spec("tiny-random-llava-onevision", "LLaVA-OneVision", tiny_random_llava_onevision, tiny_random_inputs),
    ]
