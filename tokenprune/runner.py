"""Loading a model for the command line and turning images + a prompt into inputs.

Model-family knowledge stays in adapters: a checkpoint directory is accepted
when an installed adapter names its architecture, and the request is built
by the checkpoint's own processor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tokenprune.errors import ConfigError, UnsupportedInputError, UnsupportedModelError
from tokenprune.models import ModelSpec
from tokenprune.plugins import available_adapters, available_models, get_model_spec

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LoadedModel:
    """A model ready to run, with its processor when it has one."""

    name: str
    model: nn.Module
    processor: Any | None
    spec: ModelSpec | None


def load_model(name_or_path: str | None, device: str = "cpu", dtype: str = "float32") -> LoadedModel:
    """A registered model name, a local checkpoint directory, or a hub id (needs a network)."""
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}")
    spec = None
    if name_or_path is None or name_or_path in available_models():
        spec = get_model_spec(name_or_path)
        path = spec.path
    else:
        path = Path(name_or_path)
        if not path.exists() and (name_or_path.startswith((".", "/")) or name_or_path.count("/") != 1):
            raise ConfigError(f"model {name_or_path!r} is neither a registered model, a directory, nor a hub id")
    if spec is not None and path is None:
        model, processor = spec.build(), None
    else:
        model, processor = _from_pretrained(path if path.exists() else name_or_path, DTYPES[dtype])  # type: ignore[union-attr]
    try:
        model = model.to(device=device, dtype=DTYPES[dtype])
    except (RuntimeError, AssertionError) as exc:
        raise ConfigError(f"cannot use device {device!r}: {exc}") from None
    return LoadedModel(spec.name if spec else str(name_or_path), model.eval(), processor, spec)


def check_architecture(path: Path) -> None:
    """Refuse a checkpoint whose architecture no installed adapter handles, before loading weights."""
    config = path / "config.json"
    if not config.is_file():
        raise ConfigError(f"{path} has no config.json; is it a Hugging Face checkpoint directory?")
    try:
        architectures = json.loads(config.read_text()).get("architectures") or []
    except json.JSONDecodeError as exc:
        raise ConfigError(f"cannot read {config}: {exc}") from None
    supported = {cls for adapter in available_adapters().values() for cls in adapter.model_classes}
    if not set(architectures) & supported:
        raise UnsupportedModelError(
            f"{path} holds {', '.join(architectures) or 'an unnamed architecture'}, which no installed adapter "
            f"handles; supported: {', '.join(sorted(supported))}"
        )


def _from_pretrained(source: Path | str, dtype: torch.dtype) -> tuple[nn.Module, Any]:
    import transformers

    if isinstance(source, Path):
        check_architecture(source)
        architecture = json.loads((source / "config.json").read_text())["architectures"][0]
    else:
        architecture = transformers.AutoConfig.from_pretrained(source).architectures[0]
    model_class = getattr(transformers, architecture)
    try:
        model = model_class.from_pretrained(source, dtype=dtype)
        processor = transformers.AutoProcessor.from_pretrained(source)
    except OSError as exc:
        raise ConfigError(f"cannot load {source}: {str(exc).splitlines()[0]}") from None
    return model, processor


def open_images(paths: list[str]) -> list[Any]:
    """Open image files as RGB; missing or unreadable files are :class:`UnsupportedInputError`."""
    from PIL import Image, UnidentifiedImageError

    images = []
    for path in paths:
        if not Path(path).is_file():
            raise UnsupportedInputError(f"image file not found: {path}")
        try:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            raise UnsupportedInputError(f"cannot read image {path}: {exc}") from None
    return images


def build_inputs(processor: Any, images: list[Any], prompt: str) -> dict[str, torch.Tensor]:
    """Model inputs for one request: the processor's chat template when it has one, else image tokens first."""
    image_token = getattr(processor, "image_token", "<image>")
    if image_token not in prompt:
        if getattr(processor, "chat_template", None):
            content = [{"type": "image"} for _ in images] + [{"type": "text", "text": prompt}]
            prompt = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        else:
            prompt = " ".join([image_token] * len(images) + [prompt])
    if prompt.count(image_token) != len(images):
        raise UnsupportedInputError(f"the prompt has {prompt.count(image_token)} image tokens for {len(images)} images")
    return dict(processor(images=images or None, text=prompt, return_tensors="pt"))
