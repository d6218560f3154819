"""The training code stays alive: a few steps from scratch lower the loss."""

from __future__ import annotations

import torch

from tokenprune.adapters.shapes import train


def test_a_few_training_steps_lower_the_loss():
    torch.set_num_threads(2)
    model, tokenizer, losses = train.train(steps=24, batch_size=6, decoder_layers=2, warmup=4, log_every=0)
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.6 * first, (first, last)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert not hasattr(model, "aux") and all("colour" not in name for name, _ in model.named_parameters())
