"""Registers the shipped shapes model (the default model) and its held-out evaluation set."""

from __future__ import annotations

from functools import cache
from typing import Any

import torch

import tokenprune
from tokenprune.adapters.shapes import model as shapes_model
from tokenprune.adapters.shapes import task


#: the shipped sample request of ``tokenprune run``: the first held-out colour question
SAMPLE_INDEX = 3
SAMPLE_IMAGE = shapes_model.CHECKPOINT.parent / "sample.png"
SAMPLE_PROMPT = task.held_out(SAMPLE_INDEX + 1)[SAMPLE_INDEX][1].text


@cache
def _tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(shapes_model.CHECKPOINT)


def build() -> Any:
    """The shipped trained model, loaded with ``from_pretrained`` from package data."""
    model, _ = shapes_model.load()
    return model


def sample_inputs(model: Any, batch_size: int = 1) -> dict[str, torch.Tensor]:
    """The first ``batch_size`` held-out questions, left-padded."""
    return shapes_model.encode_requests(_tokenizer(), task.held_out(batch_size), model.config.image_token_id)


def evaluate(model: Any, examples: list[tuple[task.Sample, task.Question]]) -> list[bool]:
    """Greedy one-word answers for a batch, compared with the truth."""
    tokenizer = _tokenizer()
    inputs = shapes_model.encode_requests(tokenizer, examples, model.config.image_token_id)
    predicted = tokenizer.convert_ids_to_tokens(shapes_model.answer_ids(model, inputs).tolist())
    return [word == question.answer for word, (_, question) in zip(predicted, examples)]


@tokenprune.hookimpl
def tokenprune_models() -> list[tokenprune.ModelSpec]:
    """The shipped model, the CLI's default."""
    return [
        tokenprune.ModelSpec(
            name="shapes-llava",
            description="small stock LLaVA trained on the synthetic shapes task (144 vision tokens, 6-layer decoder)",
            build=build,
            sample_inputs=sample_inputs,
            default=True,
            path=shapes_model.CHECKPOINT,
            sample_images=(SAMPLE_IMAGE,),
            sample_prompt=SAMPLE_PROMPT,
        )
    ]


@tokenprune.hookimpl
def tokenprune_datasets() -> list[tokenprune.DatasetSpec]:
    """The fixed held-out split of the shapes task."""
    return [
        tokenprune.DatasetSpec(
            name="shapes-heldout",
            model="shapes-llava",
            description="held-out shapes questions (colour, shape, exists, count); one-word answers",
            vision_tokens=shapes_model.VISION_TOKENS,
            load=task.held_out,
            evaluate=evaluate,
            kind=lambda example: example[1].kind,
        )
    ]
