"""detach() restores the model bit for bit and leaks nothing."""

from __future__ import annotations

import gc

import torch
from helpers import hook_count
from models import ONE, TWO_LEFT, batch, tiny_llava

import tokenprune
from tokenprune.engine import Engine


def _snapshot(model):
    return (
        {name: sorted(vars(module)) for name, module in model.named_modules()},
        {k: v.clone() for k, v in model.state_dict().items()},
    )


def test_detach_restores_attributes_weights_hooks_and_outputs():
    model = tiny_llava()
    inputs = batch(TWO_LEFT)
    with torch.no_grad():
        never_attached = model(**inputs).logits
    attributes, weights = _snapshot(model)
    hooks = hook_count(model)

    handle = tokenprune.attach(model, policy="random", keep=10)
    assert hook_count(model) > hooks
    with torch.no_grad():
        pruned = model(**inputs).logits
        model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert pruned.shape != never_attached.shape
    handle.detach()
    handle.detach()  # twice is harmless

    assert hook_count(model) == hooks
    after_attributes, after_weights = _snapshot(model)
    assert after_attributes == attributes
    assert after_weights.keys() == weights.keys()
    assert all(torch.equal(after_weights[k], weights[k]) for k in weights)
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, never_attached)
    assert not handle.attached


def test_hundred_attach_detach_cycles_leak_no_hooks_or_objects():
    model = tiny_llava()
    inputs = batch(ONE)
    with torch.no_grad():
        model(**inputs)
    hooks = hook_count(model)

    def cycle():
        with torch.no_grad(), tokenprune.attach(model, policy="random", ratio=0.5):
            model(**inputs)

    for _ in range(5):  # warm caches of transformers and torch
        cycle()
    gc.collect()
    objects = len(gc.get_objects())
    for _ in range(100):
        cycle()
    gc.collect()
    assert hook_count(model) == hooks
    assert not [o for o in gc.get_objects() if type(o) is Engine]
    assert len(gc.get_objects()) - objects < 200  # no per-cycle growth (100 cycles)
