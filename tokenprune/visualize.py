"""Layer-by-layer picture of which image patches survive (in the spirit of SparseVLM's figure).

One panel per pruning layer. Kept patches show the image unchanged, dropped
patches are dimmed, and the members of each recycled (merged) token are
outlined in one colour per cluster. A caption below the panels shows the prompt, with the
tokens that drove the choice highlighted. The panel geometry is stored in the
PNG's ``tokenprune`` text chunk (JSON) so tools and tests can read the picture
back.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from tokenprune.adapter import VisionGrid
from tokenprune.plot import PALETTE
from tokenprune.stats import PruneRecord

CELL = 24  # pixels per patch in a panel
GAP = 12
DIM = 0.3  # a dropped patch keeps 30% of its colour, blended into grey
GREY = (128, 128, 128)


def render(
    image: Image.Image,
    grid: VisionGrid,
    records: list[PruneRecord],
    row: int,
    words: list[tuple[str, bool]],
    image_index: int = 0,
) -> tuple[Image.Image, PngInfo]:
    """Panels for ``records`` (one per pruning layer) of request row ``row``, for one image of it.

    Args:
        image: the request's image (any size; resized to the patch grid).
        grid: the row's vision grid from the adapter.
        records: ``stats.records``.
        row: the batch row.
        words: the prompt as ``(word, highlighted)`` pairs.
        image_index: which image of the row to draw.
    """
    in_image = [i for i, cell in enumerate(grid.cells.tolist()) if cell[0] == image_index]
    _, rows, cols = grid.shapes[image_index]
    base = image.convert("RGB").resize((cols * CELL, rows * CELL), Image.BICUBIC)
    dimmed = Image.blend(base, Image.new("RGB", base.size, GREY), 1 - DIM)
    panel_w, panel_h = base.size
    caption_h = 60
    canvas = Image.new("RGB", (len(records) * (panel_w + GAP) + GAP, panel_h + 2 * GAP + 20 + caption_h), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    geometry = {"cell": CELL, "rows": rows, "cols": cols, "panels": [], "image_index": image_index}
    first = in_image[0] if in_image else 0
    for p, record in enumerate(records):
        x0, y0 = GAP + p * (panel_w + GAP), GAP + 20
        kept = {o - first for o in record.kept[row] if o in in_image}
        panel = dimmed.copy()
        for local in kept:
            r, c = divmod(local, cols)
            box = (c * CELL, r * CELL, (c + 1) * CELL, (r + 1) * CELL)
            panel.paste(base.crop(box), box[:2])
        canvas.paste(panel, (x0, y0))
        for k, members in enumerate(record.merged[row]):
            colour = PALETTE[k % len(PALETTE)]
            for ordinal in members:
                if ordinal in in_image:
                    r, c = divmod(ordinal - first, cols)
                    draw.rectangle((x0 + c * CELL, y0 + r * CELL, x0 + (c + 1) * CELL - 1, y0 + (r + 1) * CELL - 1), outline=colour)
        draw.text((x0, GAP), f"layer {record.layer}: {len(kept)} kept, {len(record.merged[row])} merged", fill="black", font=font)
        geometry["panels"].append({"layer": record.layer, "x": x0, "y": y0})
    _caption(draw, font, words, GAP, y0 + panel_h + GAP)
    info = PngInfo()
    info.add_text("tokenprune", json.dumps(geometry))
    return canvas, info


def _caption(draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont, words: list[tuple[str, bool]], x: int, y: int) -> None:
    cursor = x
    for word, highlighted in words:
        width = draw.textlength(word + " ", font=font)
        if highlighted:
            draw.rectangle((cursor - 1, y - 1, cursor + width - 3, y + 11), fill=(255, 220, 120))
        draw.text((cursor, y), word, fill=(180, 0, 0) if highlighted else "black", font=font)
        cursor += width


def save(canvas: Image.Image, info: PngInfo, path: str | Path) -> None:
    """Write the PNG with its geometry chunk."""
    canvas.save(path, pnginfo=info)
