"""Plugins: built-ins load through entry points like outside plugins; names never clash silently."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch
from models import ONE, batch, tiny_llava

import tokenprune
from tokenprune import PluginError, UnknownPluginError


def test_builtins_are_registered_through_the_entry_point_group():
    entry_points = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="tokenprune")}
    assert entry_points["random"] == "tokenprune.policies.random_policy"
    assert entry_points["llava"] == "tokenprune.adapters.llava"
    manager = tokenprune.plugin_manager()
    for name, module in entry_points.items():
        assert manager.get_plugin(name).__name__ == module
    assert "random" in tokenprune.available_policies()
    assert "llava" in tokenprune.available_adapters()


class KeepFirst(tokenprune.Policy):
    name = "test-keep-first"

    def select_row(self, ctx, row):
        return tokenprune.RowSelection(keep=torch.arange(ctx.planned_keep(row)))


class Outside:
    """An outside plugin: a policy plus event listeners."""

    def __init__(self):
        self.events, self.ends = [], []

    @tokenprune.hookimpl
    def tokenprune_policies(self):
        return [KeepFirst]

    @tokenprune.hookimpl
    def tokenprune_after_prune(self, event):
        self.events.append(event)

    @tokenprune.hookimpl
    def tokenprune_request_end(self, stats, handle):
        self.ends.append((stats, handle))


def test_outside_plugin_policy_and_events():
    plugin = Outside()
    tokenprune.register_plugin(plugin)
    try:
        assert "test-keep-first" in tokenprune.available_policies()
        model = tiny_llava()
        with torch.no_grad(), tokenprune.attach(model, policy="test-keep-first", keep=5, layers=(1, 2)) as handle:
            model(**batch(ONE))
        assert [e.record.layer for e in plugin.events] == [1, 2]
        assert plugin.events[-1].record.kept == [[0, 1, 2, 3, 4]]
        assert len(plugin.ends) == 1 and plugin.ends[0][1] is handle
        assert plugin.ends[0][0].records[-1].kept == [[0, 1, 2, 3, 4]]
    finally:
        tokenprune.unregister_plugin(plugin)
    assert "test-keep-first" not in tokenprune.available_policies()


def test_clashing_policy_name_is_refused():
    class Clash:
        @tokenprune.hookimpl
        def tokenprune_policies(self):
            class Random(tokenprune.Policy):
                name = "random"

            return [Random]

    with pytest.raises(PluginError, match="'random'"):
        tokenprune.register_plugin(Clash())
    assert tokenprune.available_policies()["random"].__module__ == "tokenprune.policies.random_policy"


def test_unknown_names_list_what_exists():
    with pytest.raises(UnknownPluginError, match="available: .*random"):
        tokenprune.get_policy("sparse-nothing")
    with pytest.raises(UnknownPluginError, match="unknown scorer step"):
        tokenprune.get_step("scorer", "nothing")


def test_steps_are_registered_and_found_by_kind_and_name():
    step = tokenprune.Step(kind="test-kind", name="double", fn=lambda x: 2 * x, description="doubles")

    class StepPlugin:
        @tokenprune.hookimpl
        def tokenprune_steps(self):
            return [step]

    plugin = StepPlugin()
    tokenprune.register_plugin(plugin)
    try:
        assert tokenprune.get_step("test-kind", "double")(21) == 42
        assert list(tokenprune.available_steps("test-kind")) == [("test-kind", "double")]
    finally:
        tokenprune.unregister_plugin(plugin)
