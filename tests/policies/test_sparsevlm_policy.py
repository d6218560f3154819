"""SparseVLM end to end on tiny random LLaVA models."""

from __future__ import annotations

import pytest
import torch
from models import ONE, TWO_LEFT, UNEVEN, batch, tiny_llava

import tokenprune
from tokenprune.policies.sparsevlm import steps as pure
from tokenprune.policies.sparsevlm.policy import PUBLISHED_SCHEDULES, schedule_shape
from tokenprune.testing import max_kept_difference, oracle_masks, visible_sets


class Recorder:
    """Captures prune events (scores, records) through the public event hook."""

    def __init__(self):
        self.events = []

    @tokenprune.hookimpl
    def tokenprune_after_prune(self, event):
        self.events.append(event)


@pytest.fixture
def recorder():
    plugin = Recorder()
    tokenprune.register_plugin(plugin)
    yield plugin
    tokenprune.unregister_plugin(plugin)


@pytest.mark.parametrize("table", sorted(PUBLISHED_SCHEDULES))
def test_published_schedules_are_reproduced_exactly(table):
    counts = PUBLISHED_SCHEDULES[table]
    planned = tokenprune.plan_kept_counts(576, tokenprune.Budget("keep", counts[-1]), (3, 7, 16), 32, schedule_shape(counts, 576))
    assert tuple(planned) == counts


def test_scores_equal_direct_computation_from_eager_attention(recorder):
    inputs = batch(TWO_LEFT)
    model = tiny_llava("eager")
    options = {"recycler": "none", "budget": "schedule"}
    with torch.no_grad(), tokenprune.attach(model, policy="sparsevlm", keep=12, layers=(2,), options=options) as handle:
        attentions = model(**inputs, output_attentions=True).attentions
        request = recorder.events[0].request
    raters = [pure.select_raters(pure.rater_relevance(
        request.inputs_embeds[b][request.vision_positions(b)], request.inputs_embeds[b][request.text_positions(b)]))
        for b in range(2)]
    for row in range(2):
        rater_positions = request.text_positions(row)[raters[row]]
        assert rater_positions.numel() >= 1
        probs = attentions[1][row].mean(0)[rater_positions][:, request.vision_positions(row)]
        expected = probs.mean(0)
        assert torch.allclose(recorder.events[0].scores[row], expected, atol=1e-6, rtol=0)
    assert handle is not None


@pytest.mark.parametrize("policy", ["sparsevlm", "sparsevlm-reference"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_kept_sets_pass_the_oracle(policy, attn):
    model = tiny_llava(attn)
    inputs = batch(TWO_LEFT)
    with torch.no_grad(), tokenprune.attach(model, policy=policy, keep=10, layers=(1, 2), options={"recycler": "none"}) as handle:
        pruned = model(**inputs).logits
        stats = handle.stats
        adapter = handle.adapter
    assert stats.records[-1].vision_after == [10, 10]
    stages = visible_sets(stats, adapter.vision_mask(inputs["input_ids"]), inputs["attention_mask"])
    with torch.no_grad(), oracle_masks(adapter, inputs["attention_mask"], stages, torch.float32):
        oracle = model(**inputs).logits
    assert max_kept_difference(pruned, oracle, stats, inputs["attention_mask"]) <= 1e-5


@pytest.mark.parametrize("policy", ["sparsevlm", "sparsevlm-reference"])
def test_generate_with_recycling_on_a_left_padded_batch(policy):
    model = tiny_llava()
    inputs = batch(TWO_LEFT)
    with torch.no_grad(), tokenprune.attach(model, policy=policy, keep=12, layers=(1, 2)) as handle:
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        stats = handle.stats
    assert out.shape == (2, inputs["input_ids"].shape[1] + 8)
    assert all(groups for groups in stats.records[0].merged)  # recycling produced merged tokens
    assert stats.records[-1].vision_after == [12, 12]
    for record in stats.records:
        for kept, merged, after in zip(record.kept, record.merged, record.vision_after):
            assert len(kept) + len(merged) == after


def test_schedule_mode_counts_match_the_plan_exactly():
    model = tiny_llava(layers=8)
    inputs = batch(UNEVEN)
    with torch.no_grad(), tokenprune.attach(model, policy="sparsevlm-reference", keep=9, layers=(1, 3, 6)) as handle:
        model(**inputs)
        stats = handle.stats
    for row, n in enumerate(stats.vision_tokens):
        counts = [stats.vision_per_layer[row][layer] for layer in (1, 3, 6)]
        request_counts = tokenprune.plan_kept_counts(n, tokenprune.Budget("keep", 9), (1, 3, 6), 8, _nearest_shape(n, 9))
        assert counts == request_counts
        assert counts[-1] == 9


def _nearest_shape(n, keep):
    best = min(PUBLISHED_SCHEDULES.values(), key=lambda c: abs(keep / n - c[-1] / 576))
    return schedule_shape(best, 576)


@pytest.mark.parametrize("policy", ["sparsevlm", "sparsevlm-reference"])
@pytest.mark.parametrize(("budget", "value"), [("keep", 7), ("ratio", 0.25), ("equivalent", 45.0)])
def test_budgets_are_met(policy, budget, value):
    model = tiny_llava(layers=8)
    with torch.no_grad(), tokenprune.attach(model, policy=policy, layers=(1, 3, 6), **{budget: value}) as handle:
        model(**batch(UNEVEN))
        stats = handle.stats
    for row, n in enumerate(stats.vision_tokens):
        if budget == "keep":
            assert stats.vision_per_layer[row][-1] == value
        elif budget == "ratio":
            assert stats.vision_per_layer[row][-1] == round(value * n)
        else:
            assert abs(stats.equivalent_tokens[row] - value) <= 1.0


def test_same_request_twice_is_identical(recorder):
    model = tiny_llava()
    inputs = batch(TWO_LEFT)
    outputs = []
    with torch.no_grad(), tokenprune.attach(model, policy="sparsevlm", keep=10, layers=(1, 2)) as handle:
        for _ in range(2):
            logits = model(**inputs).logits
            merged = [s.layout for s in handle.engine.state.stages]
            outputs.append((logits, handle.stats.records, merged))
    (l1, r1, m1), (l2, r2, m2) = outputs
    assert torch.equal(l1, l2)
    assert r1 == r2
    assert [m.members for m in m1] == [m.members for m in m2]


def test_merged_tokens_take_the_position_of_their_best_member(recorder):
    model = tiny_llava()
    inputs = batch(ONE)
    with torch.no_grad(), tokenprune.attach(model, policy="sparsevlm", keep=10, layers=(1,)) as handle:
        model(**inputs)
        stage = handle.engine.state.stages[0]
        event = recorder.events[-1]
    layout = stage.layout
    merged_slots = torch.nonzero(layout.kind[0] == 3).flatten()
    assert merged_slots.numel() >= 1
    vision_positions = event.request.vision_positions(0)
    scores = event.scores[0]
    for slot in merged_slots.tolist():
        members = layout.members[0][slot]
        best = members[int(torch.argmax(scores[members]))]
        assert int(layout.origin[0, slot]) == int(vision_positions[best])
        assert int(stage.position_ids[0, slot]) == int(vision_positions[best])  # arange positions, batch 1


def test_steps_swap_by_name_through_configuration():
    model = tiny_llava()
    inputs = batch(ONE)

    def half(ctx, row, scores, probs, options, history):
        return scores.numel() // 2

    step = tokenprune.Step("budget", "test-half", half)

    class Plugin:
        @tokenprune.hookimpl
        def tokenprune_steps(self):
            return [step]

    plugin = Plugin()
    tokenprune.register_plugin(plugin)
    try:
        with torch.no_grad(), tokenprune.attach(
            model, policy="sparsevlm", keep=10, layers=(1,), options={"budget": "test-half", "recycler": "none"}
        ) as handle:
            model(**inputs)
            record = handle.stats.records[0]
        assert record.vision_after == [32] and record.merged == [[]]
        with torch.no_grad(), tokenprune.attach(model, policy="sparsevlm", keep=10, layers=(1,), options={"recycler": "none"}) as handle:
            model(**inputs)
            assert handle.stats.records[0].merged == [[]]
        with pytest.raises(tokenprune.UnknownPluginError, match="unknown budget step 'nope'"):
            tokenprune.attach(model, policy="sparsevlm", keep=10, options={"budget": "nope"})
    finally:
        tokenprune.unregister_plugin(plugin)


def test_rank_mode_skips_a_layer_when_rank_is_full():
    """With scale 0 eq. 8 deletes nothing at intermediate layers: they are skipped."""
    model = tiny_llava(layers=8)
    with torch.no_grad(), tokenprune.attach(model, policy="sparsevlm", keep=8, layers=(1, 3, 6), options={"scale": 0.0}) as handle:
        model(**batch(ONE))
        stats = handle.stats
    assert stats.vision_per_layer[0][:6] == [64] * 6
    assert stats.vision_per_layer[0][6:] == [8, 8]
    assert "rank (SVD)" in stats.flops.overhead and "rater relevance" in stats.flops.overhead
