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


def test_training_can_continue_from_a_checkpoint():
    from tokenprune.adapters.shapes import model as shapes_model

    torch.set_num_threads(2)
    model, tokenizer, losses = train.train(steps=2, batch_size=4, warmup=1, log_every=0, init=shapes_model.CHECKPOINT)
    assert len(losses) == 2 and losses[0] < 0.5  # starts from trained weights, not from the ~3.2 of a fresh model
    assert tokenizer.convert_tokens_to_ids("<image>") == model.config.image_token_id
