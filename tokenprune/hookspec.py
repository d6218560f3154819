"""Hook specifications: the complete plugin API of tokenprune.

A plugin is any module or object with functions marked ``@tokenprune.hookimpl``
and named after the hooks below. Plugins are found through the ``tokenprune``
entry-point group (``[project.entry-points.tokenprune]`` in a
``pyproject.toml``); the built-in policies and adapters are loaded exactly that
way. Plugins can also be registered at run time with
:func:`tokenprune.register_plugin`.

These docstrings are the reference documentation of every hook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from torch import nn

    from tokenprune.adapter import Adapter
    from tokenprune.events import PruneEvent
    from tokenprune.models import DatasetSpec, ModelSpec
    from tokenprune.policy import Policy
    from tokenprune.stats import PruneStats
    from tokenprune.steps import Step

hookspec = pluggy.HookspecMarker("tokenprune")
hookimpl = pluggy.HookimplMarker("tokenprune")


@hookspec
def tokenprune_policies() -> list[type[Policy]]:
    """Return the policy classes this plugin provides.

    Each class subclasses :class:`tokenprune.Policy` and carries a unique
    ``name``; the name is what users pass as ``policy=``. A name registered by
    two plugins is an error (:class:`tokenprune.PluginError`), never a silent
    override.
    """


@hookspec
def tokenprune_adapters() -> list[type[Adapter]]:
    """Return the adapter classes this plugin provides.

    Each class subclasses :class:`tokenprune.Adapter`, carries a unique
    ``name`` and answers :meth:`tokenprune.Adapter.matches` for the models it
    handles. Used for listing and for the default adapter resolution.
    """


@hookspec(firstresult=True)
def tokenprune_resolve_adapter(model: nn.Module, adapters: list[type[Adapter]]) -> type[Adapter] | None:
    """Choose the adapter class for ``model``; the first non-None answer wins.

    ``adapters`` are all registered adapter classes. tokenprune's own
    implementation runs last and returns the first class whose ``matches``
    accepts the model, so a plugin only implements this hook to override that
    choice (mark it ``tryfirst=True``).
    """


@hookspec
def tokenprune_steps() -> list[Step]:
    """Return named policy steps this plugin provides.

    A step is a :class:`tokenprune.Step`: a ``kind`` (e.g. ``"scorer"``,
    ``"budget"``, ``"recycler"``), a ``name`` and a callable. Policies that are
    recipes of steps look them up with :func:`tokenprune.get_step`, so one
    policy's step can be swapped for another's through configuration.
    ``(kind, name)`` pairs must be unique.
    """


@hookspec
def tokenprune_models() -> list[ModelSpec]:
    """Return named models this plugin can build or load without a download.

    Each :class:`tokenprune.ModelSpec` has a unique ``name``, a ``build``
    callable returning the model in eval mode, and ``sample_inputs`` returning
    a ready batch for it. ``tokenprune run``, ``bench`` and ``visualize`` use them; the
    ``default`` flag marks the model the CLI uses when none is named (at most
    one registered model should set it).
    """


@hookspec
def tokenprune_datasets() -> list[DatasetSpec]:
    """Return labelled evaluation sets (:class:`tokenprune.DatasetSpec`) for ``tokenprune bench``.

    Each names the model it is meant for and evaluates a batch of examples
    with whatever policy is attached. Names must be unique.
    """


@hookspec
def tokenprune_after_prune(event: PruneEvent) -> None:
    """Called after the engine applied a policy's selection at a pruning layer.

    ``event`` carries the layer, the policy's per-row selections expressed in
    ORIGINAL vision-token indices, and the request. Every implementation is
    called (metrics, visualisation, logging). Must not modify tensors.
    """


@hookspec
def tokenprune_request_end(stats: PruneStats, handle: Any) -> None:
    """Called when the prefill of a pruned request finished.

    ``stats`` is the request's :class:`tokenprune.PruneStats` (also available
    as ``handle.stats``); ``handle`` is the :class:`tokenprune.PruneHandle`.
    """
