"""Run-config keys as declarations: one :class:`Option` per key, its type, default, check and doc.

A leaf module (it imports nothing from the app): the common keys (:mod:`fedapp.config`) and every
algorithm's own keys (its declaration in ``strategies/``) are written with it, and the config,
``pyproject.toml``'s ``[tool.flwr.app.config]`` table and the README's key table are derived
from those declarations.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

Value = bool | int | float | str


class ConfigError(ValueError):
    """A run-config key has a value that is not allowed."""


@dataclass(frozen=True)
class Option:
    """One run-config key.

    ``check`` decides whether a value is allowed (``allowed`` says in words what is); ``choices``
    is the short form for string keys with a fixed set of values. ``sets_defaults`` maps a value
    of this key to defaults of other keys (as a preset does, see :mod:`fedapp.config`).
    """

    key: str
    default: Value
    doc: str
    allowed: str = ""
    check: Callable[[Any], bool] | None = None
    choices: tuple[str, ...] = ()
    sets_defaults: Mapping[str, Mapping[str, Value]] = field(default_factory=dict)

    @property
    def kind(self) -> type:
        """The value type, that of the default (bool before int: ``True`` is an int)."""
        for kind in (bool, int, float, str):
            if isinstance(self.default, kind):
                return kind
        raise TypeError(f"option {self.key!r}: default {self.default!r} is not a bool, int, float or str")

    @property
    def attribute(self) -> str:
        """The snake_case name code reads it by (``config.weight_decay`` for ``weight-decay``)."""
        return self.key.replace("-", "_")

    def coerce(self, value: Any) -> Value:
        """``value`` as this option's type (Flower gives str/int/float/bool), or ConfigError."""
        kind = self.kind
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            raise ConfigError(f"{self.key}={value!r} is not allowed; allowed: true or false")
        if kind is int:
            if isinstance(value, bool) or not (
                isinstance(value, int) or (isinstance(value, float) and value.is_integer())
            ):
                raise ConfigError(f"{self.key}={value!r} is not allowed; allowed: an integer")
            return int(value)
        if kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{self.key}={value!r} is not allowed; allowed: a finite number")
            return float(value)
        if not isinstance(value, str):
            raise ConfigError(f"{self.key}={value!r} is not allowed; allowed: a string")
        return value

    def validate(self, value: Value, choices: tuple[str, ...] | None = None) -> None:
        """Raise ConfigError unless ``value`` is allowed (``choices`` replaces the declared ones)."""
        allowed_values = self.choices if choices is None else choices
        if allowed_values and value not in allowed_values:
            raise ConfigError(f"{self.key}={value!r} is not allowed; allowed: {', '.join(allowed_values)}")
        if self.check is not None and not self.check(value):
            require(False, self.key, value, self.allowed)


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise the one error every misuse gets: the key, the value and what is allowed."""
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed; allowed: {allowed}")


def option_table(options: list[Option] | tuple[Option, ...], origin: str) -> dict[str, Option]:
    """``key -> Option``; a key declared twice is a programming error naming both places."""
    table: dict[str, Option] = {}
    for option in options:
        if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", option.key):
            raise ValueError(f"run-config key {option.key!r} must be kebab-case ({origin}): code reads "
                             "it as an attribute with '-' turned into '_'")
        if option.key in table:
            raise ValueError(f"run-config key {option.key!r} is declared twice ({origin})")
        option.kind  # noqa: B018 - fail early on an unsupported default type
        table[option.key] = option
    return table
