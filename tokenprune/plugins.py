"""The plugin manager: discovery, registration and name lookup.

All plugins, built-in or not, are loaded from the ``tokenprune`` entry-point
group by :func:`plugin_manager`; there is no other way in for built-ins.
"""

from __future__ import annotations

import importlib.metadata
from typing import TYPE_CHECKING, Any

import pluggy

from tokenprune import hookspec
from tokenprune.errors import PluginError, UnknownPluginError

if TYPE_CHECKING:
    from torch import nn

    from tokenprune.adapter import Adapter
    from tokenprune.models import DatasetSpec, ModelSpec
    from tokenprune.policy import Policy
    from tokenprune.steps import Step

ENTRY_POINT_GROUP = "tokenprune"
_manager: pluggy.PluginManager | None = None


class _DefaultAdapterResolution:
    """tokenprune's own, last-resort implementation of adapter resolution."""

    @hookspec.hookimpl(trylast=True)
    def tokenprune_resolve_adapter(self, model: nn.Module, adapters: list[type[Adapter]]) -> type[Adapter] | None:
        for adapter in adapters:
            if adapter.matches(model):
                return adapter
        return None


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, created and populated on first use."""
    global _manager
    if _manager is None:
        manager = pluggy.PluginManager("tokenprune")
        manager.add_hookspecs(hookspec)
        manager.register(_DefaultAdapterResolution(), name="tokenprune.default-resolution")
        _load_entry_points(manager)
        _manager = manager
    return _manager


def _load_entry_points(manager: pluggy.PluginManager) -> None:
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if manager.get_plugin(entry_point.name) is not None:
            continue  # the same distribution seen twice on sys.path
        try:
            plugin = entry_point.load()
        except Exception as exc:
            raise PluginError(
                f"plugin {entry_point.name!r} ({entry_point.value}) failed to load: {exc}"
            ) from exc
        if manager.is_registered(plugin):
            continue
        manager.register(plugin, name=entry_point.name)


def register_plugin(plugin: Any, name: str | None = None) -> None:
    """Register a plugin object or module at run time (e.g. in a notebook or test).

    Its names are checked for clashes right away.
    """
    manager = plugin_manager()
    manager.register(plugin, name=name)
    try:
        available_policies()
        available_adapters()
        available_steps()
        available_models()
        available_datasets()
    except PluginError:
        manager.unregister(plugin)
        raise


def unregister_plugin(plugin: Any) -> None:
    """Remove a plugin registered with :func:`register_plugin`."""
    plugin_manager().unregister(plugin)


def _named(results: list[list[Any]], what: str, key: Any) -> dict[Any, Any]:
    found: dict[Any, Any] = {}
    for batch in results:
        for item in batch or []:
            name = key(item)
            if name in found and found[name] is not item:
                raise PluginError(f"two plugins register the {what} {name!r}")
            found[name] = item
    return found


def available_policies() -> dict[str, type[Policy]]:
    """Registered policy classes by name (built-in and outside plugins)."""
    results = plugin_manager().hook.tokenprune_policies()
    return dict(sorted(_named(results, "policy", lambda cls: cls.name).items()))


def available_adapters() -> dict[str, type[Adapter]]:
    """Registered adapter classes by name (built-in and outside plugins)."""
    results = plugin_manager().hook.tokenprune_adapters()
    return dict(sorted(_named(results, "adapter", lambda cls: cls.name).items()))


def available_steps(kind: str | None = None) -> dict[tuple[str, str], Step]:
    """Registered steps keyed by ``(kind, name)``, optionally of one kind."""
    results = plugin_manager().hook.tokenprune_steps()
    steps = _named(results, "step", lambda step: (step.kind, step.name))
    return {k: v for k, v in sorted(steps.items()) if kind is None or k[0] == kind}


def available_models() -> dict[str, ModelSpec]:
    """Models registered by plugins that build offline, by name."""
    results = plugin_manager().hook.tokenprune_models()
    return dict(sorted(_named(results, "model", lambda spec: spec.name).items()))


def available_datasets() -> dict[str, DatasetSpec]:
    """Evaluation sets registered by plugins, by name."""
    results = plugin_manager().hook.tokenprune_datasets()
    return dict(sorted(_named(results, "dataset", lambda spec: spec.name).items()))


def get_dataset(name: str | None = None, model: str | None = None) -> DatasetSpec:
    """The dataset ``name``, or the first one meant for ``model`` when ``name`` is None."""
    datasets = available_datasets()
    if name is None:
        for spec in datasets.values():
            if model is None or spec.model == model:
                return spec
        raise UnknownPluginError(f"no registered dataset is meant for model {model!r}; pass --dataset")
    if name not in datasets:
        raise UnknownPluginError(f"unknown dataset {name!r}; available: {', '.join(datasets) or 'none'}")
    return datasets[name]


def get_model_spec(name: str | None = None) -> ModelSpec:
    """The registered model ``name``, or the default one when ``name`` is None."""
    models = available_models()
    if name is None:
        defaults = [spec for spec in models.values() if spec.default] or list(models.values())
        if not defaults:
            raise UnknownPluginError("no plugin registers a model; install an adapter plugin")
        return defaults[0]
    if name not in models:
        raise UnknownPluginError(f"unknown model {name!r}; available: {', '.join(models) or 'none'}")
    return models[name]


def get_policy(name: str) -> type[Policy]:
    """The policy class registered as ``name``; :class:`UnknownPluginError` otherwise."""
    policies = available_policies()
    if name not in policies:
        raise UnknownPluginError(
            f"unknown policy {name!r}; available: {', '.join(policies) or 'none'}"
        )
    return policies[name]


def get_step(kind: str, name: str) -> Step:
    """The step registered as ``(kind, name)``; :class:`UnknownPluginError` otherwise."""
    steps = available_steps(kind)
    if (kind, name) not in steps:
        names = ", ".join(n for _, n in steps) or "none"
        raise UnknownPluginError(f"unknown {kind} step {name!r}; available: {names}")
    return steps[(kind, name)]


def resolve_adapter(model: nn.Module) -> type[Adapter] | None:
    """The adapter class that handles ``model``, or None."""
    adapters = list(available_adapters().values())
    return plugin_manager().hook.tokenprune_resolve_adapter(model=model, adapters=adapters)
