"""``attach()`` and the handle it returns."""

from __future__ import annotations

import weakref
from typing import Any

from torch import nn

from tokenprune.config import PruneConfig
from tokenprune.engine import Engine
from tokenprune.errors import (
    AlreadyAttachedError,
    ConfigError,
    DetachedError,
    UnsupportedModelError,
)
from tokenprune.plugins import available_adapters, get_policy, plugin_manager, resolve_adapter
from tokenprune.stats import PruneStats

_attached: weakref.WeakKeyDictionary[nn.Module, PruneHandle] = weakref.WeakKeyDictionary()


class PruneHandle:
    """The live attachment of a policy to a model.

    Use :attr:`stats` after a forward or ``generate`` call, and :meth:`detach`
    (or a ``with`` block) to restore the model exactly.
    """

    def __init__(self, model: nn.Module, engine: Engine) -> None:
        self.model = model
        self._engine: Engine | None = engine

    @property
    def engine(self) -> Engine:
        """The engine (raises :class:`DetachedError` after :meth:`detach`)."""
        if self._engine is None:
            raise DetachedError("this handle was detached")
        return self._engine

    @property
    def attached(self) -> bool:
        """False once :meth:`detach` ran."""
        return self._engine is not None

    @property
    def config(self) -> PruneConfig:
        """The validated configuration."""
        return self.engine.config

    @property
    def layers(self) -> tuple[int, ...]:
        """The pruning layers in use (defaults resolved and scaled)."""
        return self.engine.layers

    @property
    def policy(self) -> Any:
        """The policy instance."""
        return self.engine.policy

    @property
    def adapter(self) -> Any:
        """The adapter instance."""
        return self.engine.adapter

    @property
    def stats(self) -> PruneStats | None:
        """Statistics of the last request (None before the first one)."""
        return self.engine.stats

    def detach(self) -> None:
        """Remove every hook and all state; the model behaves as if never attached.

        Calling it twice is harmless.
        """
        if self._engine is None:
            return
        self._engine.remove()
        self._engine = None
        if _attached.get(self.model) is self:
            del _attached[self.model]

    def __enter__(self) -> PruneHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def __repr__(self) -> str:
        if self._engine is None:
            return "<PruneHandle detached>"
        return (
            f"<PruneHandle policy={self.config.policy!r} {self.config.budget.describe()} "
            f"layers={self.layers} adapter={self.adapter.name!r}>"
        )


def attach(
    model: nn.Module,
    policy: str | None = None,
    *,
    keep: int | None = None,
    ratio: float | None = None,
    equivalent: float | None = None,
    layers: tuple[int, ...] | list[int] | None = None,
    options: dict[str, Any] | None = None,
    config: PruneConfig | None = None,
) -> PruneHandle:
    """Attach a pruning policy to a loaded model; returns a :class:`PruneHandle`.

    Either pass ``config`` or the individual fields (``policy`` and one of
    ``keep`` / ``ratio`` / ``equivalent``). Nothing about the model changes but
    its forward hooks; a failed ``attach`` leaves none behind.

    Raises:
        ConfigError: invalid or conflicting configuration (including unknown
            policies and options).
        UnsupportedModelError: no adapter handles the model, or its attention
            setup cannot be pruned correctly.
        AlreadyAttachedError: the model already has a handle.
    """
    config = _build_config(config, policy, keep, ratio, equivalent, layers, options)
    if model in _attached:
        raise AlreadyAttachedError("this model already has a tokenprune handle; detach() it first")
    adapter_class = resolve_adapter(model)
    if adapter_class is None:
        supported = sorted({cls for a in available_adapters().values() for cls in a.model_classes})
        raise UnsupportedModelError(
            f"no tokenprune adapter handles {type(model).__name__}; supported: {', '.join(supported)}"
        )
    adapter = adapter_class(model)
    adapter.check_supported()
    policy_class = get_policy(config.policy)
    policy_obj = policy_class.from_config(config)
    num_layers = adapter.num_layers
    chosen = config.layers if config.layers is not None else policy_obj.layers_for(num_layers)
    bad = [layer for layer in chosen if not 1 <= layer < num_layers]
    if bad or not chosen:
        raise ConfigError(
            f"pruning layers {tuple(chosen)} do not fit a {num_layers}-layer decoder; "
            f"use layers between 1 and {num_layers - 1}"
        )
    if policy_obj.proportional_attention and adapter.attention_implementation() not in ("sdpa", "eager"):
        raise UnsupportedModelError(
            f"policy {config.policy!r} adds an attention bias, which needs attn_implementation "
            f"'sdpa' or 'eager' (model uses {adapter.attention_implementation()!r})"
        )
    handle = PruneHandle(model, engine=None)  # type: ignore[arg-type]
    engine = Engine(model, adapter, policy_obj, config, tuple(chosen), plugin_manager(), handle)
    engine.install()
    handle._engine = engine
    _attached[model] = handle
    return handle


def _build_config(
    config: PruneConfig | None,
    policy: str | None,
    keep: int | None,
    ratio: float | None,
    equivalent: float | None,
    layers: tuple[int, ...] | list[int] | None,
    options: dict[str, Any] | None,
) -> PruneConfig:
    fields = {"policy": policy, "keep": keep, "ratio": ratio, "equivalent": equivalent, "layers": layers, "options": options}
    given = {k: v for k, v in fields.items() if v is not None}
    if config is not None:
        if given:
            raise ConfigError(f"pass either config= or individual fields, not both (got {sorted(given)})")
        return config
    if policy is None:
        raise ConfigError("name a policy, e.g. attach(model, policy='sparsevlm', ratio=0.25)")
    if layers is not None:
        given["layers"] = tuple(layers)
    return PruneConfig.build(**given)
