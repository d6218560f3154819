"""Pruning equals an unhooked forward that hides the dropped keys (the oracle).

Also the negative control: renumbering kept tokens contiguously must fail the
same comparison, proving the oracle sees position bugs.
"""

from __future__ import annotations

import pytest
import torch
from models import MIXED, ONE, TWO_LEFT, UNEVEN, batch

import tokenprune
from tokenprune.testing import generation_positions, max_kept_difference, oracle_masks, visible_sets

TOL = 1e-5
CASES = {"batch1": ONE, "left-padded-batch2": TWO_LEFT, "image-and-text-only": MIXED, "uneven-vision": UNEVEN}


def _pruned_and_oracle(model, inputs, **attach_kwargs):
    with torch.no_grad(), tokenprune.attach(model, **attach_kwargs) as handle:
        pruned = model(**inputs).logits
        stats = handle.stats
        adapter = handle.adapter
        vision = adapter.vision_mask(inputs["input_ids"])
    stages = visible_sets(stats, vision, inputs["attention_mask"])
    with torch.no_grad(), oracle_masks(adapter, inputs["attention_mask"], stages, torch.float32):
        oracle = model(**inputs).logits
    return pruned, oracle, stats


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("layers", [(1,), (1, 3)], ids=["one-layer", "two-layers"])
def test_pruned_logits_match_oracle(llava, case, layers):
    inputs = batch(CASES[case])
    pruned, oracle, stats = _pruned_and_oracle(llava, inputs, policy="random", keep=20, layers=layers, options={"seed": 3})
    assert stats.records[-1].vision_after == [20 if n else 0 for n in stats.vision_tokens]
    assert pruned.shape[1] < oracle.shape[1]
    assert max_kept_difference(pruned, oracle, stats, inputs["attention_mask"]) <= TOL


@pytest.mark.parametrize("case", CASES)
def test_generate_step_logits_match_oracle(llava_sdpa, case):
    model = llava_sdpa
    inputs = batch(CASES[case])
    new = 8
    with torch.no_grad(), tokenprune.attach(model, policy="random", keep=16, layers=(1, 2)) as handle:
        out = model.generate(**inputs, max_new_tokens=new, do_sample=False, output_logits=True, return_dict_in_generate=True)
        stats = handle.stats
        adapter = handle.adapter
    assert stats.decode_steps == new - 1
    sequences = out.sequences
    n = inputs["input_ids"].shape[1]
    full_mask = torch.cat([inputs["attention_mask"], torch.ones(len(sequences), new - 1, dtype=torch.long)], dim=1)
    vision = adapter.vision_mask(inputs["input_ids"])
    stages = [
        (layer, torch.cat([visible, torch.ones(len(sequences), new - 1, dtype=torch.bool)], dim=1))
        for layer, visible in visible_sets(stats, vision, inputs["attention_mask"])
    ]
    oracle_inputs = dict(inputs, input_ids=sequences[:, :-1], attention_mask=full_mask)
    with torch.no_grad(), oracle_masks(adapter, full_mask, stages, torch.float32):
        oracle = model(**oracle_inputs, position_ids=generation_positions(full_mask)).logits
    for step, logits in enumerate(out.logits):
        assert torch.allclose(logits, oracle[:, n - 1 + step], atol=TOL, rtol=0), f"step {step}"


def test_renumbered_positions_fail_the_oracle(llava_sdpa):
    """Negative control: contiguous positions after pruning must be visible to the oracle."""
    model = llava_sdpa
    inputs = batch(ONE)
    rotary = model.model.language_model.rotary_emb
    layers = model.model.language_model.layers

    def renumber(module, args, kwargs):
        hidden = args[0]
        positions = torch.arange(hidden.shape[1])[None]
        kwargs = dict(kwargs, position_embeddings=rotary(hidden, positions), position_ids=positions)
        return args, kwargs

    with torch.no_grad(), tokenprune.attach(model, policy="random", keep=20, layers=(1,)) as handle:
        honest = model(**inputs).logits
        hooks = [layer.register_forward_pre_hook(renumber, with_kwargs=True) for layer in layers[1:]]
        try:
            renumbered = model(**inputs).logits
        finally:
            for hook in hooks:
                hook.remove()
        stats = handle.stats
        adapter = handle.adapter
    stages = visible_sets(stats, adapter.vision_mask(inputs["input_ids"]), inputs["attention_mask"])
    with torch.no_grad(), oracle_masks(adapter, inputs["attention_mask"], stages, torch.float32):
        oracle = model(**inputs).logits
    assert max_kept_difference(honest, oracle, stats, inputs["attention_mask"]) <= TOL
    assert max_kept_difference(renumbered, oracle, stats, inputs["attention_mask"]) > 100 * TOL
