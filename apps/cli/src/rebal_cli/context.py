"""Where the running system is, found by `rebal` itself: the client context (like a kubeconfig context).

`make run` writes ``var/client.toml`` beside the state it starts (the API's URL and token file, NATS,
Postgres, each service's HTTP base URL). Every `rebal` command finds it without an environment variable:

1. ``REBAL_CONTEXT=FILE`` names the file (``REBAL_CONTEXT=none``: no context);
2. else ``var/client.toml`` in the current directory or the nearest parent that has one.

What the context gives is a default: an option on the command line (``--api-url``, ``--nats-url``) and the
environment (``REBAL__API__URL``, ``REBAL__API__TOKEN``, ``REBAL__API__TOKEN_FILE``, ``REBAL__NATS__URL``,
``REBAL__DATABASE__URL``) come first, then the context, then ``REBAL_CONFIG``, then the defaults. A
relative ``token_file`` is relative to the context file. The file is TOML:

    [api]
    url = "http://127.0.0.1:8105"
    token_file = "api-token"
    [nats]
    url = "nats://127.0.0.1:4222"
    [database]
    url = "postgresql://postgres@127.0.0.1:5432/rebal"
    [services]
    tracker = "http://127.0.0.1:8101"    # ... one base URL per service: `rebal config show` asks each
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONTEXT_ENV = "REBAL_CONTEXT"
CONTEXT_FILE = Path("var") / "client.toml"
NO_CONTEXT = frozenset({"", "none", "off"})
SECTIONS = ("api", "nats", "database", "services")


class ContextError(ValueError):
    """The context file cannot be read; the message names it."""


@dataclass(frozen=True)
class Context:
    """A client context: the file it came from and its sections (values as written, paths resolved)."""

    path: Path
    api: dict[str, str] = field(default_factory=dict)
    nats: dict[str, str] = field(default_factory=dict)
    database: dict[str, str] = field(default_factory=dict)
    services: dict[str, str] = field(default_factory=dict)

    def settings(self) -> dict[str, Any]:
        """The sections the CLI's settings read (api, nats, database), as a settings source gives them."""
        return {name: dict(values) for name, values in (("api", self.api), ("nats", self.nats),
                ("database", self.database)) if values}  # fmt: skip


def locate(cwd: Path | None = None, environ: dict[str, str] | None = None) -> Path | None:
    """The context file in force (see the module doc), or None."""
    env = os.environ if environ is None else environ
    named = env.get(CONTEXT_ENV)
    if named is not None:
        return None if named.strip().lower() in NO_CONTEXT else Path(named)
    here = (cwd or Path.cwd()).absolute()
    for directory in (here, *here.parents):
        candidate = directory / CONTEXT_FILE
        if candidate.is_file():
            return candidate
    return None


def read(path: Path) -> Context:
    """Parse a context file; `ContextError` names the file and what is wrong."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ContextError(f"{CONTEXT_ENV} {path}: cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ContextError(f"{CONTEXT_ENV} {path}: malformed TOML: {exc}") from None
    unknown = sorted(set(document) - set(SECTIONS))
    if unknown:
        raise ContextError(f"{path}: unknown section(s) {', '.join(unknown)} (known: {', '.join(SECTIONS)})")
    sections: dict[str, dict[str, str]] = {}
    for name in SECTIONS:
        values = document.get(name, {})
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            raise ContextError(f'{path}: [{name}] must hold text values (key = "...")')
        sections[name] = {str(k): v for k, v in values.items()}
    token_file = sections["api"].get("token_file")
    if token_file is not None and not Path(token_file).is_absolute():
        sections["api"]["token_file"] = str(path.parent / token_file)
    return Context(path, **sections)


def current(cwd: Path | None = None) -> Context | None:
    """The context in force, read; None when there is none."""
    path = locate(cwd)
    return None if path is None else read(path)


def write(path: Path, *, api_url: str, token_file: Path, nats_url: str, database_url: str,
          services: dict[str, str]) -> None:  # fmt: skip
    """Write a context (what `make run` does for the system it started), readable by its owner only."""

    def quoted(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [
        "# Where the running system is: written by `make run`, read by `rebal` (see rebal_cli.context).",
        "[api]",
        f"url = {quoted(api_url)}",
        f"token_file = {quoted(str(token_file))}",
        "[nats]",
        f"url = {quoted(nats_url)}",
        "[database]",
        f"url = {quoted(database_url)}",
        "[services]",
        *(f"{name} = {quoted(url)}" for name, url in services.items()),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.touch(mode=0o600)
    partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
    partial.replace(path)
