"""Bad input gets a typed error with an actionable message; the model stays usable."""

from __future__ import annotations

import pytest
import torch
from helpers import hook_count
from models import MIXED, ONE, batch, tiny_llava
from transformers import (
    CLIPVisionConfig,
    DynamicCache,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    MistralConfig,
    StaticCache,
)

import tokenprune
from tokenprune import (
    AlreadyAttachedError,
    BudgetError,
    ConfigError,
    UnknownPluginError,
    UnsupportedInputError,
    UnsupportedModelError,
)


def _warm(model):
    """transformers registers its output-capturing hooks on the first forward."""
    with torch.no_grad():
        model(**batch(ONE))
    return model


@pytest.fixture(scope="module")
def model():
    return _warm(tiny_llava())




@pytest.fixture(scope="module")
def reference(model):
    with torch.no_grad():
        return model(**batch(ONE)).logits


def assert_untouched(model, reference):
    assert hook_count(model) == BASELINE_HOOKS
    with torch.no_grad():
        assert torch.equal(model(**batch(ONE)).logits, reference)


BASELINE_HOOKS = hook_count(_warm(tiny_llava()))

ATTACH_ERRORS = [
    ({"policy": "random", "keep": 0}, ConfigError, "keep"),
    ({"policy": "random", "keep": -3}, ConfigError, "greater than 0"),
    ({"policy": "random", "ratio": 1.5}, ConfigError, "ratio"),
    ({"policy": "random", "keep": 4, "ratio": 0.5}, ConfigError, "exactly one budget"),
    ({"policy": "random"}, ConfigError, "exactly one budget"),
    ({"keep": 4}, ConfigError, "name a policy"),
    ({"policy": "random", "keep": 4, "layers": (0,)}, ConfigError, "layer 0"),
    ({"policy": "random", "keep": 4, "layers": (2, 1)}, ConfigError, "increasing"),
    ({"policy": "random", "keep": 4, "layers": (4,)}, ConfigError, "between 1 and 3"),
    ({"policy": "nope", "keep": 4}, UnknownPluginError, "available: "),
    ({"policy": "random", "keep": 4, "options": {"sede": 1}}, ConfigError, "sede: unknown key"),
    ({"policy": "random", "keep": 4, "options": {"seed": "x"}}, ConfigError, "seed"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), ATTACH_ERRORS, ids=[m for _, _, m in ATTACH_ERRORS])
def test_bad_attach_raises_typed_error_and_leaves_no_hook(model, reference, kwargs, error, message):
    with pytest.raises(error, match=message):
        tokenprune.attach(model, **kwargs)
    assert_untouched(model, reference)


def test_unsupported_model_class_lists_supported_ones():
    text = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, vocab_size=64))
    with pytest.raises(UnsupportedModelError, match="LlavaForConditionalGeneration"):
        tokenprune.attach(text, policy="random", keep=4)
    assert hook_count(text) == hook_count(LlamaForCausalLM(text.config))


def _llava_with_text(text_config):
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, image_size=32, patch_size=4)
    return LlavaForConditionalGeneration(LlavaConfig(vision_config=vision, text_config=text_config, image_token_id=100)).eval()


def test_sliding_window_decoder_is_refused():
    text = MistralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, vocab_size=128, sliding_window=16)
    model = _llava_with_text(text)
    before = hook_count(model)
    with pytest.raises(UnsupportedModelError, match="sliding"):
        tokenprune.attach(model, policy="random", keep=4)
    assert hook_count(model) == before


def test_bidirectional_image_mask_is_refused():
    text = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4, vocab_size=128)
    text.use_bidirectional_attention = True
    model = _llava_with_text(text)
    before = hook_count(model)
    with pytest.raises(UnsupportedModelError, match="bidirectional"):
        tokenprune.attach(model, policy="random", keep=4)
    assert hook_count(model) == before


def test_attaching_twice_is_an_error(model, reference):
    handle = tokenprune.attach(model, policy="random", keep=4)
    try:
        with pytest.raises(AlreadyAttachedError, match="detach"):
            tokenprune.attach(model, policy="random", keep=8)
    finally:
        handle.detach()
    assert_untouched(model, reference)


REQUEST_ERRORS = {
    "budget above vision tokens": (dict(policy="random", keep=65), lambda: batch(ONE), BudgetError, "larger than the 64"),
    "equivalent above vision tokens": (dict(policy="random", equivalent=80), lambda: batch(ONE), BudgetError, "at most 64"),
    "labels": (dict(policy="random", keep=8), lambda: dict(batch(ONE), labels=batch(ONE)["input_ids"]), UnsupportedInputError, "labels"),
    "4-D mask": (
        dict(policy="random", keep=8),
        lambda: dict(batch(ONE), attention_mask=torch.ones(1, 1, 70, 70)),
        UnsupportedInputError,
        "2-D attention_mask",
    ),
    "static cache": (
        dict(policy="random", keep=8),
        lambda: dict(batch(ONE), cache=StaticCache(config=tiny_llava().config, max_cache_len=80)),
        UnsupportedInputError,
        "StaticCache",
    ),
}


@pytest.mark.parametrize("case", REQUEST_ERRORS)
def test_bad_request_raises_and_model_recovers(model, reference, case):
    attach_kwargs, make_inputs, error, message = REQUEST_ERRORS[case]
    handle = tokenprune.attach(model, **attach_kwargs)
    try:
        with pytest.raises(error, match=message), torch.no_grad():
            model(**make_inputs())
        if "vision tokens" not in case:  # the next valid request is pruned normally
            with torch.no_grad():
                model(**batch(ONE))
            assert handle.stats.pruned
    finally:
        handle.detach()
    assert_untouched(model, reference)


def test_inputs_embeds_without_ids_is_refused(model, reference):
    inputs = batch(ONE)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(inputs["input_ids"])
    with tokenprune.attach(model, policy="random", keep=8):
        with pytest.raises(UnsupportedInputError, match="input_ids"), torch.no_grad():
            model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"])
    assert_untouched(model, reference)


def test_text_only_input_passes_through_unpruned(model):
    inputs = batch(MIXED[1:])
    with torch.no_grad():
        expected = model(**inputs).logits
        with tokenprune.attach(model, policy="random", keep=8) as handle:
            got = model(**inputs).logits
            generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
            stats = handle.stats
        plain = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert torch.equal(got, expected)
    assert torch.equal(generated, plain)
    assert stats is not None and not stats.pruned


def test_cache_pruned_by_a_failed_request_is_refused(model):
    """A cache whose layers disagree, with no request state behind it, is not silently reused."""
    inputs = batch(ONE)
    cache = DynamicCache(config=model.config)
    with torch.no_grad(), tokenprune.attach(model, policy="random", keep=8) as handle:
        model(**inputs, cache=cache, use_cache=True)
        handle.engine.state = None  # as if the request had been lost
        with pytest.raises(UnsupportedInputError, match="fresh cache"):
            model(input_ids=torch.tensor([[5]]), cache=cache, use_cache=True)


def test_transformers_4_is_refused_by_the_hugging_face_adapters(model, monkeypatch):
    import transformers

    before = hook_count(model)
    monkeypatch.setattr(transformers, "__version__", "4.37.2")
    with pytest.raises(tokenprune.UnsupportedModelError, match="transformers 5"):
        tokenprune.attach(model, policy="random", keep=4)
    assert hook_count(model) == before
