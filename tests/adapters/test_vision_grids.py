"""Each adapter's grid maps every vision token to a unique cell, matching the model's own layout.

The grid reaches policies through ``RequestContext.grids``; a listener on the
public ``tokenprune_after_prune`` event records it. It is derived from the
call's metadata in a plain forward (``image_sizes``, ``*_grid_thw``, pixel
tensors) and from what ``generate`` passes instead (pre-encoded features,
M-RoPE position ids): both must give the same grid.
"""

from __future__ import annotations

import pytest
import torch
from adapter_models import FAMILIES, tiny

import tokenprune
from tokenprune.adapters.llava_next import PINPOINTS, TILE, LlavaNextAdapter, LlavaOnevisionAdapter
from tokenprune.adapters.qwen2_vl import Qwen2VLAdapter
from tokenprune.adapters.video_llava import VideoLlavaAdapter

CASES = [(family, batch) for family in FAMILIES for batch in ("one", "two")]
IDS = [f"{family}-{batch}" for family, batch in CASES]


class GridRecorder:
    """Outside-style plugin keeping the grids of each pruned request."""

    def __init__(self) -> None:
        self.grids: list[list[tokenprune.VisionGrid | None]] = []

    @tokenprune.hookimpl
    def tokenprune_after_prune(self, event: tokenprune.PruneEvent) -> None:
        self.grids.append(event.request.grids)


@pytest.fixture
def recorder():
    plugin = GridRecorder()
    tokenprune.register_plugin(plugin)
    yield plugin
    tokenprune.unregister_plugin(plugin)


def _grids_forward_and_generate(model, inputs, recorder):
    with torch.no_grad(), tokenprune.attach(model, policy="random", ratio=0.5, layers=(2,)):
        model(**inputs)
        model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert len(recorder.grids) == 2
    return recorder.grids


def _cell_tuples(grid: tokenprune.VisionGrid) -> list[tuple[int, ...]]:
    return [tuple(cell) for cell in grid.cells.tolist()]


@pytest.mark.parametrize(("family", "batch"), CASES, ids=IDS)
def test_every_vision_token_has_a_unique_cell_inside_its_shape(family, batch, recorder):
    model = tiny(family)
    inputs = getattr(FAMILIES[family], batch)(model)
    forward, generated = _grids_forward_and_generate(model, inputs, recorder)
    vision = tokenprune.available_adapters()[FAMILIES[family].adapter](model).vision_mask(inputs["input_ids"])
    for row, grid in enumerate(forward):
        assert grid is not None
        cells = _cell_tuples(grid)
        assert len(cells) == int(vision[row].sum())
        assert len(set(cells)) == len(cells)
        for item, frame, r, c in cells:
            frames, rows, columns = grid.shapes[item]
            # patches inside the shape; non-patch tokens (newline, CLS) in the column just past it
            assert 0 <= frame < frames and 0 <= r < rows and 0 <= c <= columns
        assert sorted({cell[0] for cell in cells}) == list(range(len(grid.shapes)))
        # the generate path (pre-encoded features / M-RoPE positions) agrees
        assert torch.equal(generated[row].cells, grid.cells)
        assert generated[row].shapes == grid.shapes


# --------------------------------------------------------------- Qwen2-VL / 2.5
@pytest.mark.parametrize("family", ["qwen2-vl", "qwen2.5-vl"])
def test_qwen_grid_matches_the_models_own_3d_positions(family):
    """Cells from ``*_grid_thw`` equal the (t, h, w) M-RoPE positions the model computes."""
    model = tiny(family)
    inputs = FAMILIES[family].two(model)
    adapter = Qwen2VLAdapter(model)
    keys = ("image_grid_thw", "video_grid_thw")
    grids = adapter.vision_grids(inputs["input_ids"], {k: inputs[k] for k in keys})
    positions, _ = model.model.get_rope_index(
        inputs["input_ids"],
        mm_token_type_ids=inputs["mm_token_type_ids"],
        image_grid_thw=inputs["image_grid_thw"],
        video_grid_thw=inputs["video_grid_thw"],
        attention_mask=inputs["attention_mask"],
    )
    vision = adapter.vision_mask(inputs["input_ids"])
    for row, grid in enumerate(grids):
        t, h, w = positions[:, row, vision[row]]
        for item in range(len(grid.shapes)):
            mine = grid.cells[:, 0] == item
            frame, r, c = grid.cells[mine, 1:].T
            assert torch.equal(h[mine] - h[mine].min(), r)
            assert torch.equal(w[mine] - w[mine].min(), c)
            # temporal positions grow with the frame (Qwen2.5 spaces them by seconds)
            times, frame_of = torch.unique(t[mine], return_inverse=True)
            assert torch.equal(frame_of, frame)
            height, width = int(h[mine].max() - h[mine].min()) + 1, int(w[mine].max() - w[mine].min()) + 1
            assert grid.shapes[item] == (len(times), height, width)


def test_qwen_grid_is_none_when_positions_are_not_m_rope():
    """``generate`` without ``mm_token_type_ids`` gives 1-D positions: no grid rather than a wrong one."""
    model = tiny("qwen2-vl")
    inputs = FAMILIES["qwen2-vl"].one(model)
    adapter = Qwen2VLAdapter(model)
    flat = torch.arange(inputs["input_ids"].shape[1]).expand(4, 1, -1)
    assert adapter.vision_grids(inputs["input_ids"], {"position_ids": flat}) == [None]


# ----------------------------------------------------------- LLaVA-NeXT family
def _coordinate_features(side, tiles_w, n_tiles):
    """``[tiles, side^2, 3]`` features holding (view, row, column) of the patch each stands for.

    Tile 0 is the base view; tile ``1 + k`` is tile ``k`` of the stitched grid, row-major.
    """
    patch = torch.cartesian_prod(torch.arange(side), torch.arange(side))
    views = [torch.cat([torch.zeros(side * side, 1), patch], dim=1)]
    for tile in range(n_tiles - 1):
        offset = torch.tensor(divmod(tile, tiles_w)) * side
        views.append(torch.cat([torch.ones(side * side, 1), patch + offset], dim=1))
    return torch.stack(views).float()


def _expected_cells(packed: torch.Tensor, side: int) -> torch.Tensor:
    """Cells read off packed coordinate features; newline tokens (all -1) go one past every patch column."""
    cells: list[tuple[int, int, int]] = []
    hires = packed[packed[:, 0] == 1].long()
    top, left = int(hires[:, 1].min()), int(hires[:, 2].min())
    width = max(side, int(hires[:, 2].max()) - left + 1)
    for view, row, column in packed.long().tolist():
        if view == 0:
            cells.append((0, row, column))
        elif view == 1:
            cells.append((1, row - top, column - left))
        else:
            cells.append((1, cells[-1][1], width))
    return torch.tensor(cells, dtype=torch.long)


@pytest.mark.parametrize("family", ["llava-next", "llava-onevision"])
@pytest.mark.parametrize("size", [(32, 32), (12, 32), (32, 20), (20, 12), (10, 32), (16, 16)])
def test_anyres_grid_matches_the_models_own_packing(family, size):
    """``pack_image_features`` on coordinate-valued features gives back exactly the adapter's cells."""
    model = tiny(family)
    adapter = (LlavaOnevisionAdapter if family == "llava-onevision" else LlavaNextAdapter)(model)
    side = adapter.side
    modeling = adapter.modeling_module()
    image_size = torch.tensor(size)
    n_tiles = modeling.image_size_to_num_patches(image_size, PINPOINTS, TILE)
    _, tiles_w = modeling.get_anyres_image_grid_shape(image_size, PINPOINTS, TILE)
    features = _coordinate_features(side, tiles_w, n_tiles)
    newline = torch.full((3,), -1.0)
    kwargs = {} if family == "llava-next" else {"vision_aspect_ratio": "anyres_max_9"}
    if family == "llava-next":
        kwargs["vision_feature_select_strategy"] = "default"
    packed, _ = model.model.pack_image_features([features], image_size[None], image_newline=newline, **kwargs)
    block = adapter.image_block(image_size, True, {})
    assert torch.equal(block.cells, _expected_cells(packed[0], side))
    newline = block.cells[:, 2] == block.shape[2]
    assert torch.equal(newline, (packed[0] == -1).all(dim=-1))


def test_onevision_shrunk_and_untiled_images_have_the_models_token_counts():
    """Grids beyond ``anyres_max_N`` are downsized by the model; untiled images are base + newline."""
    model = tiny("llava-onevision")
    adapter = LlavaOnevisionAdapter(model)
    image_size = torch.tensor((32, 32))
    n_tiles = adapter.modeling_module().image_size_to_num_patches(image_size, PINPOINTS, TILE)
    features = torch.randn(n_tiles, adapter.side**2, 8)
    newline = torch.randn(8)
    packed, _ = model.model.pack_image_features([features], image_size[None], newline, "anyres_max_1")
    block = adapter.image_block(image_size, True, {"vision_aspect_ratio": "anyres_max_1"})
    assert block.size == len(packed[0]) < adapter.image_block(image_size, True, {}).size
    single, _ = model.model.pack_image_features([features[:1]], image_size[None], newline)
    assert adapter.image_block(image_size, False, {}).size == len(single[0]) == adapter.side**2 + 1


def test_onevision_video_grid_matches_the_models_pooled_frames():
    model = tiny("llava-onevision")
    frames = 3
    videos = torch.randn(2, frames, 3, TILE, TILE)
    with torch.no_grad():
        encoded = model.model.get_video_features(
            videos, vision_feature_layer=-1, vision_feature_select_strategy="full"
        )
    per_video = encoded.pooler_output.shape[1]
    block = LlavaOnevisionAdapter(model).video_block(frames)
    assert block.size == per_video
    assert block.shape == (frames, 2, 2)  # 4x4 patches pooled to 2x2 per frame
    assert tuple(block.cells[-1].tolist()) == (frames - 1, 1, 2)  # the newline, past the patch columns


# ----------------------------------------------------------------- Video-LLaVA
def test_video_llava_grid_matches_the_models_feature_layout():
    """Images: patch grids without CLS; video frames: CLS first (extra column), then the patch grid."""
    model = tiny("video-llava")
    adapter = VideoLlavaAdapter(model)
    side = adapter.side
    size = model.config.vision_config.image_size
    with torch.no_grad():
        images = model.model.get_image_features(
            torch.randn(1, 3, size, size), vision_feature_layer=-1, vision_feature_select_strategy="default"
        ).pooler_output
        video = torch.randn(1, 2, 3, size, size)
        videos = model.model.get_video_features(video, vision_feature_layer=-1).pooler_output
    assert images.shape[:2] == (1, side * side)
    assert videos.shape[:2] == (2, side * side + 1)  # frames x (CLS + patches)
    block = adapter.video_block(2)
    per_frame = side * side + 1
    for k, (frame, r, c) in enumerate(block.cells.tolist()):
        j = k % per_frame
        assert frame == k // per_frame
        assert (r, c) == ((0, side) if j == 0 else divmod(j - 1, side))
    patches = torch.cartesian_prod(torch.arange(side), torch.arange(side))
    assert torch.equal(adapter.image_block("default").cells[:, 1:], patches)
