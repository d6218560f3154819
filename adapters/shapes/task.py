"""Deterministic synthetic VQA: shapes and colours on a cluttered background.

A scene is a 6x6 grid of 28-pixel cells (one cell = 2x2 vision patches of 14
px, 168 px images, 12x12 = 144 patches). It holds 3-6 objects (one shape in
one colour per cell) on a light noisy background with faint clutter strokes.
Every question's answer depends on ONE object or region and is one word.

Splits are fixed by seed streams: training draws from ``TRAIN_SEED_BASE``
onwards, the held-out split from ``HELD_OUT_SEED_BASE`` onwards, and the two
never overlap (a test checks it).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 168
GRID = 6
CELL = IMAGE_SIZE // GRID  # 28 px = 2x2 patches of 14 px
PATCH = 14
SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 30),
    "purple": (150, 60, 190),
    "orange": (240, 130, 30),
}
COUNT_WORDS = ("zero", "one", "two", "three", "four")
QUESTION_TYPES = ("colour", "shape", "exists", "count")
TRAIN_SEED_BASE = 0
HELD_OUT_SEED_BASE = 1_000_000_007


@dataclass(frozen=True)
class SceneObject:
    """One object: shape, colour name and grid cell."""

    shape: str
    colour: str
    row: int
    col: int


@dataclass(frozen=True)
class Question:
    """A question about a scene, its one-word answer, its type, and the cells it depends on."""

    text: str
    answer: str
    kind: str
    cells: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Sample:
    """A rendered scene with its questions."""

    seed: int
    objects: tuple[SceneObject, ...]
    image: Image.Image
    questions: tuple[Question, ...]


def make_objects(rng: random.Random) -> tuple[SceneObject, ...]:
    """3-6 objects in distinct cells."""
    count = rng.randint(3, 6)
    cells = rng.sample([(r, c) for r in range(GRID) for c in range(GRID)], count)
    return tuple(SceneObject(rng.choice(SHAPES), rng.choice(list(COLOURS)), r, c) for r, c in cells)


def render(objects: tuple[SceneObject, ...], rng: random.Random) -> Image.Image:
    """Draw the scene: noisy light background, faint clutter strokes, then the objects."""
    noise = np.random.default_rng(rng.getrandbits(32))
    base = noise.integers(200, 246, size=(IMAGE_SIZE, IMAGE_SIZE, 1)).repeat(3, axis=2)
    tint = noise.integers(-12, 12, size=(IMAGE_SIZE, IMAGE_SIZE, 3))
    image = Image.fromarray(np.clip(base + tint, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(4, 9)):  # clutter: thin light strokes anywhere
        x0, y0 = rng.randrange(IMAGE_SIZE), rng.randrange(IMAGE_SIZE)
        x1, y1 = x0 + rng.randint(-30, 30), y0 + rng.randint(-30, 30)
        shade = tuple(rng.randint(150, 200) for _ in range(3))
        draw.line((x0, y0, x1, y1), fill=shade, width=1)
    for obj in objects:
        _draw_object(draw, obj, rng)
    return image


def _draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject, rng: random.Random) -> None:
    margin = rng.randint(3, 6)
    x0, y0 = obj.col * CELL + margin, obj.row * CELL + margin
    x1, y1 = (obj.col + 1) * CELL - margin, (obj.row + 1) * CELL - margin
    colour = COLOURS[obj.colour]
    if obj.shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=colour)
    elif obj.shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=colour)
    else:
        draw.polygon(((x0 + x1) // 2, y0, x1, y1, x0, y1), fill=colour)


def ask(objects: tuple[SceneObject, ...], kind: str, rng: random.Random) -> Question | None:
    """A question of ``kind`` about ``objects``, or None if the scene does not allow one."""
    by_shape = {s: [o for o in objects if o.shape == s] for s in SHAPES}
    by_colour = {c: [o for o in objects if o.colour == c] for c in COLOURS}
    if kind == "colour":
        unique = [s for s in SHAPES if len(by_shape[s]) == 1]
        if not unique:
            return None
        shape = rng.choice(unique)
        obj = by_shape[shape][0]
        return Question(f"what colour is the {shape} ?", obj.colour, kind, ((obj.row, obj.col),))
    if kind == "shape":
        unique = [c for c in COLOURS if len(by_colour[c]) == 1]
        if not unique:
            return None
        colour = rng.choice(unique)
        obj = by_colour[colour][0]
        return Question(f"what shape is the {colour} one ?", obj.shape, kind, ((obj.row, obj.col),))
    if kind == "exists":
        if rng.random() < 0.5:
            obj = rng.choice(objects)
            return Question(f"is there a {obj.colour} {obj.shape} ?", "yes", kind, ((obj.row, obj.col),))
        present = {(o.colour, o.shape) for o in objects}
        # hard negative: the colour or the shape is present, not the pair
        candidates = [
            (c, s) for c in COLOURS for s in SHAPES
            if (c, s) not in present and (by_colour[c] or by_shape[s])
        ]
        colour, shape = rng.choice(candidates)
        related = tuple((o.row, o.col) for o in objects if o.colour == colour or o.shape == shape)
        return Question(f"is there a {colour} {shape} ?", "no", kind, related)
    if kind == "count":
        shape = rng.choice(SHAPES)
        matches = by_shape[shape]
        if len(matches) >= len(COUNT_WORDS):
            return None
        cells = tuple((o.row, o.col) for o in matches)
        return Question(f"how many {shape} are there ?", COUNT_WORDS[len(matches)], kind, cells)
    raise ValueError(f"unknown question type {kind!r}")


def sample(seed: int, n_questions: int = 4) -> Sample:
    """The scene of ``seed`` with ``n_questions`` questions of varied types."""
    rng = random.Random(seed)
    objects = make_objects(rng)
    image = render(objects, rng)
    questions: list[Question] = []
    kinds = list(QUESTION_TYPES)
    while len(questions) < n_questions:
        rng.shuffle(kinds)
        for kind in kinds:
            question = ask(objects, kind, rng)
            if question is not None and len(questions) < n_questions:
                questions.append(question)
    return Sample(seed, objects, image, tuple(questions))


def held_out(n: int) -> list[tuple[Sample, Question]]:
    """The fixed held-out split: ``n`` (scene, question) pairs, one question per scene."""
    return [(s, s.questions[0]) for s in (sample(HELD_OUT_SEED_BASE + i, 1) for i in range(n))]


def patch_labels(objects: tuple[SceneObject, ...]) -> tuple[list[int], list[int]]:
    """Per vision patch (row-major 12x12): colour class and shape class (0 = background).

    Used only by the training-time auxiliary head.
    """
    side = IMAGE_SIZE // PATCH
    colours, shapes = [0] * side * side, [0] * side * side
    colour_ids = {c: i + 1 for i, c in enumerate(COLOURS)}
    shape_ids = {s: i + 1 for i, s in enumerate(SHAPES)}
    for obj in objects:
        for dr in range(2):
            for dc in range(2):
                index = (obj.row * 2 + dr) * side + obj.col * 2 + dc
                colours[index], shapes[index] = colour_ids[obj.colour], shape_ids[obj.shape]
    return colours, shapes


def vocabulary() -> list[str]:
    """Every word the task uses (questions and answers)."""
    words = {"what", "colour", "is", "the", "shape", "one", "?", "there", "a", "how", "many", "are"}
    words |= set(SHAPES) | set(COLOURS) | set(COUNT_WORDS) | {"yes", "no"}
    return sorted(words)
