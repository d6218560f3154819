"""After prefill, layers before a pruning layer cache N tokens, later ones N'."""

from __future__ import annotations

import pytest
import torch
from models import TWO_LEFT, UNEVEN, batch, tiny_llava
from transformers import DynamicCache

import tokenprune


@pytest.mark.parametrize("rows", [TWO_LEFT, UNEVEN], ids=["left-padded", "uneven-vision"])
def test_cache_lengths_follow_stages_and_stats(rows):
    model = tiny_llava()
    inputs = batch(rows)
    n = inputs["input_ids"].shape[1]
    cache = DynamicCache(config=model.config)
    with torch.no_grad(), tokenprune.attach(model, policy="random", keep=12, layers=(1, 3)) as handle:
        model(**inputs, cache=cache, use_cache=True)
        stats = handle.stats
    lengths = [cache.get_seq_length(layer) for layer in range(4)]
    text = [int(m.sum()) - v for m, v in zip(inputs["attention_mask"], stats.vision_tokens)]
    after_first = max(t + k for t, k in zip(text, stats.records[0].vision_after))
    after_second = max(t + k for t, k in zip(text, stats.records[1].vision_after))
    assert lengths == [n, after_first, after_first, after_second]
    assert stats.kv_cache.lengths == lengths
    assert after_second < after_first < n
    element = 2 * 2 * 16 * 4 * len(rows)  # k+v, kv heads, head dim, fp32 bytes, rows
    assert stats.kv_cache.pruned_bytes == element * sum(lengths)
    assert stats.kv_cache.baseline_bytes == element * n * 4
    for row, (vision, kept) in enumerate(zip(stats.vision_tokens, stats.records[-1].vision_after)):
        assert stats.vision_per_layer[row] == [vision, stats.records[0].vision_after[row], stats.records[0].vision_after[row], kept]


def test_generate_grows_every_layer_by_one_per_step():
    model = tiny_llava()
    inputs = batch(TWO_LEFT)
    with torch.no_grad(), tokenprune.attach(model, policy="random", keep=12, layers=(2,)) as handle:
        out = model.generate(**inputs, max_new_tokens=9, do_sample=False, return_dict_in_generate=True)
        prefill = handle.stats.kv_cache.lengths
        assert handle.stats.decode_steps == 8
    final = [out.cache.get_seq_length(layer) for layer in range(4)]
    assert [f - p for f, p in zip(final, prefill)] == [8, 8, 8, 8]
