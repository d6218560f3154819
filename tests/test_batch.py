"""A row's result in a padded batch equals its result alone."""

from __future__ import annotations

import pytest
import torch
from models import MIXED, TWO_LEFT, UNEVEN, batch, tiny_llava

import tokenprune

TOL = 1e-5


@pytest.mark.parametrize("rows", [TWO_LEFT, MIXED, UNEVEN], ids=["prompt-lengths", "image-and-text-only", "uneven-vision"])
@pytest.mark.parametrize("padding", ["left", "right"])
def test_row_in_batch_equals_row_alone(rows, padding):
    model = tiny_llava()
    inputs = batch(rows, padding=padding)
    with torch.no_grad(), tokenprune.attach(model, policy="random", keep=12, layers=(1, 2)) as handle:
        together = model(**inputs).logits
        batch_stats = handle.stats
        for row in range(len(rows)):
            alone_inputs = batch(rows[row : row + 1], padding=padding, seed=1)
            if "pixel_values" in alone_inputs:
                first = sum(r.images for r in rows[:row])
                alone_inputs["pixel_values"] = inputs["pixel_values"][first : first + rows[row].images]
            alone = model(**alone_inputs).logits[0]
            alone_stats = handle.stats
            if batch_stats.vision_tokens[row]:
                assert alone_stats.records[-1].kept[0] == batch_stats.records[-1].kept[row]
            # compare every output slot by its original position
            origin_alone = alone_stats.output_origin[0]
            origin_batch = batch_stats.output_origin[row]
            offset = inputs["input_ids"].shape[1] - alone_inputs["input_ids"].shape[1] if padding == "left" else 0
            for slot, position in enumerate(origin_alone.tolist()):
                if position < 0 or not alone_inputs["attention_mask"][0, position]:
                    continue
                batch_slot = int((origin_batch == position + offset).nonzero()[0])
                assert torch.allclose(together[row, batch_slot], alone[slot], atol=TOL, rtol=0)


def test_generate_in_batch_equals_generate_alone():
    model = tiny_llava()
    inputs = batch(UNEVEN)
    with torch.no_grad(), tokenprune.attach(model, policy="random", keep=12, layers=(1,)):
        together = model.generate(**inputs, max_new_tokens=6, do_sample=False)
        for row in range(2):
            alone_inputs = batch(UNEVEN[row : row + 1])
            first = sum(r.images for r in UNEVEN[:row])
            alone_inputs["pixel_values"] = inputs["pixel_values"][first : first + UNEVEN[row].images]
            alone = model.generate(**alone_inputs, max_new_tokens=6, do_sample=False)
            assert torch.equal(together[row, -6:], alone[0, -6:])
