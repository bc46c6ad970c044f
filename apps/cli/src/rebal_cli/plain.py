"""Option values of the plain types (str, Path, float) taken as typer takes them, without pydantic.

typer (0.29) turns each option's text into its declared type through a pydantic `TypeAdapter` that it
builds when the command runs, for every option of the command, given or not: for `rebal plan`, pydantic
imported and thirteen adapters built, some 0.06 s of a 1.1 s run at 200k wallets (docs/performance.md,
issue 17). A command made with `cls=PlainCommand` takes a given value of these types the way typer's
adapter would give it, with nothing built; an option left out costs nothing (typer gives its default
without coercing it). Whatever this module does not know to give exactly as typer does (a number not
written as plain digits, a path that cannot be read, other types or option settings) goes to typer's
own coercion, so every message and exit code for a bad argument stays typer's.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any, TypeVar

from typer._click import Context, Parameter
from typer._coercion import RuntimeParam, TypeDescriptor, build_runtime_param
from typer.core import TyperCommand, TyperGroup, TyperOption, _TyperParameter

# A float written as digits with at most one point: Python's float() and pydantic's parser (both
# correctly rounded) read it alike; anything else (exponents, signs, spaces, underscores, "nan",
# other scripts' digits) is left to typer.
DIGITS = re.compile(r"[0-9]{1,30}(\.[0-9]{0,30})?")
MISSING = object()
P = TypeVar("P", bound=Parameter | None)


class PlainCommand(TyperCommand):
    """A typer command whose str, Path, float and bool options are taken without pydantic."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _take_plainly(self.params)

    def get_help_option(self, ctx: Context) -> TyperOption | None:
        return _taken_plainly(super().get_help_option(ctx))


class PlainGroup(TyperGroup):
    """A typer group whose own options (`--version`) are taken without pydantic."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _take_plainly(self.params)

    def get_help_option(self, ctx: Context) -> TyperOption | None:
        return _taken_plainly(super().get_help_option(ctx))


def _take_plainly(params: list[Parameter]) -> None:
    for param in params:
        _taken_plainly(param)


def _taken_plainly(param: P) -> P:
    """The option (or argument), its value taken here where this module knows how (`--help` too)."""
    if isinstance(param, _TyperParameter) and param._runtime_param is None and _known(param.type_descriptor):
        param._runtime_param = _Plain(
            parameter_info=param.type_descriptor.parameter_info,
            annotation=param.type_descriptor.annotation,
            descriptor=param.type_descriptor,
        )
    return param


def _known(descriptor: TypeDescriptor) -> bool:
    info = descriptor.parameter_info
    if info.parser is not None or descriptor.file_annotation is not None:
        return False
    if descriptor.annotation is float:
        return info.min is None and info.max is None and not info.clamp
    if descriptor.annotation is Path:  # typer's path checks, all at their defaults but `readable`
        return (
            not info.exists
            and info.file_okay
            and info.dir_okay
            and not info.writable
            and not info.resolve_path
            and not info.allow_dash
            and info.path_type is None
        )
    return descriptor.annotation in (str, bool)


@dataclasses.dataclass(frozen=True)
class _Plain(RuntimeParam):
    """Coercion of a str, Path, float or bool option: the value here when it is plain, else typer's."""

    descriptor: TypeDescriptor

    def _coerce_value(self, value: Any, param: _TyperParameter, ctx: Context) -> Any:
        plain = _plain(self.annotation, self.parameter_info.readable, value)
        if plain is not MISSING:
            return plain
        return build_runtime_param(self.descriptor)._coerce_value(value, param=param, ctx=ctx)


def _plain(annotation: Any, readable: bool, value: Any) -> Any:
    """The value typer's adapter gives for `value`, or MISSING where only typer can say."""
    if type(value) is annotation:  # a float default, a flag's bool, a text for a str
        return value
    if type(value) is not str:
        return MISSING
    if annotation is float:
        return float(value) if DIGITS.fullmatch(value) else MISSING
    if annotation is Path:  # typer refuses an existing path it cannot read (when it checks)
        path = Path(value)
        return path if not readable or os.access(path, os.R_OK) else MISSING
    return MISSING  # a flag's text (from the environment)
