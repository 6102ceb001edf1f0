"""Command-line flags generated from a settings model: every field gets `--field-name`, its help
is the Field's description and default, its type and choices come from the annotation. One
source for a setting's name, type, default and words; flags left out are None (not given), so
the layers below them (TOML, environment, defaults) show through.

Not generated: nested models (a service adds shortcuts for those) and inline secrets (a token on
a command line is visible to every user of the machine: use the *_file setting or the
environment)."""

from __future__ import annotations

import argparse
import enum
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

SIMPLE = (int, float, str, Path)


def _flag_type(annotation: Any) -> tuple[Any, list[str] | None] | None:
    """(argparse type, choices) for an annotation, or None when it gets no flag."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _flag_type(args[0])
    if origin is typing.Literal:
        return str, [str(a) for a in typing.get_args(annotation)]
    if isinstance(annotation, type):
        if issubclass(annotation, bool):
            return bool, None
        if issubclass(annotation, enum.Enum):
            return str, [str(m.value) for m in annotation]
        if issubclass(annotation, SecretStr | BaseModel):
            return None
        if issubclass(annotation, SIMPLE):
            return annotation, None
    return None


def _help(field: FieldInfo) -> str:
    text = (field.description or "").rstrip(".")
    default = field.default
    if field.default_factory is not None or default in (PydanticUndefined, None, ""):
        return text
    if "default" in text.lower():
        return text
    shown = getattr(default, "value", default)
    return f"{text} (default {shown})" if text else f"default {shown}"


def add_settings_flags(
    parser: argparse.ArgumentParser,
    model: type[BaseModel],
    *,
    skip: frozenset[str] | set[str] = frozenset(),
    help_overrides: dict[str, str] | None = None,
) -> list[str]:
    """Add a flag per field of `model`; returns the field names that got one."""
    names = []
    for name, field in model.model_fields.items():
        kind = None if name in skip else _flag_type(field.annotation)
        if kind is None:
            continue
        typ, choices = kind
        flag = "--" + name.replace("_", "-")
        text = (help_overrides or {}).get(name) or _help(field)
        if typ is bool:
            parser.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text
            )
        else:
            parser.add_argument(flag, dest=name, type=typ, choices=choices, default=None, help=text)
        names.append(name)
    return names


def given(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """The flags the user gave (None: not given, the lower layers decide)."""
    return {n: v for n in names if (v := getattr(args, n, None)) is not None}
