"""Reading input files (JSON, YAML or TOML) and turning every input problem into one line naming the file."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import orjson
import yaml

from rebal.core.errors import InputError

T = TypeVar("T")
YAML_SUFFIXES = frozenset({".yaml", ".yml"})
TOML_SUFFIX = ".toml"


class FileError(Exception):
    """Bad input in a file: ``FILE: WHERE: WHAT``, printed as one line; the CLI exits 2."""

    def __init__(self, path: Path, where: str, message: str) -> None:
        self.path = path
        self.where = where
        self.message = message
        location = f"{path}: {where}" if where else str(path)
        super().__init__(f"{location}: {message}")


def load_document(path: Path) -> object:
    """Parse a JSON, YAML or TOML file (YAML and TOML by suffix; JSON otherwise, with YAML as a fallback)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileError(path, "", "file not found") from None
    except IsADirectoryError:
        raise FileError(path, "", "is a directory, expected a file") from None
    except OSError as exc:
        raise FileError(path, "", f"cannot read: {exc.strerror}") from None
    if path.suffix.lower() in YAML_SUFFIXES:
        return _load_yaml(path, data)
    if path.suffix.lower() == TOML_SUFFIX:
        return _load_toml(path, data)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if path.suffix.lower() == ".json":
            raise FileError(path, "", f"malformed JSON: {exc}") from None
        return _load_yaml(path, data)


def _load_yaml(path: Path, data: bytes) -> object:
    try:
        return yaml.load(data, Loader=yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise FileError(path, where, f"malformed YAML: {problem}") from None


def _load_toml(path: Path, data: bytes) -> object:
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise FileError(path, "", "malformed TOML: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise FileError(path, "", f"malformed TOML: {exc}") from None


def load(path: Path, parse: Callable[[object], T]) -> T:
    """Load a file and parse it with a core parser; `InputError`s come back naming the file."""
    document = load_document(path)
    try:
        return parse(document)
    except InputError as exc:
        raise FileError(path, exc.where, exc.message) from None
    except RecursionError:
        raise FileError(path, "", "the document is nested too deeply") from None
