"""Reading input files (JSON, YAML or TOML) and turning every input problem into one line naming the file."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import orjson
from msgspec import UNSET, UnsetType

from rebal.core import bounds, collector
from rebal.core.errors import InputError
from rebal.core.tree import Role, Tree, parse_records, parse_tree

T = TypeVar("T")
YAML_SUFFIXES = frozenset({".yaml", ".yml"})
TOML_SUFFIX = ".toml"
# How `load_document` picks a file's format, said where a document is not what was expected.
FORMATS_BY_SUFFIX = "the suffix picks the format: .toml is TOML, .yaml or .yml YAML, any other JSON (or YAML)"
# The largest input file (docs/formats.md): a million-wallet tree is about 60 MB, and a file is read whole.
MAX_FILE_BYTES = 1 << 30
NOT_REGULAR = (
    (stat.S_ISFIFO, "a pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class FileError(Exception):
    """Bad input in a file: ``FILE: WHERE: WHAT``, printed as one line; the CLI exits 2."""

    def __init__(self, path: Path, where: str, message: str) -> None:
        self.path = path
        self.where = where
        self.message = message
        location = f"{path}: {where}" if where else str(path)
        super().__init__(f"{location}: {message}")


def read_input(path: Path) -> bytes:
    """The bytes of an input file: a regular file of at most `MAX_FILE_BYTES`, else a `FileError`.

    Opened without blocking, so a FIFO is refused instead of waiting for a writer; a device such as
    /dev/zero is refused instead of read until memory runs out.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise FileError(path, "", "file not found") from None
    except IsADirectoryError:
        raise FileError(path, "", "is a directory, expected a file") from None
    except OSError as exc:
        raise FileError(path, "", f"cannot read: {exc.strerror}") from None
    info = os.fstat(fd)
    if stat.S_ISDIR(info.st_mode):  # Linux opens a directory for reading; a file object refuses it
        os.close(fd)
        raise FileError(path, "", "is a directory, expected a file")
    with os.fdopen(fd, "rb") as file:
        kind = next((name for test, name in NOT_REGULAR if test(info.st_mode)), "not a regular file")
        if not stat.S_ISREG(info.st_mode):
            raise FileError(path, "", f"is {kind}, expected a regular file")
        too_big = f"is larger than {MAX_FILE_BYTES // (1 << 20)} MiB, the most an input file may hold"
        if info.st_size > MAX_FILE_BYTES:
            raise FileError(path, "", too_big)
        try:
            data = file.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise FileError(path, "", f"cannot read: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:  # it grew while being read
        raise FileError(path, "", too_big)
    return data


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
    return _checked(path, _document(path, read_input(path)))


def _checked(path: Path, document: object) -> object:
    found = text_problem_at(document)
    if found is not None:
        raise FileError(path, found[0], found[1])
    return document


def _document(path: Path, data: bytes) -> object:
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
    import yaml  # only YAML files need it: `rebal plan` on JSON starts without it

    try:
        return yaml.load(data, Loader=yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise FileError(path, where, f"malformed YAML: {problem}") from None


def _load_toml(path: Path, data: bytes) -> object:
    import tomllib  # only TOML files need it: `rebal plan` on JSON starts without it

    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise FileError(path, "", "malformed TOML: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise FileError(path, "", f"malformed TOML: {exc}") from None


def load(path: Path, parse: Callable[[object], T]) -> T:
    """Load a file and parse it with a core parser; `InputError`s come back naming the file."""
    return _parsed(path, load_document(path), parse)


def _parsed(path: Path, document: object, parse: Callable[[object], T]) -> T:
    try:
        return parse(document)
    except InputError as exc:
        raise FileError(path, exc.where, exc.message) from None
    except RecursionError:
        raise FileError(path, "", "the document is nested too deeply") from None


class TreeNode(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A tree node as a JSON file holds it (docs/formats.md): the keys a node may have, each of the type
    it must have when given, absent ones at the core's `DEFAULTS` or UNSET. A null where a key has no
    default is refused (the generic path then names it). Not tracked by the garbage collector: decoded
    trees hold no cycles."""

    name: str | None = None
    kind: str | None = None
    children: list[TreeNode] | None = None
    asset: str | UnsetType = UNSET
    amount: str | int | float | UnsetType = UNSET
    locks: list[Any] | UnsetType = UNSET
    weight: str | int | float | UnsetType = UNSET
    keep_unlisted: bool = False
    quote: str | UnsetType = UNSET
    exchange: str | UnsetType = UNSET
    positions: list[Any] | UnsetType = UNSET
    pool: dict[str, str | int | float] | UnsetType = UNSET


_TREE_NODES = msgspec.json.Decoder(TreeNode)


def load_tree(path: Path, role: Role) -> Tree:
    """A real or desired tree from a file, `InputError`s naming the file.

    JSON is decoded straight into typed nodes (`TreeNode`): a third of the time generic JSON takes, and
    the keys and the types of their values checked in C. Whatever that decoder refuses (malformed
    JSON, an unknown key, a value of the wrong type, YAML) is parsed the generic way, which names the
    problem as for any document.
    """
    data = read_input(path)
    with collector.paused():
        # An escaped character (rare in trees) may be a NUL or a lone surrogate: the generic path checks.
        if path.suffix.lower() not in YAML_SUFFIXES | {TOML_SUFFIX} and b"\\u" not in data:
            try:
                root = _TREE_NODES.decode(data)
            except (msgspec.DecodeError, RecursionError):
                pass
            else:
                return _parsed(path, root, lambda node: parse_records(node, role, UNSET))
        document = _checked(path, _document(path, data))
        return _parsed(path, document, lambda document: parse_tree(document, role))
