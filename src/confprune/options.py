"""One convention for options: a factory group's config keys are its factory's keyword arguments,
checked against its signature (unknown keys, missing required ones, simple annotations)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from .errors import ConfigError

# Annotation names a config value may be checked against (others are not type-checked).
_SCALARS: dict[str, Callable[[Any], bool]] = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "None": lambda v: v is None,
    "list": lambda v: isinstance(v, (list, tuple)),
    "tuple": lambda v: isinstance(v, (list, tuple)),
    "Sequence": lambda v: isinstance(v, (list, tuple)),
    "dict": lambda v: isinstance(v, Mapping),
    "Mapping": lambda v: isinstance(v, Mapping),
}


def _type_ok(annotation: Any, value: Any) -> tuple[bool, str]:
    """(ok, expected) for a value against a (string) annotation such as ``int | None`` or
    ``Sequence[int]``; annotations we do not understand accept anything."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    names = [part.strip().split("[")[0].split(".")[-1] for part in text.split("|")]
    if not all(n in _SCALARS for n in names):
        return True, text
    return any(_SCALARS[n](value) for n in names), text


def options_of(factory: Callable[..., Any], skip: tuple[str, ...] = ()) -> dict[str, inspect.Parameter]:
    """The keyword arguments a factory accepts (its options), by name, minus ``skip``."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {n: p for n, p in inspect.signature(factory).parameters.items() if p.kind in kinds and n not in skip}


def check_options(
    group: str, factory: Callable[..., Any], options: Mapping[str, Any], *, skip: tuple[str, ...] = (),
    also: Mapping[str, inspect.Parameter] | None = None, what: str = "",
) -> None:
    """Check a factory group's options against the factory's signature: every key must be one of
    its keyword arguments (an unknown or misspelt key fails, naming it and listing the allowed
    ones), every required argument must be given, and values must match simple annotations
    (int, float, bool, str, None, sequences, mappings). ``also``: extra accepted parameters."""
    params = {**options_of(factory, skip), **dict(also or {})}
    label = what or getattr(factory, "__name__", "the factory")
    for key, value in options.items():
        if key not in params:
            allowed = ", ".join(params) if params else "no options"
            raise ConfigError(f"{group}.{key}", value, f"the keyword arguments of {label}: {allowed}")
        ok, expected = _type_ok(params[key].annotation, value)
        if not ok:
            raise ConfigError(f"{group}.{key}", value, f"a value of type {expected} ({label})")
    for key, p in params.items():
        if p.default is inspect.Parameter.empty and key not in options:
            raise ConfigError(f"{group}.{key}", None, f"a value: {label} requires it")


__all__ = ["check_options", "options_of"]
