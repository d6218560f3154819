"""Typed errors raised by tokenprune.

Every error the library raises on purpose derives from :class:`TokenpruneError`,
so callers (and the CLI) can tell a refused input from a bug. Each also derives
from the closest built-in exception, so generic ``except ValueError`` code keeps
working.
"""

from __future__ import annotations


class TokenpruneError(Exception):
    """Base class of every error tokenprune raises deliberately."""


class ConfigError(TokenpruneError, ValueError):
    """A configuration value is invalid (bad budget, bad layers, bad option)."""


class UnknownPluginError(ConfigError, KeyError):
    """A policy, adapter or step name is not registered.

    The message lists the names that are available.
    """

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class PluginError(TokenpruneError, RuntimeError):
    """A plugin is broken: it failed to load or registered a clashing name."""


class UnsupportedModelError(TokenpruneError, TypeError):
    """The model's class or attention setup cannot be pruned correctly."""


class UnsupportedInputError(TokenpruneError, ValueError):
    """A forward call carries input the engine refuses (e.g. ``labels``)."""


class BudgetError(UnsupportedInputError):
    """The requested budget does not fit the vision tokens of a request."""


class AlreadyAttachedError(TokenpruneError, RuntimeError):
    """``attach`` was called on a model that already has a tokenprune handle."""


class DetachedError(TokenpruneError, RuntimeError):
    """A handle was used after ``detach()``."""
