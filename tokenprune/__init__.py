"""tokenprune: prune and merge visual tokens inside a VLM's language decoder.

Public surface (plugins import only these names)::

    handle = tokenprune.attach(model, policy="random", keep=64)
    model.generate(**inputs)
    handle.stats
    handle.detach()
"""

from __future__ import annotations

from tokenprune.adapter import Adapter, LayerCall, VisionGrid, apply_rotary, gather_sequence
from tokenprune.budget import Budget, default_weights, equivalent_tokens, plan_kept_counts
from tokenprune.config import PruneConfig
from tokenprune.context import LayerContext, RequestContext
from tokenprune.errors import (
    AlreadyAttachedError,
    BudgetError,
    ConfigError,
    DetachedError,
    PluginError,
    TokenpruneError,
    UnknownPluginError,
    UnsupportedInputError,
    UnsupportedModelError,
)
from tokenprune.events import PruneEvent
from tokenprune.handle import PruneHandle, attach
from tokenprune.hookspec import hookimpl
from tokenprune.models import DatasetSpec, ModelSpec
from tokenprune.ops import top_k_in_order
from tokenprune.plugins import (
    available_adapters,
    available_datasets,
    available_models,
    available_policies,
    available_steps,
    get_dataset,
    get_model_spec,
    get_policy,
    get_step,
    plugin_manager,
    register_plugin,
    unregister_plugin,
)
from tokenprune.policy import Policy, PolicyOptions, scale_layers
from tokenprune.selection import RowSelection
from tokenprune.stats import FlopsReport, KVCacheReport, PruneRecord, PruneStats
from tokenprune.steps import Step

__version__ = "0.1.0"

__all__ = [
    "Adapter",
    "AlreadyAttachedError",
    "Budget",
    "BudgetError",
    "ConfigError",
    "DatasetSpec",
    "DetachedError",
    "FlopsReport",
    "KVCacheReport",
    "LayerCall",
    "LayerContext",
    "ModelSpec",
    "PluginError",
    "Policy",
    "PolicyOptions",
    "PruneConfig",
    "PruneEvent",
    "PruneHandle",
    "PruneRecord",
    "PruneStats",
    "RequestContext",
    "RowSelection",
    "Step",
    "TokenpruneError",
    "UnknownPluginError",
    "UnsupportedInputError",
    "UnsupportedModelError",
    "VisionGrid",
    "apply_rotary",
    "attach",
    "available_adapters",
    "available_datasets",
    "available_models",
    "available_policies",
    "available_steps",
    "default_weights",
    "equivalent_tokens",
    "gather_sequence",
    "get_dataset",
    "get_model_spec",
    "get_policy",
    "get_step",
    "hookimpl",
    "plan_kept_counts",
    "plugin_manager",
    "register_plugin",
    "scale_layers",
    "top_k_in_order",
    "unregister_plugin",
    "__version__",
]
