"""Grid bookkeeping shared by the built-in adapters (importable as ``tokenprune.adapters.grids``).

An adapter describes each image or video of a batch as a :class:`Block`: the
grid cell ``(frame, row, column)`` of each of its tokens, in the order the
model writes them into the sequence. :func:`assign_blocks` then walks every
row's vision tokens (found by token id, never by offset) and hands each row
the blocks it holds, in batch order, which is the order in which transformers
scatters vision features into the placeholder tokens.

Conventions (see ``docs/adapters.md``):

* ``frame`` is the temporal index for videos, 0 for still images, and the
  view (0 = base view, 1 = any-resolution view) for LLaVA-NeXT/OneVision
  images;
* a block's ``shape`` ``(frames, rows, columns)`` bounds its PATCH cells;
* tokens that are not patches (an ``image_newline``, a frame's CLS token) sit
  in their row at column ``columns``, one past every patch column, so
  ``cells[:, 2] == shape[2]`` tells them apart without knowing the family.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

import tokenprune

#: placeholder column of a non-patch token until :func:`block` knows the patch width
EXTRA = -1

#: what :meth:`tokenprune.Adapter.vision_grids` returns: one grid (or None) per row
Grids = list[tokenprune.VisionGrid | None]


@dataclass(frozen=True)
class Block:
    """The tokens of ONE image or video: ``cells [n, 3]`` = (frame, row, column) in sequence order."""

    cells: torch.Tensor
    shape: tuple[int, int, int]

    @property
    def size(self) -> int:
        """Tokens in the block."""
        return int(self.cells.shape[0])


def patch_cells(rows: int, columns: int, frame: int = 0) -> torch.Tensor:
    """``[rows * columns, 3]`` cells of a row-major patch grid in one frame."""
    row = torch.arange(rows).repeat_interleave(columns)
    column = torch.arange(columns).repeat(rows)
    return torch.stack([torch.full_like(row, frame), row, column], dim=1)


def patch_cells_with_row_ends(rows: int, columns: int, frame: int = 0) -> torch.Tensor:
    """Cells of a row-major grid where each row ends with one non-patch token (an ``image_newline``)."""
    cells = patch_cells(rows, columns + 1, frame)
    cells[cells[:, 2] == columns, 2] = EXTRA
    return cells


def extra_cell(frame: int, row: int) -> torch.Tensor:
    """``[1, 3]`` the cell of one non-patch token in ``row`` of ``frame``."""
    return torch.tensor([[frame, row, EXTRA]])


def bounding_shape(cells: torch.Tensor) -> tuple[int, int, int]:
    """Smallest ``(frames, rows, columns)`` holding every cell of ``cells [n, 3]``."""
    top = cells.max(dim=0).values + 1
    return int(top[0]), int(top[1]), int(top[2])


def block(*parts: torch.Tensor) -> Block:
    """A :class:`Block` from cell tensors given in sequence order.

    Its shape bounds the patch cells; non-patch cells (from :func:`extra_cell`
    or :func:`patch_cells_with_row_ends`) then get the column just past them.
    """
    cells = torch.cat(parts, dim=0).long()
    extra = cells[:, 2] == EXTRA
    shape = bounding_shape(cells[~extra])
    cells[extra, 2] = shape[2]
    return Block(cells=cells, shape=shape)


def video_block(frames: int, rows: int, columns: int) -> Block:
    """Row-major patch grids frame after frame (Qwen-style videos; still images have ``frames=1``)."""
    return block(*(patch_cells(rows, columns, frame) for frame in range(frames)))


def assign_blocks(input_ids: torch.Tensor, blocks: Mapping[int, Iterable[Block | None]]) -> Grids:
    """Per row, the :class:`tokenprune.VisionGrid` of its vision tokens.

    Args:
        input_ids: ``[B, N]`` token ids.
        blocks: for each vision token id, the blocks of that modality for the
            whole batch, in batch order (row 0's first, each row's in sequence
            order). A None block means the adapter could not work it out.

    Returns:
        One grid per row (None for rows without vision tokens). If the blocks
        do not tile the vision tokens exactly (e.g. the adapter lacked the
        inputs it needs), every row gets None: a grid is an aid for policies
        and visualisation, and a wrong one would be worse than none.
    """
    queues = {int(token): deque(items) for token, items in blocks.items()}
    if any(item is None for queue in queues.values() for item in queue):
        return [None] * input_ids.shape[0]
    token_ids = torch.tensor(sorted(queues), device=input_ids.device)
    grids: Grids = []
    for ids in input_ids:
        vision = ids[torch.isin(ids, token_ids)].tolist()
        row_blocks = _take_blocks(vision, queues)  # type: ignore[arg-type]
        if row_blocks is None:
            return [None] * input_ids.shape[0]
        grids.append(grid_of(row_blocks))
    if any(queues.values()):
        return [None] * input_ids.shape[0]
    return grids


def grid_of(blocks: list[Block]) -> tokenprune.VisionGrid | None:
    """The grid of one row holding ``blocks`` in sequence order (None for no blocks)."""
    if not blocks:
        return None
    cells = [
        torch.cat([torch.full((item.size, 1), index, dtype=torch.long), item.cells], dim=1)
        for index, item in enumerate(blocks)
    ]
    return tokenprune.VisionGrid(cells=torch.cat(cells), shapes=tuple(item.shape for item in blocks))


def _take_blocks(vision: list[int], queues: dict[int, deque[Block]]) -> list[Block] | None:
    """Pop the blocks covering one row's vision token ids, in order; None if they do not fit."""
    taken: list[Block] = []
    start = 0
    while start < len(vision):
        token = vision[start]
        queue = queues.get(token)
        if not queue:
            return None
        item = queue.popleft()
        stop = start + item.size
        if stop > len(vision) or any(t != token for t in vision[start:stop]):
            return None
        taken.append(item)
        start = stop
    return taken


def runs(ids: torch.Tensor, token_ids: Iterable[int]) -> list[tuple[int, int, int]]:
    """Maximal runs of equal vision token ids in one row: ``(token, start, stop)`` in sequence order."""
    vision = torch.isin(ids, torch.tensor(list(token_ids), device=ids.device))
    found: list[tuple[int, int, int]] = []
    for position in torch.nonzero(vision, as_tuple=False).flatten().tolist():
        token = int(ids[position])
        if found and found[-1][0] == token and found[-1][2] == position:
            found[-1] = (token, found[-1][1], position + 1)
        else:
            found.append((token, position, position + 1))
    return found
