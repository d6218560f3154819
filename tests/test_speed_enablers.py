"""What makes pruning fast, asserted without timing (issue: measured speedup).

Decoder attention stays on the fused sdpa kernel under every policy, and no
policy materialises an attention-sized tensor: the dispatcher-level probe of
``tokenprune.testing.largest_policy_tensor`` sees every tensor a policy's
steps and attention queries produce.
"""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration
from transformers.modeling_utils import AttentionInterface
from transformers.models.llama import modeling_llama

import tokenprune
from tokenprune.testing import largest_policy_tensor

POLICIES = ["random", "fastv", "tome", "sparsevlm", "sparsevlm-reference"]
LAYERS = 6


@pytest.fixture(scope="module")
def model():
    """Tiny LLaVA with 144 vision tokens (12x12 patches), sdpa."""
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                              image_size=48, patch_size=4)
    text = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=LAYERS, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=128, pad_token_id=0)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=100, vision_feature_layer=-1)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    built = LlavaForConditionalGeneration(config).eval()
    built.generation_config.eos_token_id = None
    built.generation_config.pad_token_id = 0
    return built


def _inputs() -> dict:
    rows = [[1, 5, 6] + [100] * 144 + [7, 8, 9, 10, 11, 12], [1, 5] + [100] * 144 + [13, 14, 15]]
    width = max(len(r) for r in rows)
    ids = torch.zeros(2, width, dtype=torch.long)
    mask = torch.zeros(2, width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
    return {"input_ids": ids, "attention_mask": mask,
            "pixel_values": torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))}


@pytest.mark.parametrize("policy", POLICIES)
def test_decoder_attention_stays_on_sdpa(model, policy, monkeypatch):
    calls = []
    sdpa = AttentionInterface._global_mapping["sdpa"]

    def counting_sdpa(module, *args, **kwargs):
        calls.append(type(module).__name__)
        return sdpa(module, *args, **kwargs)

    def no_eager(*args, **kwargs):
        raise AssertionError("a decoder layer fell back to eager attention")

    monkeypatch.setitem(AttentionInterface._global_mapping, "sdpa", counting_sdpa)
    monkeypatch.setattr(modeling_llama, "eager_attention_forward", no_eager)
    with torch.no_grad(), tokenprune.attach(model, policy=policy, ratio=0.3) as handle:
        model(**_inputs())
        assert handle.stats.records  # it did prune
        decoder_calls = [c for c in calls if c == "LlamaAttention"]
        assert len(decoder_calls) == LAYERS
        model.generate(**_inputs(), max_new_tokens=3, do_sample=False)
    assert model.config.text_config._attn_implementation == "sdpa"
    assert all(layer.self_attn.config._attn_implementation == "sdpa" for layer in model.model.language_model.layers)


@pytest.mark.parametrize("policy", POLICIES)
def test_no_policy_allocates_an_attention_sized_tensor(model, policy):
    largest = largest_policy_tensor(model, _inputs(), policy=policy, ratio=0.3)
    n = largest.sequence_length
    heads = model.config.text_config.num_attention_heads
    assert largest.numel > 0  # the probe saw the policy's work
    # stricter than heads x N x N: not even one head's N x N map
    assert largest.numel < n * n, (largest.shape, largest.operation)
    assert largest.numel < heads * n * n


class FullMapPolicy(tokenprune.Policy):
    """Negative control: ranks by a full attention map (every query row), the way peers do."""

    name = "test-full-map"

    def select_row(self, ctx, row):
        every = torch.arange(ctx.hidden_states.shape[1])
        probs = ctx.attention(row, every, per_head=True)  # [heads, N, N]
        scores = probs.mean(dim=(0, 1))[ctx.vision_slots(row)]
        return tokenprune.RowSelection(keep=tokenprune.top_k_in_order(scores, ctx.planned_keep(row)))


class FullMapPlugin:
    @tokenprune.hookimpl
    def tokenprune_policies(self):
        return [FullMapPolicy]


def test_the_probe_catches_a_full_attention_map(model):
    plugin = FullMapPlugin()
    tokenprune.register_plugin(plugin)
    try:
        largest = largest_policy_tensor(model, _inputs(), policy="test-full-map", ratio=0.3)
    finally:
        tokenprune.unregister_plugin(plugin)
    heads = model.config.text_config.num_attention_heads
    assert largest.numel >= heads * largest.sequence_length ** 2 // 2  # N shrinks by left-fill; still caught
    assert largest.numel >= largest.sequence_length ** 2
