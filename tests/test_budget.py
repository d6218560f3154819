"""Budgets are met within rounding (property-based)."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tokenprune import Budget, BudgetError, PruneConfig, equivalent_tokens, plan_kept_counts


@st.composite
def plans(draw):
    num_layers = draw(st.integers(2, 40))
    layers = sorted(draw(st.sets(st.integers(1, num_layers - 1), min_size=1, max_size=min(4, num_layers - 1))))
    n_vision = draw(st.integers(1, 700))
    return n_vision, tuple(layers), num_layers


@given(plans(), st.data())
def test_keep_and_ratio_budgets_are_met_exactly(plan, data):
    n, layers, depth = plan
    keep = data.draw(st.integers(1, n))
    counts = plan_kept_counts(n, Budget("keep", keep), layers, depth)
    assert counts[-1] == keep
    assert all(1 <= c <= n for c in counts)
    assert counts == sorted(counts, reverse=True)
    ratio = data.draw(st.floats(0.01, 1.0))
    assert plan_kept_counts(n, Budget("ratio", ratio), layers, depth)[-1] == max(1, min(n, round(ratio * n)))


@given(plans(), st.data())
def test_equivalent_budget_is_met_within_rounding(plan, data):
    n, layers, depth = plan
    target = data.draw(st.floats(1.0, float(n)))
    try:
        counts = plan_kept_counts(n, Budget("equivalent", target), layers, depth)
    except BudgetError as exc:
        assert "below" in str(exc)
        lowest = equivalent_tokens(n, plan_kept_counts(n, Budget("keep", 1), layers, depth), layers, depth)
        assert target < lowest + 1.0
        return
    achieved = equivalent_tokens(n, counts, layers, depth)
    assume(counts[-1] > 1 or achieved <= target + 1.0)  # clamped at one token: cannot go lower
    assert abs(achieved - target) <= 1.0
    assert counts == sorted(counts, reverse=True)


@pytest.mark.parametrize("budget", [Budget("keep", 65), Budget("equivalent", 64.5)])
def test_budget_above_vision_tokens_is_refused(budget):
    with pytest.raises(BudgetError, match="at most 64"):
        plan_kept_counts(64, budget, (2,), 32)


def test_single_layer_equivalent_solves_the_linear_relation():
    # 32 layers, prune at 2: eq = (2*576 + 30*k)/32 -> k = (32*192 - 1152)/30 = 166.4
    assert plan_kept_counts(576, Budget("equivalent", 192), (2,), 32) == [166]


def test_config_from_toml_file(tmp_path):
    path = tmp_path / "prune.toml"
    path.write_text('policy = "random"\nratio = 0.25\nlayers = [2, 6]\n[options]\nseed = 4\n')
    config = PruneConfig.from_file(path)
    assert config.budget == Budget("ratio", 0.25) and config.layers == (2, 6) and config.options == {"seed": 4}
    path.write_text('policy = "random"\nratio = 0.25\nlayer = [2]\n')
    with pytest.raises(ValueError, match="layer: unknown key"):
        PruneConfig.from_file(path)
