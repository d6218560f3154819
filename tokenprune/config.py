"""The pydantic configuration of one attachment.

``PruneConfig`` holds what every policy shares (policy name, one budget,
pruning layers); policy-specific ``options`` are validated later by the
policy's own ``Options`` model, so unknown keys are errors there too.
Configs load from TOML or YAML files with :meth:`PruneConfig.from_file`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tokenprune.budget import Budget
from tokenprune.errors import ConfigError


class PruneConfig(BaseModel):
    """What to prune, how much, and where.

    Exactly one of ``keep``, ``ratio`` and ``equivalent`` must be given.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: str = Field(description="Registered policy name, e.g. 'random' or 'sparsevlm'.")
    keep: int | None = Field(
        default=None, gt=0, description="Vision tokens kept after the last pruning layer."
    )
    ratio: float | None = Field(
        default=None, gt=0.0, le=1.0, description="Fraction of each row's vision tokens kept."
    )
    equivalent: float | None = Field(
        default=None,
        gt=0.0,
        description="Average vision tokens entering each decoder layer (matched prefill cost).",
    )
    layers: tuple[int, ...] | None = Field(
        default=None,
        description=(
            "Pruning layers: layer L is the first decoder layer that sees the reduced set; its "
            "scores come from layer L-1. None uses the policy's default, scaled to the depth."
        ),
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Policy-specific options, validated by the policy."
    )

    @field_validator("layers")
    @classmethod
    def _layers_sorted_unique(cls, layers: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if layers is None:
            return None
        if not layers:
            raise ValueError("give at least one pruning layer, or leave 'layers' unset")
        if any(layer < 1 for layer in layers):
            raise ValueError(
                "pruning layers must be >= 1: layer 0 would drop tokens before any attention "
                "and break the positions of later generated tokens"
            )
        if list(layers) != sorted(set(layers)):
            raise ValueError(f"pruning layers must be strictly increasing, got {layers}")
        return layers

    @model_validator(mode="after")
    def _exactly_one_budget(self) -> PruneConfig:
        given = [name for name in ("keep", "ratio", "equivalent") if getattr(self, name) is not None]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise ValueError(f"give exactly one budget of keep / ratio / equivalent (got {found})")
        return self

    @property
    def budget(self) -> Budget:
        """The single budget of this config."""
        for kind in ("keep", "ratio", "equivalent"):
            value = getattr(self, kind)
            if value is not None:
                return Budget(kind, float(value))  # type: ignore[arg-type]
        raise AssertionError("validated config has a budget")

    @classmethod
    def build(cls, **values: Any) -> PruneConfig:
        """Validate ``values``; raise :class:`ConfigError` with a one-line-per-problem message."""
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, "config")) from None

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> PruneConfig:
        """Load a config from a ``.toml``, ``.yaml`` or ``.yml`` file; ``overrides`` win."""
        data = load_mapping(Path(path))
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.build(**data)


def format_validation_error(exc: ValidationError, what: str) -> str:
    """Turn a pydantic error into ``invalid <what>: field: message; ...``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or what
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{loc}: {msg}")
    return f"invalid {what}: " + "; ".join(parts)


def load_mapping(path: Path) -> dict[str, Any]:
    """Read a TOML or YAML file into a dict, with clear errors."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ConfigError("YAML configs need PyYAML: pip install pyyaml (or use TOML)") from None
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file must end in .toml, .yaml or .yml: {path}")
    except ConfigError:
        raise
    except Exception as exc:  # parse errors of either format
        raise ConfigError(f"cannot parse {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys")
    return data
