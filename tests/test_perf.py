"""Pieces of the speed benchmark that can be checked without timing anything."""

from __future__ import annotations

import pytest
import torch

import tokenprune
from tokenprune.perf import PerfPlan, Timing, achievable_speedup, ideal_speedup, theoretical_kv_bytes
from tokenprune.perf_report import _compress
from tokenprune.stats import LayerDims


def _stats(model, inputs, **attach):
    with torch.no_grad(), tokenprune.attach(model, **attach) as handle:
        model(**inputs)
        return handle.stats


def test_plan_refuses_bad_settings():
    with pytest.raises(tokenprune.ConfigError):
        PerfPlan(policies=())
    with pytest.raises(tokenprune.ConfigError):
        PerfPlan(policies=("random",), repeats=0)
    with pytest.raises(tokenprune.ConfigError):
        PerfPlan(policies=("random",), scaling_fraction=1.5)
    plan = PerfPlan(policies=("random", "fastv"))
    assert plan.scaling_policies == ("random", "fastv") and plan.keep_all_policy == "random"
    assert PerfPlan(policies=("fastv",), keep_all_policy="sparsevlm").keep_all_policy == "sparsevlm"


def test_kv_bytes_formula_equals_the_cache_on_a_padded_batch():
    from tokenprune.adapters.llava import tiny_random_inputs, tiny_random_llava

    model = tiny_random_llava()
    inputs = tiny_random_inputs(model, batch_size=3)
    stats = _stats(model, inputs, policy="sparsevlm", ratio=0.3)
    dims = LayerDims.from_config(model.config.text_config)
    assert theoretical_kv_bytes(stats, dims, 4) == stats.kv_cache.pruned_bytes
    # the rows keep different counts, so only the widest-row rectangle gives the cache's bytes
    widest = [max(row[layer] for row in stats.tokens_per_layer) for layer in range(stats.num_layers)]
    assert any(row != widest for row in stats.tokens_per_layer)


def test_speedups_follow_the_kept_counts():
    from tokenprune.adapters.llava import tiny_random_inputs, tiny_random_llava

    model = tiny_random_llava()
    stats = _stats(model, tiny_random_inputs(model), policy="random", ratio=0.25)
    assert ideal_speedup(stats) == pytest.approx(stats.flops.baseline / stats.flops.pruned)
    counts = stats.tokens_per_layer[0]
    # a decoder whose layer time is proportional to the token count gives the token ratio
    linear = {n: n * 1e-3 for n in set(counts)}
    assert achievable_speedup(stats, linear) == pytest.approx(max(counts) * len(counts) / sum(counts))
    assert achievable_speedup(None, linear) is None


def test_median_and_sections_of_a_timing():
    timing = Timing("x", None, seconds=[3.0, 1.0, 2.0], sections=[{"select": 0.1}, {"select": 0.3}, {}])
    assert timing.median == 2.0
    assert timing.section_median("select") == pytest.approx(0.1)
    assert timing.section_median("probe") == 0.0


def test_per_layer_counts_are_compressed_in_runs():
    assert _compress([616, 616, 70, 70, 70, 5]) == "616×2, 70×3, 5"
    assert _compress([3]) == "3"
