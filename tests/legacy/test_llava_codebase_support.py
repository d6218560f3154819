"""llava-codebase adapter: grids, refusals, detach, and loading from a saved checkpoint (legacy environment)."""

from __future__ import annotations

import pytest

pytest.importorskip("llava", reason="needs the legacy environment (llava-torch, transformers 4.37)")

import legacy_models as lm  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

import tokenprune  # noqa: E402


def _inputs(family: str) -> dict:
    ids, mask = lm.prompts([[1, 5, lm.IMAGE_TOKEN_INDEX, 6, 7], [1, lm.IMAGE_TOKEN_INDEX, 8, lm.IMAGE_TOKEN_INDEX, 9]])
    return {"input_ids": ids, "attention_mask": mask, "images": lm.images(family, 3)}


class GridRecorder:
    """Keeps the request of every prune event."""

    def __init__(self) -> None:
        self.requests: list[tokenprune.RequestContext] = []

    @tokenprune.hookimpl
    def tokenprune_after_prune(self, event: tokenprune.PruneEvent) -> None:
        self.requests.append(event.request)


@pytest.mark.parametrize("family", ["llava-llama", "mgm-hd"])
def test_grid_names_the_image_view_and_cell_the_model_put_there(models, family):
    model = models(family)
    model.config.tokenizer_padding_side = "left"
    inputs = _inputs(family)
    recorder = GridRecorder()
    tokenprune.register_plugin(recorder)
    try:
        with torch.no_grad(), tokenprune.attach(model, policy="random", ratio=0.5, layers=(2,)):
            model(**inputs)
    finally:
        tokenprune.unregister_plugin(recorder)
    request = recorder.requests[0]
    views = lm.views_per_image(family)
    side = int(lm.TOKENS_PER_VIEW**0.5)
    # every view's patch features, computed directly: [image, view, token, D]
    pixels = inputs["images"].reshape(-1, 3, lm.IMAGE_SIZE, lm.IMAGE_SIZE)
    with torch.no_grad():
        features = model.encode_images(pixels).reshape(3, views, lm.TOKENS_PER_VIEW, -1)
    image_offset = [0, 1]  # row 0 holds image 0, row 1 images 1 and 2
    for row, grid in enumerate(request.grids):
        assert grid is not None and grid.shapes == ((views, side, side),) * (row + 1)
        cells = grid.cells.tolist()
        assert len(set(map(tuple, cells))) == len(cells) == (row + 1) * views * lm.TOKENS_PER_VIEW
        positions = request.vision_mask[row].nonzero().flatten()
        for position, (image, view, r, c) in zip(positions.tolist(), cells):
            expected = features[image_offset[row] + image, view, r * side + c]
            assert torch.equal(request.inputs_embeds[row, position], expected)
        if views > 1:
            assert cells[0][1] == 0 and cells[-1][1] == views - 1  # global view first, last crop last


def test_pruning_at_layer_zero_is_refused_before_anything_runs(models):
    model = models("llava-llama")
    with pytest.raises(tokenprune.ConfigError):
        tokenprune.attach(model, policy="random", keep=4, layers=(0,))
    assert "prepare_inputs_labels_for_multimodal" not in vars(model)
    assert not any(m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: setattr(m.config, "_attn_implementation", "flash_attention_2"), "flash_attention_2"),
        (lambda m: setattr(m.config, "rope_scaling", {"type": "dynamic", "factor": 2.0}), "dynamic"),
        (lambda m: setattr(transformers, "__version__", "4.40.0"), "4.36/4.37"),
    ],
    ids=["flash-attention", "dynamic-rope", "newer-transformers"],
)
def test_configurations_the_old_decoder_cannot_support_are_refused(tower, monkeypatch, change, message):
    model = lm.build("llava-llama", tower, layers=3)
    monkeypatch.setattr(transformers, "__version__", transformers.__version__)  # restored after the test
    change(model)
    with pytest.raises(tokenprune.UnsupportedModelError, match=message):
        tokenprune.attach(model, policy="random", keep=4)
    assert "prepare_inputs_labels_for_multimodal" not in vars(model)


def test_gemma_based_mgm_is_refused_by_name(tower):
    model = lm.build("llava-llama", tower, layers=3)
    model.__class__ = type("MGMGemmaForCausalLM", (type(model),), {})
    with pytest.raises(tokenprune.UnsupportedModelError, match="4.38"):
        tokenprune.attach(model, policy="random", keep=4)


def test_a_sequence_longer_than_the_sliding_window_is_refused(tower):
    model = lm.build("llava-mistral", tower, layers=3, sliding_window=20)
    inputs = _inputs("llava-mistral")
    with tokenprune.attach(model, policy="random", keep=4), pytest.raises(tokenprune.UnsupportedInputError, match="sliding window"):
        model(**inputs)
    short = {"input_ids": inputs["input_ids"][:1, -3:], "attention_mask": inputs["attention_mask"][:1, -3:],
             "images": inputs["images"][:1]}
    with torch.no_grad():
        reference = model(**short).logits
        with tokenprune.attach(model, policy="random", ratio=1.0):
            assert torch.equal(model(**short).logits, reference)  # 18 tokens: inside the window


def test_detach_restores_the_model_bit_for_bit(models):
    model = models("mgm-hd")
    model.config.tokenizer_padding_side = "left"
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    before_attrs = set(vars(model))
    rotary = [layer.self_attn.rotary_emb for layer in model.get_model().layers]
    before_tables = [r.cos_cached.clone() for r in rotary]
    handle = tokenprune.attach(model, policy="sparsevlm", ratio=0.3)
    assert "prepare_inputs_labels_for_multimodal" in vars(model)
    inputs = _inputs("mgm-hd")
    with torch.no_grad():
        model.generate(inputs["input_ids"], attention_mask=inputs["attention_mask"], images=inputs["images"], max_new_tokens=3)
    handle.detach()
    assert set(vars(model)) == before_attrs
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(before_state[k], after[k]) for k in before_state)
    assert all(torch.equal(a, r.cos_cached) for a, r in zip(before_tables, rotary))


def test_a_checkpoint_saved_and_loaded_with_from_pretrained_works(tower, tmp_path):
    from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM

    lm.build("llava-llama", tower, layers=4).save_pretrained(tmp_path / "checkpoint")
    model = LlavaLlamaForCausalLM.from_pretrained(tmp_path / "checkpoint", attn_implementation="sdpa").eval()
    model.get_vision_tower().load_model()
    model.config.tokenizer_padding_side = "left"
    inputs = _inputs("llava-llama")
    with torch.no_grad():
        reference = model(**inputs).logits
        with tokenprune.attach(model, policy="sparsevlm", ratio=1.0) as handle:
            assert handle.adapter.name == "llava-codebase"
            assert torch.equal(model(**inputs).logits, reference)
