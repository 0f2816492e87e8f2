"""The two errors a user sees for bad input: a library option (:class:`OptionError`, named by its
keyword argument) and a configuration value (:class:`ConfigError`, named by its full config key).
Both say the key, the value and what is allowed. No imports: every layer may raise them."""

from __future__ import annotations

from typing import Any


class OptionError(ValueError):
    """An option a library function refuses. The config check re-raises it as a
    :class:`ConfigError` under the full config key."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(f"{key}={value!r} is not allowed; allowed: {allowed}")
        self.key, self.value, self.allowed = key, value, allowed


class ConfigError(ValueError):
    """Invalid configuration value (key, value and what is allowed are in the message)."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(f"invalid config: {key}={value!r}; allowed: {allowed}")
        self.key, self.value, self.allowed = key, value, allowed
