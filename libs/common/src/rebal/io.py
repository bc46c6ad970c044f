"""Reading input files (JSON, YAML or TOML) and turning every input problem into one line naming the file."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import orjson
import yaml

from rebal.core import bounds
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


def text_problem_at(document: object) -> tuple[str, str] | None:
    """Where (a dotted path) and what is wrong with the text of a parsed document (a tree, prices, an
    event's payload): a key or string at any depth that Postgres text cannot hold. Written out by orjson
    first (fast): a NUL shows as an escape, a lone surrogate fails it; only then is the document walked."""
    try:
        written = orjson.dumps(document, option=orjson.OPT_NON_STR_KEYS, default=str)
    except (orjson.JSONEncodeError, TypeError):
        written = b"\\u0000"
    if b"\\u0000" not in written:
        return None
    pending: list[tuple[str, object]] = [("", document)]
    while pending:
        where, item = pending.pop()
        if isinstance(item, str):
            problem = bounds.text_problem(item)
            if problem is not None:
                return where, problem
        elif isinstance(item, dict):
            for key, value in item.items():
                problem = bounds.text_problem(key) if isinstance(key, str) else None
                if problem is not None:
                    return where, f"a key {problem}"
                pending.append((f"{where}.{key}" if where else str(key), value))
        elif isinstance(item, list):
            pending.extend((f"{where}[{index}]", value) for index, value in enumerate(item))
    return None


def document_text_problem(document: object) -> str | None:
    """What `text_problem_at` finds, without where."""
    found = text_problem_at(document)
    return None if found is None else found[1]


def load_document(path: Path) -> object:
    """Parse a JSON, YAML or TOML file (YAML and TOML by suffix; JSON otherwise, with YAML as a fallback);
    text Postgres cannot hold (a NUL) is refused here, naming where, before anything stores it."""
    document = _parse(path)
    found = text_problem_at(document)
    if found is not None:
        raise FileError(path, found[0], found[1])
    return document


def _parse(path: Path) -> object:
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
