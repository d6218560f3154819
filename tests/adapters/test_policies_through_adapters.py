"""Every built-in policy runs through every new adapter; per-layer stats agree with the KV cache."""

from __future__ import annotations

import pytest
import torch
from adapter_models import FAMILIES, tiny

import tokenprune

POLICIES = ["random", "sparsevlm", "sparsevlm-reference", "fastv", "tome"]


def test_the_policy_list_is_every_built_in_policy():
    builtin = {
        name
        for name, cls in tokenprune.available_policies().items()
        if cls.__module__.startswith("tokenprune.policies")
    }
    assert builtin == set(POLICIES)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("family", FAMILIES)
def test_policy_through_adapter_keeps_stats_and_cache_consistent(family, policy):
    model = tiny(family)
    inputs = FAMILIES[family].two(model)
    n = inputs["input_ids"].shape[1]
    with torch.no_grad(), tokenprune.attach(model, policy=policy, ratio=0.5) as handle:
        out = model(**inputs, use_cache=True)
        stats = handle.stats
        layers = handle.layers
        generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert generated.shape == (2, n + 3)

    num_layers = stats.num_layers
    lengths = [out.cache.get_seq_length(layer) for layer in range(num_layers)]
    assert stats.kv_cache.lengths == lengths
    text = [int(m.sum()) - v for m, v in zip(inputs["attention_mask"], stats.vision_tokens)]
    for layer in range(num_layers):
        tokens = [row[layer] for row in stats.tokens_per_layer]
        # before the first pruning layer the cache holds the padded prompt; after it, the
        # rectangular pruned batch: the longest row's visible tokens (fillers pad the others)
        assert lengths[layer] == (n if layer < layers[0] else max(tokens))
        for row in range(2):
            assert stats.vision_per_layer[row][layer] == tokens[row] - text[row]
    for row in range(2):
        counts = stats.vision_per_layer[row]
        assert counts[0] == stats.vision_tokens[row] > 0
        assert all(a >= b for a, b in zip(counts, counts[1:]))
        assert counts[-1] == stats.records[-1].vision_after[row] < stats.vision_tokens[row]
    assert [record.layer for record in stats.records] == list(layers)
