"""FastV and ToMe end to end on tiny random LLaVA models."""

from __future__ import annotations

import math

import pytest
import torch
from models import ONE, TWO_LEFT, batch, tiny_llava

import tokenprune
from tokenprune.engine import with_key_bias
from tokenprune.testing import max_kept_difference, oracle_masks, visible_sets


# ------------------------------------------------------------------- FastV
@pytest.mark.parametrize("query", ["last", "all_text"])
def test_fastv_keeps_top_k_of_eager_attention(query):
    model = tiny_llava("eager")
    inputs = batch(TWO_LEFT)
    with torch.no_grad():
        attentions = model(**inputs, output_attentions=True).attentions
        with tokenprune.attach(model, policy="fastv", keep=10, layers=(2,), options={"query": query}) as handle:
            model(**inputs)
            kept = handle.stats.records[0].kept
    vision = inputs["input_ids"] == 100
    for row in range(2):
        probs = attentions[1][row].mean(0)  # layer K-1 = 1, head-averaged
        visible = torch.nonzero(inputs["attention_mask"][row]).flatten()
        if query == "last":
            queries = visible[-1:]
        else:
            last_vision = int(torch.nonzero(vision[row]).max())
            queries = visible[visible > last_vision]
        scores = probs[queries][:, vision[row]].mean(0)
        expected = sorted(torch.topk(scores, 10).indices.tolist())
        assert kept[row] == expected


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_fastv_passes_the_oracle_on_a_left_padded_batch(attn):
    model = tiny_llava(attn)
    inputs = batch(TWO_LEFT)
    with torch.no_grad(), tokenprune.attach(model, policy="fastv", ratio=0.25) as handle:
        pruned = model(**inputs).logits
        stats = handle.stats
        adapter = handle.adapter
        generated = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert generated.shape == (2, inputs["input_ids"].shape[1] + 8)
    assert stats.records[0].vision_after == [16, 16]
    stages = visible_sets(stats, adapter.vision_mask(inputs["input_ids"]), inputs["attention_mask"])
    with torch.no_grad(), oracle_masks(adapter, inputs["attention_mask"], stages, torch.float32):
        oracle = model(**inputs).logits
    assert max_kept_difference(pruned, oracle, stats, inputs["attention_mask"]) <= 1e-5


# -------------------------------------------------------------------- ToMe
@pytest.mark.parametrize(("metric", "schedule", "counts"), [
    ("keys", "constant", [48, 32, 16]),
    ("hidden", "constant", [48, 32, 16]),
    ("keys", "decreasing", [40, 24, 16]),
])
def test_tome_generates_and_tracks_sizes(metric, schedule, counts):
    model = tiny_llava()
    inputs = batch(TWO_LEFT)
    options = {"metric": metric, "schedule": schedule}
    with torch.no_grad(), tokenprune.attach(model, policy="tome", keep=16, layers=(1, 2, 3), options=options) as handle:
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        stats = handle.stats
        sizes = [stage.layout.size for stage in handle.engine.state.stages]
        kinds = [stage.layout.kind for stage in handle.engine.state.stages]
    assert out.shape[1] == inputs["input_ids"].shape[1] + 8
    assert [r.vision_after for r in stats.records] == [[c, c] for c in counts]
    for size, kind in zip(sizes, kinds):
        vision = kind == 2
        assert torch.equal(size[vision].reshape(2, -1).sum(-1), torch.tensor([64.0, 64.0]))  # sizes add up
        assert (size[kind == 1] == 1).all()  # text never merges


def test_tome_with_unit_sizes_equals_the_unhooked_model():
    model = tiny_llava()
    inputs = batch(TWO_LEFT)
    with torch.no_grad():
        reference = model(**inputs).logits
        with tokenprune.attach(model, policy="tome", ratio=1.0, layers=(1, 2)):
            logits = model(**inputs).logits
    assert torch.equal(logits, reference)


def test_tome_bias_changes_attention_and_has_the_right_sign():
    model = tiny_llava()
    inputs = batch(ONE)
    captured = {}

    def capture(module, args, kwargs):
        captured["mask"] = kwargs["attention_mask"]

    layer3 = model.model.language_model.layers[3]
    results = {}
    for proportional in (True, False):
        options = {"proportional_attention": proportional}
        with torch.no_grad(), tokenprune.attach(model, policy="tome", keep=32, layers=(1, 2), options=options) as handle:
            hook = layer3.register_forward_pre_hook(capture, with_kwargs=True)
            try:
                results[proportional] = model(**inputs).logits
            finally:
                hook.remove()
            layout = handle.engine.state.stages[-1].layout
        if proportional:
            mask = captured["mask"][0, 0]
            visible = layout.valid[0]
            expected = torch.where(visible, layout.size[0].log(), torch.tensor(torch.finfo(torch.float32).min))
            last = mask.shape[-1] - 1
            assert torch.allclose(mask[last], expected)  # the last query sees every key, biased by +log(size)
            assert (layout.size[0] > 1).any()
    assert not torch.allclose(results[True], results[False], atol=1e-4)


def test_key_bias_mask_equals_duplicated_keys_in_sdpa():
    """Through sdpa: a key with log(s) bias behaves like the key and its value appearing s times."""
    torch.manual_seed(0)
    n, d = 5, 8
    sizes = torch.tensor([1.0, 3.0, 1.0, 2.0, 1.0])
    q, k, v = torch.randn(1, 1, 1, d), torch.randn(1, 1, n, d), torch.randn(1, 1, n, d)
    adapter = tokenprune.Adapter(torch.nn.Module())
    mask = with_key_bias(adapter, torch.zeros(1, 1, d), torch.ones(1, n, dtype=torch.bool), None, 0, sizes.log()[None])
    biased = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    repeat = sizes.long()
    duplicated = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(repeat, dim=2), v.repeat_interleave(repeat, dim=2)
    )
    assert torch.allclose(biased, duplicated, atol=1e-6)
    assert math.isclose(float(mask[0, 0, 0, 1]), math.log(3.0), rel_tol=1e-6)


def test_tome_refuses_more_than_half_per_layer():
    model = tiny_llava()
    with tokenprune.attach(model, policy="tome", keep=4, layers=(1,)):
        with pytest.raises(tokenprune.BudgetError, match="at most half"), torch.no_grad():
            model(**batch(ONE))


def test_tome_refuses_flash_attention_for_its_bias():
    model = tiny_llava()
    model.config.text_config._attn_implementation = "flash_attention_2"
    try:
        with pytest.raises(tokenprune.UnsupportedModelError, match="sdpa"):
            tokenprune.attach(model, policy="tome", keep=16)
        tokenprune.attach(model, policy="tome", keep=16, options={"proportional_attention": False}).detach()
    finally:
        model.config.text_config._attn_implementation = "sdpa"


@pytest.mark.parametrize("policy", ["random", "fastv", "tome", "sparsevlm", "sparsevlm-reference"])
@pytest.mark.parametrize(("budget", "value"), [("keep", 16), ("ratio", 0.5), ("equivalent", 40.0)])
def test_every_policy_meets_every_budget_kind(policy, budget, value):
    model = tiny_llava(layers=8)
    with torch.no_grad(), tokenprune.attach(model, policy=policy, layers=(1, 3, 6), **{budget: value}) as handle:
        model(**batch(TWO_LEFT))
        stats = handle.stats
    for row in range(2):
        if budget == "equivalent":
            assert abs(stats.equivalent_tokens[row] - value) <= 1.0
        else:
            assert stats.vision_per_layer[row][-1] == (value if budget == "keep" else round(value * 64))
