"""Train the shipped small LLaVA on the shapes task (CPU, reproducible from the seed).

    python -m tokenprune.adapters.shapes.train --out adapters/shapes/checkpoint

Not run in CI. The recipe (see docs/fixture-model.md) follows the feasibility
notes that made this task train on 2 CPU cores: decoder init range 0.08, 4
question-answer turns per image, fixed-length batches, loss only on answers and
``</s>``, AdamW with warm-up and cosine decay, and a training-only auxiliary head
that predicts each patch's colour and shape from the projector outputs. That head
is discarded: the saved checkpoint is a pure stock LLaVA.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tokenprune.adapters.shapes import model as shapes_model
from tokenprune.adapters.shapes import task

TURN_TOKENS = 9  # the longest question (7 words) + answer + ``</s>``
BASE_TURNS = 4


def sequence_length(extra_exists: int) -> int:
    """Fixed training length: ``<s>`` + 144 image tokens + every turn at its longest."""
    return 1 + shapes_model.VISION_TOKENS + (BASE_TURNS + extra_exists) * TURN_TOKENS


def training_questions(sample: task.Sample, extra_exists: int) -> list[task.Question]:
    """The scene's 4 questions plus ``extra_exists`` more existence questions.

    Existence questions with hard negatives ("is there a red circle?" when a red
    square and a blue circle are present) need colour-shape binding and are the
    last type to be learned, so training sees more of them. The held-out split
    is untouched: it is always ``task.held_out``.
    """
    rng = random.Random(sample.seed * 7 + 3)
    extra = [task.ask(sample.objects, "exists", rng) for _ in range(extra_exists)]
    return [*sample.questions, *(q for q in extra if q is not None)]


def training_batch(tokenizer: Any, seeds: list[int], image_token_id: int, extra_exists: int = 1) -> dict[str, torch.Tensor]:
    """Fixed-length sequences, one image each with several question/answer turns; labels on answers and ``</s>``."""
    ids = torch.full((len(seeds), sequence_length(extra_exists)), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full_like(ids, -100)
    mask = torch.zeros_like(ids)
    pixel_values, colour_labels, shape_labels = [], [], []
    for row, seed in enumerate(seeds):
        sample = task.sample(task.TRAIN_SEED_BASE + seed)
        tokens = [tokenizer.bos_token_id] + [image_token_id] * shapes_model.VISION_TOKENS
        targets = [-100] * len(tokens)
        for question in training_questions(sample, extra_exists):
            words = tokenizer.convert_tokens_to_ids(question.text.split())
            answer = [tokenizer.convert_tokens_to_ids(question.answer), tokenizer.eos_token_id]
            tokens += words + answer
            targets += [-100] * len(words) + answer
        ids[row, : len(tokens)] = torch.tensor(tokens)
        labels[row, : len(targets)] = torch.tensor(targets)
        mask[row, : len(tokens)] = 1
        pixel_values.append(shapes_model.pixels(sample.image))
        colours, shapes = task.patch_labels(sample.objects)
        colour_labels.append(colours)
        shape_labels.append(shapes)
    return {
        "input_ids": ids, "attention_mask": mask, "labels": labels, "pixel_values": torch.stack(pixel_values),
        "colour_labels": torch.tensor(colour_labels), "shape_labels": torch.tensor(shape_labels),
    }


class AuxiliaryHead(nn.Module):
    """Training-only: predict each patch's colour, shape and (colour, shape) pair from the projector outputs.

    The pair target asks for features in which each combination is linearly
    separable, which is what an existence query needs to match in one dot product.
    """

    def __init__(self, hidden: int, pair: bool = True) -> None:
        super().__init__()
        self.colour = nn.Linear(hidden, len(task.COLOURS) + 1)
        self.shape = nn.Linear(hidden, len(task.SHAPES) + 1)
        self.pair = nn.Linear(hidden, len(task.COLOURS) * len(task.SHAPES) + 1) if pair else None

    def loss(self, features: torch.Tensor, colours: torch.Tensor, shapes: torch.Tensor) -> torch.Tensor:
        """Sum of the mean cross-entropies over all patches."""
        ce = nn.functional.cross_entropy
        total = ce(self.colour(features).flatten(0, 1), colours.flatten()) + ce(self.shape(features).flatten(0, 1), shapes.flatten())
        if self.pair is not None:
            # background is 0 in both; an object's pair class is 1 + colour * n_shapes + shape (both 0-based)
            pairs = torch.where(colours > 0, 1 + (colours - 1) * len(task.SHAPES) + (shapes - 1), 0)
            total = total + ce(self.pair(features).flatten(0, 1), pairs.flatten())
        return total


def _param_groups(modules: list[nn.Module], weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for module in modules:
        for parameter in module.parameters():
            (decay if parameter.dim() >= 2 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def held_out_accuracy(model: Any, tokenizer: Any, n: int = 1000, batch_size: int = 100) -> dict[str, float]:
    """Accuracy on the first ``n`` held-out questions, overall and per question type."""
    model.eval()
    pairs = task.held_out(n)
    image_token_id = model.config.image_token_id
    correct: dict[str, list[int]] = {kind: [] for kind in task.QUESTION_TYPES}
    for start in range(0, n, batch_size):
        chunk = pairs[start : start + batch_size]
        predicted = shapes_model.answer_ids(model, shapes_model.encode_requests(tokenizer, chunk, image_token_id))
        for (_, question), token in zip(chunk, predicted.tolist()):
            correct[question.kind].append(int(tokenizer.convert_ids_to_tokens(token) == question.answer))
    result = {kind: sum(v) / len(v) for kind, v in correct.items() if v}
    result["all"] = sum(sum(v) for v in correct.values()) / n
    return result


def train(
    steps: int = 3800,
    seed: int = 0,
    batch_size: int = 24,
    decoder_layers: int = 6,
    peak_lr: float = 2e-3,
    warmup: int = 150,
    aux_weight: float = 0.5,
    log_every: int = 100,
    log: Any = print,
    init: Path | tuple[Any, Any] | None = None,
    extra_exists: int = 1,
    pair_aux: bool = True,
) -> tuple[Any, Any, list[float]]:
    """Train from scratch, or continue from ``init`` (a checkpoint directory or ``(model, tokenizer)``).

    Returns ``(model, tokenizer, losses)``.
    """
    torch.manual_seed(seed)
    torch.set_flush_denormal(True)  # denormals slow CPU training badly; restored below (a process-wide flag)
    if isinstance(init, tuple):
        model, tokenizer = init
    elif init is not None:
        model, processor = shapes_model.load(init)
        tokenizer = processor.tokenizer
    else:
        tokenizer = shapes_model.build_tokenizer()
        model = shapes_model.build_model(tokenizer, decoder_layers=decoder_layers, seed=seed)
    aux = AuxiliaryHead(model.config.text_config.hidden_size, pair=pair_aux)
    captured: dict[str, torch.Tensor] = {}
    hook = model.model.multi_modal_projector.register_forward_hook(lambda m, i, o: captured.__setitem__("features", o))
    optimizer = torch.optim.AdamW(_param_groups([model, aux], 0.05), lr=peak_lr, betas=(0.9, 0.98))
    image_token_id = model.config.image_token_id
    losses: list[float] = []
    model.train()
    start = time.perf_counter()
    try:
        for step in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(step, steps, peak_lr, warmup)
            seeds = [seed * 10_000_000 + step * batch_size + i for i in range(batch_size)]
            batch = training_batch(tokenizer, seeds, image_token_id, extra_exists)
            colours, shapes = batch.pop("colour_labels"), batch.pop("shape_labels")
            loss = model(**batch).loss
            features = captured["features"].reshape(len(seeds), shapes_model.VISION_TOKENS, -1)
            total = loss + aux_weight * aux.loss(features, colours, shapes)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_([*model.parameters(), *aux.parameters()], 1.0)
            optimizer.step()
            losses.append(loss.item())
            if log_every and (step + 1) % log_every == 0:
                recent = sum(losses[-log_every:]) / log_every
                log(f"step {step + 1}/{steps}  answer loss {recent:.4f}  {time.perf_counter() - start:.0f}s")
    finally:
        hook.remove()
        torch.set_flush_denormal(False)
    model.eval()
    return model, tokenizer, losses


def main(argv: list[str] | None = None) -> int:
    """Command line: train, report held-out accuracy, save the checkpoint."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=shapes_model.CHECKPOINT, help="directory for the checkpoint")
    parser.add_argument("--steps", type=int, default=3800)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--decoder-layers", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--init", type=Path, help="continue from this checkpoint (a second stage) instead of from scratch")
    parser.add_argument("--peak-lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=150)
    parser.add_argument("--extra-exists", type=int, default=1, help="extra existence questions per training image")
    parser.add_argument("--no-pair-aux", action="store_true", help="drop the auxiliary (colour, shape) pair target")
    parser.add_argument("--stage2-steps", type=int, default=1500,
                        help="second stage from the first's weights, at a lower peak LR (0: none; ignored with --init)")
    parser.add_argument("--stage2-peak-lr", type=float, default=5e-4)
    parser.add_argument("--stage2-seed", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    common = dict(warmup=args.warmup, extra_exists=args.extra_exists, pair_aux=not args.no_pair_aux)
    model, tokenizer, _ = train(
        steps=args.steps, seed=args.seed, decoder_layers=args.decoder_layers, init=args.init, peak_lr=args.peak_lr,
        **common,
    )
    stages = [{"steps": args.steps, "seed": args.seed, "peak_lr": args.peak_lr, "init": str(args.init) if args.init else None}]
    if args.init is None and args.stage2_steps > 0:
        print(f"stage 1 done ({(time.perf_counter() - started) / 60:.1f} min): {json.dumps(held_out_accuracy(model, tokenizer))}")
        model, tokenizer, _ = train(
            steps=args.stage2_steps, seed=args.stage2_seed, init=(model, tokenizer), peak_lr=args.stage2_peak_lr, **common,
        )
        stages.append({"steps": args.stage2_steps, "seed": args.stage2_seed, "peak_lr": args.stage2_peak_lr, "init": "stage 1"})
    accuracy = held_out_accuracy(model, tokenizer)
    minutes = (time.perf_counter() - started) / 60
    print(f"held-out accuracy: {json.dumps(accuracy)}  ({minutes:.1f} min)")
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    shapes_model.build_processor(tokenizer).save_pretrained(args.out)
    (args.out / "training.json").write_text(json.dumps(
        {"stages": stages, "decoder_layers": args.decoder_layers, "warmup": args.warmup,
         "extra_exists": args.extra_exists, "pair_aux": not args.no_pair_aux,
         "held_out_accuracy_1000": accuracy, "minutes": round(minutes, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
