"""Attention rows from the engine equal eager attention probabilities, on sdpa too."""

from __future__ import annotations

import pytest
import torch
from models import TWO_LEFT, batch, tiny_llava

import tokenprune


class RecordingPolicy(tokenprune.Policy):
    """Keeps a fixed share and records the attention rows it was given."""

    name = "test-recording"
    seen: list = []

    def select_row(self, ctx, row):
        queries = ctx.text_slots(row)
        RecordingPolicy.seen.append((ctx.layer, row, queries, ctx.attention(row, queries, per_head=True), ctx.hidden_states.shape[1]))
        n = ctx.vision_slots(row).numel()
        return tokenprune.RowSelection(keep=torch.arange(0, n, 2))


class Plugin:
    @tokenprune.hookimpl
    def tokenprune_policies(self):
        return [RecordingPolicy]


@pytest.fixture
def recording():
    plugin = Plugin()
    tokenprune.register_plugin(plugin)
    RecordingPolicy.seen = []
    yield RecordingPolicy.seen
    tokenprune.unregister_plugin(plugin)


@pytest.mark.parametrize("use_cache", [True, False], ids=["keys-from-cache", "keys-recomputed"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_probe_rows_equal_eager_attention(recording, attn, use_cache, monkeypatch):
    inputs = batch(TWO_LEFT)
    model = tiny_llava(attn)
    eager = tiny_llava("eager")  # same seed, same weights
    recomputed = []
    adapter_class = tokenprune.available_adapters()["llava"]
    original_keys = adapter_class.keys
    monkeypatch.setattr(adapter_class, "keys", lambda self, *a: recomputed.append(1) or original_keys(self, *a))
    with torch.no_grad(), tokenprune.attach(model, policy="test-recording", keep=8, layers=(1, 3)):
        model(**inputs, use_cache=use_cache)
    # with a cache, the keys the model already computed at layer L-1 are reused
    assert bool(recomputed) != use_cache
    monkeypatch.undo()
    with torch.no_grad(), tokenprune.attach(eager, policy="test-recording", keep=8, layers=(1, 3)):
        attentions = eager(**inputs, output_attentions=True).attentions
    recorded = recording[: len(recording) // 2]
    assert {layer for layer, *_ in recorded} == {1, 3}
    for layer, row, queries, probs, length in recorded:
        expected = attentions[layer - 1][row][:, queries]  # eager probs of layer L-1 in the same space
        assert expected.shape[-1] == length == probs.shape[-1]
        assert torch.allclose(probs, expected, atol=1e-6, rtol=0)
        assert torch.allclose(probs.sum(-1), torch.ones(()), atol=1e-5)


def test_probe_never_switches_attention_to_eager(recording):
    model = tiny_llava("sdpa")
    with torch.no_grad(), tokenprune.attach(model, policy="test-recording", keep=8):
        model(**batch(TWO_LEFT))
    assert model.config.text_config._attn_implementation == "sdpa"
    assert recording
