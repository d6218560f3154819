"""Tests of the example plugin, written with tokenprune's test helpers."""

from __future__ import annotations

import torch
from hypothesis import given, settings

import tokenprune
from tokenprune.testing import assert_keep_all_exact, oracle_difference, score_vectors


def _model_and_inputs(batch_size=2):
    spec = tokenprune.get_model_spec("tiny-random-llava")
    model = spec.build()
    return model, spec.sample_inputs(model, batch_size)


def test_registered():
    assert "center" in tokenprune.available_policies()


def test_keep_all_is_exact():
    model, inputs = _model_and_inputs()
    assert_keep_all_exact(model, inputs, "center")


def test_oracle():
    model, inputs = _model_and_inputs()
    assert oracle_difference(model, inputs, policy="center", keep=16) <= 1e-5


def test_keeps_the_centre_of_an_8x8_grid():
    model, inputs = _model_and_inputs(1)
    with torch.no_grad(), tokenprune.attach(model, policy="center", keep=4) as handle:
        model(**inputs)
        kept = handle.stats.records[0].kept[0]
    assert kept == [27, 28, 35, 36]  # rows 3-4, columns 3-4


@settings(max_examples=25, deadline=None)
@given(score_vectors(min_size=1, max_size=30))
def test_top_k_keeps_original_order(scores):
    kept = tokenprune.top_k_in_order(scores, len(scores) // 2)
    assert kept.tolist() == sorted(kept.tolist())
