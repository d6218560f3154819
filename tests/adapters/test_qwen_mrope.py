"""Qwen2-VL / Qwen2.5-VL specifics: 3-D M-RoPE positions survive pruning; window attention is vision-only."""

from __future__ import annotations

import pytest
import torch
from adapter_models import FAMILIES, tiny
from helpers import hook_count

import tokenprune
from tokenprune.testing import max_kept_difference, oracle_masks, visible_sets

TOL = 1e-5


def _oracle_logits(model, inputs, stats, adapter):
    stages = visible_sets(stats, adapter.vision_mask(inputs["input_ids"]), inputs["attention_mask"])
    with torch.no_grad(), oracle_masks(adapter, inputs["attention_mask"], stages, torch.float32):
        return model(**inputs).logits


@pytest.mark.parametrize("family", ["qwen2-vl", "qwen2.5-vl"])
def test_renumbered_positions_fail_the_oracle(family):
    """Negative controls: after pruning, contiguous positions, or 1-D positions (every axis = the
    token's original index), must be visible to the oracle; the gathered 3-D positions pass it."""
    model = tiny(family)
    inputs = FAMILIES[family].two(model)
    text_model = model.model.language_model

    with torch.no_grad(), tokenprune.attach(model, policy="random", ratio=0.4, layers=(1,)) as handle:
        engine, adapter = handle.engine, handle.adapter

        def contiguous(hidden):
            return torch.arange(hidden.shape[1]).expand(3, hidden.shape[0], -1)

        def one_dimensional(hidden):
            origin = engine.state.stages[-1].layout.origin.clamp(min=0)  # original index of each slot
            return origin.expand(3, -1, -1)

        def run_with(positions_of):
            def hook(module, args, kwargs):
                hidden = args[0] if args else kwargs["hidden_states"]
                rotary = text_model.rotary_emb(hidden, positions_of(hidden))
                return args, dict(kwargs, position_embeddings=rotary)

            layers = text_model.layers[1:]
            hooks = [layer.register_forward_pre_hook(hook, with_kwargs=True) for layer in layers]
            try:
                return model(**inputs).logits
            finally:
                for registered in hooks:
                    registered.remove()

        honest = model(**inputs).logits
        stats = handle.stats
        renumbered = run_with(contiguous)
        flattened = run_with(one_dimensional)
    oracle = _oracle_logits(model, inputs, stats, adapter)
    mask = inputs["attention_mask"]
    assert max_kept_difference(honest, oracle, stats, mask) <= TOL
    assert max_kept_difference(renumbered, oracle, stats, mask) > 100 * TOL
    assert max_kept_difference(flattened, oracle, stats, mask) > 100 * TOL


@pytest.mark.parametrize("family", ["qwen2-vl", "qwen2.5-vl"])
def test_rope_deltas_and_decode_positions_are_untouched_by_pruning(family):
    """``generate`` positions new tokens from the 2-D mask + ``rope_deltas``; pruning changes neither."""
    model = tiny(family)
    inputs = FAMILIES[family].two(model)
    seen: list[torch.Tensor] = []

    def record(module, args, kwargs):
        seen.append(kwargs["position_ids"].clone())

    hook = model.model.language_model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        with torch.no_grad():
            model.generate(**inputs, max_new_tokens=8, do_sample=False)
            plain_deltas, plain_positions = model.model.rope_deltas.clone(), list(seen)
            seen.clear()
            with tokenprune.attach(model, policy="random", ratio=0.4, layers=(1, 2)) as handle:
                model.generate(**inputs, max_new_tokens=8, do_sample=False)
                stats = handle.stats
                assert all(k < n for k, n in zip(stats.records[-1].vision_after, stats.vision_tokens))
    finally:
        hook.remove()
    assert (plain_deltas != 0).all()  # M-RoPE really compresses vision positions here
    assert torch.equal(model.model.rope_deltas, plain_deltas)
    assert len(seen) == len(plain_positions) == 8
    for pruned_step, plain_step in zip(seen, plain_positions):
        assert torch.equal(pruned_step, plain_step)


def test_qwen2_5_window_attention_is_in_the_vision_tower_only():
    model = tiny("qwen2.5-vl")
    vision, text = model.config.vision_config, model.config.get_text_config()
    # the vision tower mixes windowed and full-attention blocks ...
    assert vision.window_size and list(vision.fullatt_block_indexes) == [1] and vision.depth == 2
    # ... while every decoder layer attends causally over the full sequence
    assert set(text.layer_types) == {"full_attention"} and text.sliding_window is None
    assert all(layer.self_attn.sliding_window is None for layer in model.model.language_model.layers)
    assert not model.model.language_model.has_sliding_layers
    visual_hooks = hook_count(model.model.visual)
    with tokenprune.attach(model, policy="random", ratio=0.5) as handle:
        assert handle.adapter.name == "qwen2.5-vl"
        assert hook_count(model.model.visual) == visual_hooks  # nothing of the tower is hooked
