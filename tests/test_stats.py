"""Statistics: FLOPs and equivalent tokens follow their definitions."""

from __future__ import annotations

import torch
from models import ONE, batch, tiny_llava

import tokenprune
from tokenprune.stats import LayerDims


def test_flops_and_equivalent_tokens_follow_the_token_counts():
    model = tiny_llava()
    dims = LayerDims.from_config(model.config.text_config)
    with torch.no_grad(), tokenprune.attach(model, policy="random", keep=16, layers=(1, 3)) as handle:
        model(**batch(ONE))
        stats = handle.stats
    total = 71  # 3 system + 64 vision + 4 question
    middle = plan = 16 + (64 - 16) // 2  # default linear schedule: halfway at the first of two layers
    assert stats.records[0].vision_after == [plan]
    assert stats.tokens_per_layer == [[total, 7 + middle, 7 + middle, 7 + 16]]
    assert stats.vision_per_layer[0][0] == 64 and stats.vision_per_layer[0][-1] == 16
    assert stats.flops.baseline == 4 * dims.layer_macs(total)
    assert stats.flops.pruned == sum(dims.layer_macs(n) for n in stats.tokens_per_layer[0])
    assert stats.equivalent_tokens == [sum(stats.vision_per_layer[0]) / 4]
    post = stats.vision_per_layer[0].copy()
    post[0], post[2] = post[1], post[3]
    assert stats.equivalent_tokens_post_prune == [sum(post) / 4]
    assert stats.equivalent_tokens_post_prune[0] < stats.equivalent_tokens[0]
    assert stats.flops.overhead == {} and stats.flops.ratio < 1
    assert dims.layer_macs(10) == 10 * 64 * 16 * (2 * 4 + 2 * 2) + 2 * 100 * 4 * 16 + 3 * 10 * 64 * 128
    data = stats.to_dict()
    assert data["flops"]["unit"] == "multiply-adds" and data["records"][0]["layer"] == 1
