"""Keep-all through the full machinery equals the unhooked model bit for bit."""

from __future__ import annotations

import pytest
import torch
from models import ONE, TWO_LEFT, batch

import tokenprune


@pytest.mark.parametrize("rows", [ONE, TWO_LEFT], ids=["batch1", "left-padded-batch2"])
@pytest.mark.parametrize("layers", [(1,), (1, 2)], ids=["one-layer", "two-layers"])
def test_keep_all_logits_and_generate_are_identical(llava, rows, layers):
    inputs = batch(rows)
    with torch.no_grad():
        reference = llava(**inputs).logits
        generated = llava.generate(**inputs, max_new_tokens=8, do_sample=False)
        with tokenprune.attach(llava, policy="random", ratio=1.0, layers=layers) as handle:
            logits = llava(**inputs).logits
            assert handle.stats.pruned and len(handle.stats.records) == len(layers)
            pruned_generated = llava.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert torch.equal(logits, reference)
    assert torch.equal(pruned_generated, generated)
