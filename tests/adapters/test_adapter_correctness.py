"""Every new adapter: keep-all is bit-exact, pruning equals the oracle, generate works with the cache.

Each family runs a batch of one row and a left-padded batch of two rows that
differ in image size, frames or images, and prompt length (see
``adapter_models.FAMILIES``).
"""

from __future__ import annotations

import pytest
import torch
from adapter_models import FAMILIES, continuation_inputs, tiny

import tokenprune
from tokenprune.testing import oracle_difference, oracle_masks, visible_sets

TOL = 1e-5
NEW_TOKENS = 8
CASES = [(family, batch) for family in FAMILIES for batch in ("one", "two")]
IDS = [f"{family}-{batch}" for family, batch in CASES]


def _inputs(family: str, batch: str, model: torch.nn.Module) -> dict:
    return getattr(FAMILIES[family], batch)(model)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize(("family", "batch"), CASES, ids=IDS)
def test_keep_all_is_bit_exact_and_pruning_matches_the_oracle(family, batch, attn):
    model = tiny(family, attn)
    inputs = _inputs(family, batch, model)
    with torch.no_grad():
        reference = model(**inputs).logits
        with tokenprune.attach(model, policy="random", ratio=1.0, layers=(1, 2)) as handle:
            kept_all = model(**inputs).logits
            assert handle.adapter.name == FAMILIES[family].adapter
    assert torch.equal(kept_all, reference)
    pruning = dict(policy="random", ratio=0.4, layers=(1, 3), options={"seed": 2})
    assert oracle_difference(model, inputs, **pruning) <= TOL


@pytest.mark.parametrize(("family", "batch"), CASES, ids=IDS)
def test_generate_with_cache_matches_the_oracle_step_by_step(family, batch):
    model = tiny(family)
    inputs = _inputs(family, batch, model)
    generate = dict(max_new_tokens=NEW_TOKENS, do_sample=False)
    with torch.no_grad():
        plain = model.generate(**inputs, **generate)
        with tokenprune.attach(model, policy="random", ratio=1.0, layers=(1, 2)):
            kept_all = model.generate(**inputs, **generate)
        with tokenprune.attach(model, policy="random", ratio=0.4, layers=(1, 2)) as handle:
            out = model.generate(**inputs, **generate, output_logits=True, return_dict_in_generate=True)
            stats = handle.stats
            adapter = handle.adapter
    assert torch.equal(kept_all, plain)
    assert stats.decode_steps == NEW_TOKENS - 1
    assert out.cache.get_seq_length(3) < out.cache.get_seq_length(0)  # the cache really is pruned

    n = inputs["input_ids"].shape[1]
    oracle_inputs = continuation_inputs(FAMILIES[family], inputs, out.sequences[:, :-1])
    extra = torch.ones(len(out.sequences), NEW_TOKENS - 1, dtype=torch.bool)
    vision = adapter.vision_mask(inputs["input_ids"])
    stages = [
        (layer, torch.cat([visible, extra], dim=1))
        for layer, visible in visible_sets(stats, vision, inputs["attention_mask"])
    ]
    with torch.no_grad(), oracle_masks(adapter, oracle_inputs["attention_mask"], stages, torch.float32):
        oracle = model(**oracle_inputs).logits
    for step, logits in enumerate(out.logits):
        assert torch.allclose(logits, oracle[:, n - 1 + step], atol=TOL, rtol=0), f"step {step}"
