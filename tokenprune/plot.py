"""A small PNG line chart drawn with Pillow (no plotting dependency needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

PALETTE = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (140, 86, 75), (23, 190, 207), (127, 127, 127)]


def line_chart(
    series: dict[str, Sequence[tuple[float, float]]],
    path: str | Path,
    title: str,
    x_label: str,
    y_label: str,
    size: tuple[int, int] = (900, 560),
    y_range: tuple[float, float] | None = None,
) -> None:
    """Draw one polyline with markers per series, axes with ticks, and a legend; save as PNG."""
    width, height = size
    left, right, top, bottom = 80, 220, 50, 60
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    points = [p for line in series.values() for p in line]
    xs = [p[0] for p in points] or [0.0, 1.0]
    x_lo, x_hi = min(xs), max(xs)
    y_lo, y_hi = y_range if y_range else (min(p[1] for p in points), max(p[1] for p in points))
    if x_hi == x_lo:
        x_hi = x_lo + 1
    if y_hi == y_lo:
        y_hi = y_lo + 1

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        px = left + (x - x_lo) / (x_hi - x_lo) * (width - left - right)
        py = height - bottom - (y - y_lo) / (y_hi - y_lo) * (height - top - bottom)
        return px, py

    draw.rectangle((left, top, width - right, height - bottom), outline="black")
    for i in range(6):
        y = y_lo + (y_hi - y_lo) * i / 5
        _, py = to_pixel(x_lo, y)
        draw.line((left - 4, py, width - right, py), fill=(225, 225, 225))
        draw.text((left - 8, py), f"{y:.2f}", fill="black", font=font, anchor="rm")
    last_label = float("-inf")
    for x in sorted(set(xs)):
        px, _ = to_pixel(x, y_lo)
        draw.line((px, height - bottom, px, height - bottom + 4), fill="black")
        if px - last_label >= 36:  # nearby values (e.g. achieved budgets) would print over each other
            draw.text((px, height - bottom + 8), f"{x:g}", fill="black", font=font, anchor="mt")
            last_label = px
    draw.text((width / 2 - right / 2, 18), title, fill="black", font=font, anchor="mm")
    draw.text(((left + width - right) / 2, height - 22), x_label, fill="black", font=font, anchor="mm")
    draw.text((12, top - 20), y_label, fill="black", font=font)
    for index, (name, line) in enumerate(series.items()):
        colour = PALETTE[index % len(PALETTE)]
        pixels = [to_pixel(x, y) for x, y in sorted(line)]
        if len(pixels) > 1:
            draw.line(pixels, fill=colour, width=2)
        for px, py in pixels:
            draw.ellipse((px - 4, py - 4, px + 4, py + 4), fill=colour)
        legend_y = top + 10 + 20 * index
        draw.line((width - right + 15, legend_y, width - right + 40, legend_y), fill=colour, width=3)
        draw.text((width - right + 48, legend_y), name, fill="black", font=font, anchor="lm")
    image.save(path)
