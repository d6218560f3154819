"""The llava-codebase adapter on tiny random original-LLaVA / MGM models (legacy environment).

Oracle: an unhooked forward whose layers from each pruning layer on hide the
dropped vision tokens (``tokenprune.testing``); the spliced sequence it runs
on is rebuilt from the model's own ``prepare_inputs_labels_for_multimodal``.
"""

from __future__ import annotations

import pytest

pytest.importorskip("llava", reason="needs the legacy environment (llava-torch, transformers 4.37)")

import legacy_models as lm  # noqa: E402
import torch  # noqa: E402

import tokenprune  # noqa: E402
from tokenprune.adapters.llava_codebase.layout import spliced_token_ids  # noqa: E402
from tokenprune.testing import max_kept_difference, oracle_masks, visible_sets  # noqa: E402

FAMILIES = ["llava-llama", "llava-mistral", "mgm-hd"]
POLICIES = ["random", "sparsevlm", "sparsevlm-reference", "fastv", "tome"]
ORACLE_TOLERANCE = 1e-5


def _batch(family: str, pad_side: str = "left", rows: int = 2) -> dict:
    """Two prompts of different lengths (the second with two images) and their images."""
    prompts = [[1, 5, 6, lm.IMAGE_TOKEN_INDEX, 7, 8, 9, 10], [1, lm.IMAGE_TOKEN_INDEX, 11, lm.IMAGE_TOKEN_INDEX, 12]]
    prompts = prompts[:rows]
    ids, mask = lm.prompts(prompts, pad_side)
    n_images = sum(p.count(lm.IMAGE_TOKEN_INDEX) for p in prompts)
    return {"input_ids": ids, "attention_mask": mask, "images": lm.images(family, n_images)}


def _with_padding_side(model, side: str):
    model.config.tokenizer_padding_side = side
    return model


def _spliced(model, inputs):
    """The decoder's sequence: ``(vision mask [B, M], attention mask [B, M])`` from the model's own splicing."""
    _, _, mask, _, embeds, _ = model.prepare_inputs_labels_for_multimodal(
        inputs["input_ids"], None, inputs["attention_mask"], None, None, inputs["images"]
    )
    ids, _ = spliced_token_ids(inputs["input_ids"], inputs["attention_mask"], mask, embeds.shape[1], lm.IMAGE_TOKEN_INDEX)
    return ids == lm.IMAGE_TOKEN_INDEX, mask


def _oracle_difference(model, inputs, **attach) -> float:
    with torch.no_grad(), tokenprune.attach(model, **attach) as handle:
        pruned = model(**inputs).logits
        stats, adapter = handle.stats, handle.adapter
    with torch.no_grad():
        vision, mask = _spliced(model, inputs)
        stages = visible_sets(stats, vision, mask)
        # layers before the first pruning layer keep the model's own mask
        with oracle_masks(adapter, mask, stages, pruned.dtype, model_mask=False):
            oracle = model(**inputs).logits
    return max_kept_difference(pruned, oracle, stats, mask)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_adapter_recognises_the_family(models, family):
    model = models(family)
    with tokenprune.attach(model, policy="random", ratio=0.5) as handle:
        assert handle.adapter.name == "llava-codebase"


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
def test_keep_all_forward_is_bit_exact(models, family, attn):
    # right-padded rows are re-laid out left-filled (same values, other slots): the oracle test covers them
    model = _with_padding_side(models(family, attn), "left")
    for rows in (1, 2):
        inputs = _batch(family, "left", rows)
        with torch.no_grad():
            reference = model(**inputs).logits
            for policy in ("random", "fastv", "sparsevlm"):
                with tokenprune.attach(model, policy=policy, ratio=1.0, layers=(2, 4)):
                    assert torch.equal(model(**inputs).logits, reference), policy


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
def test_keep_all_generate_is_bit_exact(models, family, attn):
    model = _with_padding_side(models(family, attn), "left")
    inputs = _batch(family)
    kwargs = dict(max_new_tokens=6, do_sample=False, output_scores=True, return_dict_in_generate=True)
    ids, mask, images = inputs["input_ids"], inputs["attention_mask"], inputs["images"]
    with torch.no_grad():
        reference = model.generate(ids, attention_mask=mask, images=images, **kwargs)
        with tokenprune.attach(model, policy="random", ratio=1.0, layers=(2, 4)):
            hooked = model.generate(ids, attention_mask=mask, images=images, **kwargs)
    assert torch.equal(hooked.sequences, reference.sequences)
    assert all(torch.equal(a, b) for a, b in zip(hooked.scores, reference.scores))


@pytest.mark.parametrize("pad_side", ["left", "right"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
def test_pruning_matches_the_oracle_on_kept_rows(models, family, attn, pad_side):
    model = _with_padding_side(models(family, attn), pad_side)
    inputs = _batch(family, pad_side)
    per_image = lm.TOKENS_PER_VIEW * lm.views_per_image(family)
    for policy, options in (("random", None), ("fastv", None), ("sparsevlm", {"recycler": "none"})):
        difference = _oracle_difference(model, inputs, policy=policy, keep=per_image // 4, layers=(2, 4), options=options)
        assert difference < ORACLE_TOLERANCE, (policy, difference)


def test_the_oracle_catches_renumbered_positions(models, monkeypatch):
    """Negative control: contiguous positions after pruning (the common bug) fail the oracle by far."""
    model = _with_padding_side(models("llava-llama"), "left")
    inputs = _batch("llava-llama")
    def contiguous(self, position_ids, index):
        return torch.arange(index.shape[1]).expand_as(index)

    monkeypatch.setattr(tokenprune.available_adapters()["llava-codebase"], "gather_position_ids", contiguous)
    difference = _oracle_difference(model, inputs, policy="random", keep=4, layers=(2,))
    assert difference > 100 * ORACLE_TOLERANCE


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("family", FAMILIES)
def test_every_policy_runs_through_generate_with_consistent_stats(models, family, policy):
    model = _with_padding_side(models(family), "left")
    inputs = _batch(family)
    with torch.no_grad(), tokenprune.attach(model, policy=policy, ratio=0.5) as handle:
        out = model(**inputs, use_cache=True)
        stats, layers = handle.stats, handle.layers
        generated = model.generate(
            inputs["input_ids"], attention_mask=inputs["attention_mask"], images=inputs["images"],
            max_new_tokens=4, do_sample=False, min_new_tokens=4,
        )
        generate_stats = handle.stats
    assert generated.shape[1] == 1 + 4  # the codebase returns [bos] + new tokens
    assert generate_stats.decode_steps == 3
    lengths = [keys.shape[-2] for keys, _ in out.past_key_values]
    assert stats.kv_cache.lengths == lengths
    n = lengths[0]
    for layer, length in enumerate(lengths):
        tokens = [row[layer] for row in stats.tokens_per_layer]
        assert length == (n if layer < layers[0] else max(tokens))
    for row in range(2):
        counts = stats.vision_per_layer[row]
        assert counts[0] == stats.vision_tokens[row] > 0
        assert counts[-1] < counts[0]
