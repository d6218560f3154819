"""JSONL evaluation sets for ``tokenprune bench``: one ``{"image", "question", "answer"}`` per line.

Optional keys: ``"images"`` (a list instead of one ``"image"``) and ``"kind"``
(question type, for per-type accuracy). Image paths are relative to the file.
An answer counts as correct when the model's generated text, lower-cased and
stripped of punctuation, starts with the expected answer.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tokenprune.errors import ConfigError
from tokenprune.models import DatasetSpec
from tokenprune.runner import build_inputs, open_images


def load_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Parse and check the file; image paths become absolute."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"dataset file not found: {file}")
    examples = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{file}:{number}: not JSON ({exc.msg})") from None
        images = item.get("images") or ([item["image"]] if "image" in item else [])
        if not images or "question" not in item or "answer" not in item:
            raise ConfigError(f"{file}:{number}: needs \"image\" (or \"images\"), \"question\" and \"answer\"")
        item["images"] = [str((file.parent / p).resolve()) for p in images]
        item.setdefault("kind", "all")
        examples.append(item)
    if not examples:
        raise ConfigError(f"{file} holds no examples")
    return examples


def _normalise(text: str) -> str:
    return text.lower().translate(str.maketrans("", "", string.punctuation)).strip()


def jsonl_dataset(path: str | Path, processor: Any, vision_tokens: int, max_new_tokens: int = 10) -> DatasetSpec:
    """A :class:`DatasetSpec` over a JSONL file, evaluated one example at a time with ``processor``."""
    examples = load_jsonl(path)
    tokenizer = processor.tokenizer

    def evaluate(model: nn.Module, batch: list[dict[str, Any]]) -> list[bool]:
        flags = []
        for item in batch:
            inputs = build_inputs(processor, open_images(item["images"]), item["question"])
            inputs = {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            text = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            flags.append(_normalise(text).startswith(_normalise(str(item["answer"]))))
        return flags

    return DatasetSpec(
        name=Path(path).name,
        model="",
        description=f"JSONL file {path}",
        vision_tokens=vision_tokens,
        load=lambda n: examples[:n],
        evaluate=evaluate,
        kind=lambda item: str(item["kind"]),
    )
