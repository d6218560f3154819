"""The shipped small LLaVA: config, word-level tokenizer, processor, and input encoding.

Everything is the stock transformers stack: ``LlavaForConditionalGeneration``,
a ``PreTrainedTokenizerFast`` over a ``tokenizers`` WordLevel model, a
``LlavaProcessor``, all saved with ``save_pretrained`` and loaded with the
ordinary ``from_pretrained`` on a local path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from tokenprune.adapters.shapes import task

CHECKPOINT = Path(__file__).parent / "checkpoint"
IMAGE_TOKEN = "<image>"
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", IMAGE_TOKEN]
MEAN = STD = (0.5, 0.5, 0.5)
VISION_TOKENS = (task.IMAGE_SIZE // task.PATCH) ** 2  # 144

# the fast tokenizer's worker threads fight PyTorch for the two cores
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_tokenizer() -> Any:
    """Word-level tokenizer over the task's vocabulary; adds ``<s>`` in front."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(SPECIALS + task.vocabulary())}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        padding_side="left", extra_special_tokens={"image_token": IMAGE_TOKEN},
    )


def build_processor(tokenizer: Any | None = None) -> Any:
    """A stock ``LlavaProcessor``: 168 px images, 14 px patches, 144 image tokens."""
    from transformers import LlavaProcessor
    from transformers.models.clip import CLIPImageProcessorPil

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": task.IMAGE_SIZE}, crop_size={"height": task.IMAGE_SIZE, "width": task.IMAGE_SIZE},
        image_mean=list(MEAN), image_std=list(STD), do_convert_rgb=True,
    )
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer or build_tokenizer(), patch_size=task.PATCH,
        vision_feature_select_strategy="default", image_token=IMAGE_TOKEN, num_additional_image_tokens=1,
    )


def build_model(tokenizer: Any, decoder_layers: int = 6, seed: int = 0) -> Any:
    """A fresh, randomly initialised small LLaVA for training (~1.5 M parameters)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(
        hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
        image_size=task.IMAGE_SIZE, patch_size=task.PATCH, projection_dim=128,
    )
    text = LlamaConfig(
        hidden_size=128, intermediate_size=512, num_hidden_layers=decoder_layers, num_attention_heads=4,
        num_key_value_heads=4, vocab_size=len(tokenizer), max_position_embeddings=512,
        initializer_range=0.08,  # escapes the answer-prior plateau ~4x faster than 0.02
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_layer=-1,  # the default -2 would leave the last vision layer unused
        vision_feature_select_strategy="default", projector_hidden_act="gelu",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def load(path: str | Path = CHECKPOINT, attn: str = "sdpa") -> tuple[Any, Any]:
    """The trained model (eval mode) and its processor, from a local directory."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    path = Path(path)
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"no trained checkpoint at {path}; train one with python -m tokenprune.adapters.shapes.train")
    model = LlavaForConditionalGeneration.from_pretrained(path, attn_implementation=attn).eval()
    return model, AutoProcessor.from_pretrained(path)


def pixels(image: Image.Image) -> torch.Tensor:
    """``[3, H, W]`` normalised pixels, identical to the processor's (a test checks)."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy((array - 0.5) / 0.5).permute(2, 0, 1).contiguous()


def prompt(question: task.Question) -> str:
    """The text of a single-question request (the processor expands ``<image>``)."""
    return f"{IMAGE_TOKEN} {question.text}"


def encode_requests(tokenizer: Any, pairs: list[tuple[task.Sample, task.Question]], image_token_id: int) -> dict[str, torch.Tensor]:
    """Left-padded single-question requests, the fast path equivalent of the processor."""
    rows = [
        [tokenizer.bos_token_id] + [image_token_id] * VISION_TOKENS + tokenizer.convert_tokens_to_ids(q.text.split())
        for _, q in pairs
    ]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": torch.stack([pixels(s.image) for s, _ in pairs])}


@torch.no_grad()
def answer_ids(model: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Greedy one-word answers: the arg-max token after the prompt, ``[B]``."""
    return model(**inputs, logits_to_keep=1).logits[:, -1].argmax(-1)
