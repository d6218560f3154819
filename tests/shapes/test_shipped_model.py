"""The shipped model, loaded fresh from the package, reaches its held-out accuracy."""

from __future__ import annotations

import json

import torch

import tokenprune
from tokenprune.adapters.shapes import model as shapes_model
from tokenprune.adapters.shapes import task


def test_shipped_model_holds_its_held_out_accuracy_on_200_questions():
    """The acceptance bound: >= 95% on the first 200 held-out questions (98.3% on 1000)."""
    torch.set_num_threads(2)
    spec = tokenprune.get_model_spec()  # the default model is the shipped one
    assert spec.name == "shapes-llava" and spec.path == shapes_model.CHECKPOINT
    model = spec.build()
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert model.config._name_or_path == str(shapes_model.CHECKPOINT)
    dataset = tokenprune.get_dataset(model="shapes-llava")
    examples = dataset.load(200)
    flags = [flag for start in range(0, 200, 100) for flag in dataset.evaluate(model, examples[start : start + 100])]
    accuracy = sum(flags) / len(flags)
    assert accuracy >= 0.95, accuracy


def test_checkpoint_is_small_stock_safetensors_with_its_processor():
    files = {p.name: p.stat().st_size for p in shapes_model.CHECKPOINT.iterdir()}
    assert files["model.safetensors"] <= 20 * 1024 * 1024
    assert {"config.json", "tokenizer.json", "processor_config.json"} <= set(files)
    config = json.loads((shapes_model.CHECKPOINT / "config.json").read_text())
    assert config["architectures"] == ["LlavaForConditionalGeneration"]
    assert config["text_config"]["num_hidden_layers"] >= 4
    _, processor = shapes_model.load()
    sample, question = task.held_out(1)[0]
    ids = processor(images=sample.image, text=shapes_model.prompt(question), return_tensors="pt")["input_ids"]
    assert int((ids == config["image_token_index"]).sum()) == 144
