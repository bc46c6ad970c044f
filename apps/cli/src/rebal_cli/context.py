"""Where the running system is, found by `rebal` itself: the client context (like a kubeconfig context).

`make run` writes ``var/client.toml`` beside the state it starts (the API's URL and token file, NATS,
Postgres, each service's HTTP base URL). Every `rebal` command finds it without an environment variable:

1. ``REBAL_CONTEXT=FILE`` names the file (``REBAL_CONTEXT=none``: no context);
2. else ``var/client.toml`` in the current directory or the nearest parent that has one.

What the context gives is a default: an option on the command line (``--api-url``, ``--nats-url``) and the
environment (``REBAL__API__URL``, ``REBAL__API__TOKEN``, ``REBAL__API__TOKEN_FILE``, ``REBAL__NATS__URL``,
``REBAL__NATS__USER``, ``REBAL__DATABASE__URL``) come first, then the context, then ``REBAL_CONFIG``, then
the defaults. A relative ``token_file`` or ``password_file`` is relative to the context file. The file is
TOML:

    [api]
    url = "http://127.0.0.1:8105"
    token_file = "api-token"
    [nats]
    url = "nats://127.0.0.1:4222"
    user = "api"                           # the operators' NATS user (deploy/nats/auth.conf)
    password_file = "secrets/nats-api"     # its password
    [database]
    url = "postgresql://postgres:...@127.0.0.1:5432/rebal"
    [services]
    tracker = "http://127.0.0.1:8101"    # ... one base URL per service: `rebal config show` asks each
    [devstack]
    supervisor = "supervisor.json"       # the launcher's restarts of each child, shown by `rebal status`
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONTEXT_ENV = "REBAL_CONTEXT"
CONTEXT_FILE = Path("var") / "client.toml"
NO_CONTEXT = frozenset({"", "none", "off"})
SECTIONS = ("api", "nats", "database", "services", "devstack")


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
    devstack: dict[str, str] = field(default_factory=dict)

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
    import tomllib  # only a command that reads the context file needs it (tests/cli/test_start.py)

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
    for section, key in (("api", "token_file"), ("nats", "password_file"), ("devstack", "supervisor")):
        named = sections[section].get(key)
        if named is not None and not Path(named).is_absolute():
            sections[section][key] = str(path.parent / named)
    return Context(path, **sections)


def current(cwd: Path | None = None) -> Context | None:
    """The context in force, read; None when there is none."""
    path = locate(cwd)
    return None if path is None else read(path)


def write(path: Path, *, api_url: str, token_file: Path, nats_url: str, database_url: str,
          services: dict[str, str], nats_user: str | None = None,
          nats_password_file: Path | None = None, supervisor_file: Path | None = None) -> None:  # fmt: skip
    """Write a context (what `make run` does for the system it started), readable by its owner only
    (the database's URL holds its password)."""

    def quoted(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [
        "# Where the running system is: written by `make run`, read by `rebal` (see rebal_cli.context).",
        "[api]",
        f"url = {quoted(api_url)}",
        f"token_file = {quoted(str(token_file))}",
        "[nats]",
        f"url = {quoted(nats_url)}",
        *([f"user = {quoted(nats_user)}"] if nats_user is not None else []),
        *([f"password_file = {quoted(str(nats_password_file))}"] if nats_password_file is not None else []),
        "[database]",
        f"url = {quoted(database_url)}",
        "[services]",
        *(f"{name} = {quoted(url)}" for name, url in services.items()),
        *(["[devstack]", f"supervisor = {quoted(str(supervisor_file))}"] if supervisor_file else []),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.touch(mode=0o600)
    partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
    partial.replace(path)
