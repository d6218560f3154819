"""Pure token-layout functions of the original LLaVA codebase and Mini-Gemini.

These models never show the decoder a token id for an image: the prompt holds
one placeholder id per image, and ``prepare_inputs_labels_for_multimodal``
replaces it by the image's whole block of features (dropping padding, then
re-padding the spliced rows). :func:`spliced_token_ids` rebuilds, from what
that method received and returned, the token ids the decoder's sequence would
have had, with the placeholder id at every vision position.

:func:`view_layout` says which view and cell of an image each token of its
block is: Mini-Gemini-HD encodes an image as a global view first, then the
crops of an ``image_grid x image_grid`` split in row-major order, each view a
``side x side`` patch grid in row-major order.
"""

from __future__ import annotations

import torch

import tokenprune


def spliced_token_ids(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    output_mask: torch.Tensor | None,
    output_length: int,
    image_token: int,
) -> tuple[torch.Tensor, list[list[int]]]:
    """Token ids aligned with the spliced sequence, and each row's image block lengths.

    Args:
        input_ids: ``[B, N]`` prompt ids holding ``image_token`` once per image.
        attention_mask: ``[B, N]`` the prompt's mask (None: every position valid).
        output_mask: ``[B, M]`` the mask returned with the spliced embeddings
            (None: every position valid).
        output_length: ``M``, the spliced sequence length.
        image_token: the placeholder id.

    Returns:
        ``(ids [B, M], blocks)``: ``ids`` holds the text ids at their spliced
        positions, ``image_token`` at every vision position and 0 at padding;
        ``blocks[b]`` lists the token count of each image of row ``b``.

    Raises:
        UnsupportedInputError: the row lengths cannot be explained by equal
            blocks per image (images of different token counts in one row, or
            a sequence cut by ``tokenizer_model_max_length``).
    """
    batch = input_ids.shape[0]
    valid_in = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    if output_mask is None:
        valid_out = torch.ones(batch, output_length, dtype=torch.bool, device=input_ids.device)
    else:
        valid_out = output_mask.bool()
    out = torch.zeros(batch, output_length, dtype=input_ids.dtype, device=input_ids.device)
    blocks: list[list[int]] = []
    for row in range(batch):
        ids = input_ids[row][valid_in[row]]
        is_image = ids == image_token
        images = int(is_image.sum())
        slots = valid_out[row].nonzero().squeeze(1)
        vision = len(slots) - (len(ids) - images)
        if (images == 0 and vision != 0) or (images > 0 and (vision <= 0 or vision % images)):
            raise tokenprune.UnsupportedInputError(
                f"row {row}: {len(slots)} spliced positions cannot hold {len(ids) - images} text tokens and "
                f"{images} equal image blocks (images with different token counts in one row, or a "
                "sequence truncated by tokenizer_model_max_length, are not supported)"
            )
        per_image = vision // images if images else 0
        counts = torch.where(is_image, per_image, 1)
        out[row, slots] = ids.repeat_interleave(counts)
        blocks.append([per_image] * images)
    return out, blocks


def view_count(image_grid: int, image_global: bool) -> int:
    """Views per image: the ``image_grid**2`` crops, plus the global view if any (1 for plain LLaVA)."""
    if image_grid < 1:
        raise ValueError(f"image_grid must be >= 1, got {image_grid}")
    if image_grid == 1:
        return 1
    return image_grid * image_grid + int(image_global)


def view_layout(side: int, image_grid: int = 1, image_global: bool = False) -> torch.Tensor:
    """``[views * side * side, 3]``: (view, row, column) of each token of one image's block.

    View 0 is the global view when ``image_global`` (and ``image_grid > 1``);
    the crops follow in row-major order of the grid; inside a view, tokens are
    row-major over its ``side x side`` patches.
    """
    if side < 1:
        raise ValueError(f"side must be >= 1, got {side}")
    views = view_count(image_grid, image_global)
    index = torch.arange(views * side * side)
    per_view = side * side
    return torch.stack([index // per_view, (index % per_view) // side, index % side], dim=1)


def crop_cell(view: int, image_grid: int, image_global: bool) -> tuple[int, int] | None:
    """The (grid row, grid column) of a crop view; None for the global view (or a single view)."""
    views = view_count(image_grid, image_global)
    if not 0 <= view < views:
        raise ValueError(f"view {view} out of range for {views} views")
    if image_grid == 1:
        return None
    crop = view - int(image_global)
    if crop < 0:
        return None
    return divmod(crop, image_grid)
