"""The policy contract: how a pruning method plugs into the engine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from tokenprune.config import PruneConfig, format_validation_error
from tokenprune.errors import ConfigError

if TYPE_CHECKING:
    from tokenprune.context import LayerContext, RequestContext
    from tokenprune.selection import RowSelection


class PolicyOptions(BaseModel):
    """Base of every policy's options model: frozen, unknown keys are errors.

    Subclass it and declare fields with ``pydantic.Field(description=...)``;
    the descriptions appear in ``tokenprune policies``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


class Policy:
    """Base class of pruning policies.

    A subclass sets :attr:`name`, optionally :attr:`Options` and
    :attr:`default_layers`, and implements :meth:`select`. The engine calls
    :meth:`begin_request` once per request (at prefill, before the decoder
    runs) and :meth:`select` at each pruning layer; it handles batching,
    positions, masks, KV cache and statistics.
    """

    #: registered name (``policy=`` in the config)
    name: ClassVar[str] = ""
    #: one line for listings
    description: ClassVar[str] = ""
    #: options model, validated from ``PruneConfig.options``
    Options: ClassVar[type[PolicyOptions]] = PolicyOptions
    #: default pruning layers for a decoder of ``reference_depth`` layers
    default_layers: ClassVar[tuple[int, ...]] = (2,)
    #: depth the default layers are written for; scaled to the model's depth
    reference_depth: ClassVar[int] = 32

    def __init__(self, options: PolicyOptions, config: PruneConfig) -> None:
        self.options = options
        self.config = config

    @classmethod
    def from_config(cls, config: PruneConfig) -> Policy:
        """Validate ``config.options`` with :attr:`Options` and build the policy."""
        return cls(cls.validate_options(config.options), config)

    @classmethod
    def validate_options(cls, options: dict[str, Any]) -> PolicyOptions:
        """Options model from a dict; :class:`ConfigError` names each bad key."""
        try:
            return cls.Options(**options)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, f"options for policy {cls.name!r}")) from None

    @property
    def proportional_attention(self) -> bool:
        """If True, the engine adds ``log(size)`` of each key to attention logits (token merging)."""
        return False

    def layers_for(self, num_layers: int) -> tuple[int, ...]:
        """Pruning layers for a decoder of ``num_layers`` layers (default: scaled defaults)."""
        return scale_layers(self.default_layers, self.reference_depth, num_layers)

    def schedule_weights(self, n_stages: int) -> tuple[float, ...] | None:
        """Shape of the kept-count schedule over the pruning layers (None: linear)."""
        return None

    def begin_request(self, request: RequestContext) -> None:
        """Per-request preparation (e.g. choose rater tokens); default does nothing."""

    def select(self, ctx: LayerContext) -> list[RowSelection]:
        """Choose, per row, which current vision tokens survive this pruning layer.

        The default calls :meth:`select_row` for each row that has vision
        tokens and keeps nothing to decide for rows without any. Override it
        to decide for the whole batch at once.
        """
        from tokenprune.selection import RowSelection

        selections = []
        for row in range(ctx.batch_size):
            if ctx.vision_slots(row).numel():
                selections.append(self.select_row(ctx, row))
            else:
                selections.append(RowSelection.keep_all(0, ctx.hidden_states.device))
        return selections

    def select_row(self, ctx: LayerContext, row: int) -> RowSelection:
        """Decide for one row that has vision tokens (used by the default :meth:`select`)."""
        raise NotImplementedError(f"policy {self.name!r} implements neither select nor select_row")


def scale_layers(layers: tuple[int, ...], reference_depth: int, num_layers: int) -> tuple[int, ...]:
    """Scale pruning layers written for ``reference_depth`` to ``num_layers``.

    Results are strictly increasing and within ``[1, num_layers - 1]`` (as
    many as fit).
    """
    scaled: list[int] = []
    for layer in layers:
        value = max(1, round(layer * num_layers / reference_depth))
        if scaled and value <= scaled[-1]:
            value = scaled[-1] + 1
        if value <= num_layers - 1:
            scaled.append(value)
    return tuple(scaled)
