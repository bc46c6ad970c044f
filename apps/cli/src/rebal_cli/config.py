"""`rebal config validate|show` and `rebal doctor`: the typed configuration and the infrastructure it names.

One configuration file (``REBAL_CONFIG``: TOML, YAML or JSON) configures every service, each taking the
sections it knows, with ``REBAL__SECTION__KEY`` environment variables over it (`rebal.settings`). These
commands load every service's settings class exactly as the services do, so what they accept the
services accept. Errors name the key; a configuration error exits 4.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rebal_cli.support import EXIT_ERROR, EXIT_NOT_RUNNING, SERVICES, fail, write_json

if TYPE_CHECKING:
    from pydantic import BaseModel
    from pydantic_settings import BaseSettings

    from rebal.settings import DatabaseSettings, NatsSettings

# Where each distribution names its settings class (see `service_classes`).
SETTINGS_ENTRY_POINTS = "rebal.settings"
VENUES = "venues"
VENUES_ENV_PREFIX = "REBAL__VENUES__"
CHECK_TIMEOUT_SECONDS = 3.0

config_app = typer.Typer(help="Check and show the configuration.", no_args_is_help=True)


def service_classes(with_venues: bool = True) -> dict[str, type[BaseSettings]]:
    """Each installed service's settings class, by service name, and the venues' configuration (the
    ``[venues.<name>]`` sections the tracker and the executor read beside their own), as ``venues``.

    Each distribution names its own class under the ``rebal.settings`` entry points (its pyproject), so
    the CLI keeps no list of services and finds exactly those installed; none is imported before it is
    needed (the venues' class imports ccxt: 3 to 15 s)."""
    from importlib.metadata import entry_points

    from pydantic_settings import BaseSettings

    order = {name: index for index, name in enumerate((*SERVICES, VENUES))}
    entries = sorted(
        (entry for entry in entry_points(group=SETTINGS_ENTRY_POINTS) if with_venues or entry.name != VENUES),
        key=lambda entry: (order.get(entry.name, len(order)), entry.name),
    )
    found: dict[str, type[BaseSettings]] = {}
    for entry in entries:
        value = entry.load()
        if not (isinstance(value, type) and issubclass(value, BaseSettings)):
            raise TypeError(f"entry point {SETTINGS_ENTRY_POINTS}:{entry.name} is not a settings class")
        found[entry.name] = value
    return found


def venues_configured(document: dict[str, Any]) -> bool:
    """Whether the file or the environment has ``venues`` sections (without any, every venue is paper)."""
    return "venues" in document or any(key.upper().startswith(VENUES_ENV_PREFIX) for key in os.environ)


@dataclass(frozen=True)
class Problem:
    key: str
    message: str
    services: tuple[str, ...]

    def line(self, source: str) -> str:
        who = f" ({', '.join(self.services)})" if self.services else ""
        return f"{source}: {self.key}: {self.message}{who}"


def check_configuration(path: Path | None) -> tuple[dict[str, BaseSettings], list[Problem]]:
    """Every service's settings made from `path` (or none) and the environment, and what is wrong."""
    from pydantic import ValidationError

    from rebal.settings import read_config_file, setting_key, using_config_file

    document = read_config_file(path) if path is not None else {}  # ConfigFileError names the file
    classes = service_classes(venues_configured(document))
    problems: dict[tuple[str, str], list[str]] = {}
    if path is not None:
        known = {field for cls in classes.values() for field in cls.model_fields}
        for key in sorted(set(document) - known):
            problems[(key, f"not a setting of any service (known: {', '.join(sorted(known))})")] = []
    loaded: dict[str, BaseSettings] = {}
    with using_config_file(path):
        for name, cls in classes.items():
            try:
                loaded[name] = cls()
            except ValidationError as exc:
                for error in exc.errors():
                    problems.setdefault((setting_key(error["loc"]), error["msg"]), []).append(name)
            except ValueError as exc:  # a secret file that cannot be read, from a validator
                problems.setdefault(("(settings)", str(exc)), []).append(name)
    return loaded, [Problem(key, message, tuple(who)) for (key, message), who in problems.items()]


@config_app.command("validate")
def validate(
    file: Annotated[
        Path | None, typer.Argument(help="The file to check (default: $REBAL_CONFIG, if set).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Check a configuration file (with the environment over it) against every service's settings."""
    from rich.console import Console

    from rebal.settings import EXIT_CONFIGURATION, ConfigFileError, config_file

    path = file if file is not None else config_file()
    source = str(path) if path is not None else "environment"
    try:
        loaded, problems = check_configuration(path)
    except ConfigFileError as exc:
        if as_json:
            write_json({"file": source, "valid": False, "errors": [{"key": None, "message": str(exc)}]})
        fail(str(exc), EXIT_CONFIGURATION)
    if as_json:
        write_json(
            {
                "file": str(path) if path is not None else None,
                "valid": not problems,
                "services": sorted(loaded),
                "errors": [
                    {"key": p.key, "message": p.message, "services": list(p.services)} for p in problems
                ],
            }
        )
    else:
        for problem in problems:
            Console(stderr=True, highlight=False, soft_wrap=True).print(
                f"error: {problem.line(source)}", markup=False
            )
        if not problems:
            Console(highlight=False).print(f"{source}: valid for {', '.join(loaded)}", markup=False)
    if problems:
        raise typer.Exit(EXIT_CONFIGURATION)


def _document(settings: BaseSettings) -> Any:
    from rebal.settings import ServiceSettings

    if isinstance(settings, ServiceSettings):
        return settings.public()
    return settings.model_dump(mode="json")


def _flatten(document: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(document, dict) and document:
        for key, value in document.items():
            yield from _flatten(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, document


@config_app.command("show")
def show(
    service: Annotated[
        str | None, typer.Option("--service", help=f"One service: {', '.join(SERVICES)} (default: all).")
    ] = None,
    local: Annotated[
        bool,
        typer.Option(
            "--local",
            help="What this shell's environment and REBAL_CONFIG would configure, instead of what runs.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """The settings the running services use, from each one's /config (secrets masked), and their mode.

    Each service is asked at its URL in the client context (`make run` writes var/client.toml), else on its
    default port on this machine. A service that does not answer is named (exit 3). --local shows what the
    environment and REBAL_CONFIG of this shell would configure instead."""
    from rich.console import Console

    if service is not None and service not in (*SERVICES, "venues"):
        fail(f"--service: {service!r} is not one of {', '.join(SERVICES)}, venues")
    if local:
        _show_local(service, as_json)
        return
    if service == "venues":
        fail("--service venues: the venues are configured inside the tracker and the executor (or --local)")
    urls = service_urls()
    chosen = [name for name in SERVICES if service in (None, name)]
    running: dict[str, Any] = {}
    missing: dict[str, str] = {}
    for name in chosen:
        found = running_config(urls[name])
        if isinstance(found, str):
            missing[name] = found
        else:
            running[name] = found
    if as_json:
        write_json(running if service is None else running.get(service))
    else:
        console = Console(highlight=False, soft_wrap=True)
        modes = {name: document.get("mode") for name, document in running.items()}
        if running:
            console.print(mode_line(modes), markup=False)
        for name, document in running.items():
            console.print(f"[bold]\\[{name}][/] {urls[name]} ({document.get('mode')})")
            for key, value in _flatten(document.get("settings") or {}):
                console.print(
                    f"{key} = {value!r}" if isinstance(value, str) else f"{key} = {value}", markup=False
                )
    for name, why in missing.items():
        Console(stderr=True, highlight=False, soft_wrap=True).print(
            f"error: {name}: not running at {urls[name]} ({why}); rebal config show --local shows what this"
            " shell would configure",
            markup=False,
        )
    if missing:
        raise typer.Exit(EXIT_NOT_RUNNING)


def mode_line(modes: dict[str, Any]) -> str:
    """The system's mode as one fact: "mode: live (tracker, ...)", or which service differs."""
    values = sorted({str(mode) for mode in modes.values()})
    if len(values) == 1:
        return f"mode: {values[0]} ({', '.join(modes)})"
    by_mode = "; ".join(
        f"{mode}: {', '.join(n for n, m in modes.items() if str(m) == mode)}" for mode in values
    )
    return f"mode: NOT ONE MODE ({by_mode}): set REBAL__LIVE alike for every service"


def service_urls() -> dict[str, str]:
    """Each service's HTTP base URL: the client context's, else its default port on this machine."""
    from rebal.settings import EXIT_CONFIGURATION, PORTS
    from rebal_cli import context

    try:
        found = context.current()
    except context.ContextError as exc:
        fail(str(exc), EXIT_CONFIGURATION)
    given = found.services if found is not None else {}
    return {name: given.get(name, f"http://127.0.0.1:{port}") for name, port in PORTS.items()}


def running_config(url: str) -> dict[str, Any] | str:
    """A running service's /config document, or why there is none."""
    import httpx

    try:
        response = httpx.get(f"{url.rstrip('/')}/config", timeout=CHECK_TIMEOUT_SECONDS, trust_env=False)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}".rstrip(": ")
    if response.status_code != 200:
        return f"/config: HTTP {response.status_code}"
    try:
        document = response.json()
    except ValueError:
        return "/config: not JSON"
    return document if isinstance(document, dict) else "/config: not a document"


def _show_local(service: str | None, as_json: bool) -> None:
    from rich.console import Console

    from rebal.settings import EXIT_CONFIGURATION, ConfigFileError, config_file, masked

    try:
        loaded, problems = check_configuration(config_file())
    except ConfigFileError as exc:
        fail(str(exc), EXIT_CONFIGURATION)
    if service is not None and service not in loaded:
        why = next((p.line("configuration") for p in problems if service in p.services), "not installed")
        fail(f"{service}: {why}", EXIT_CONFIGURATION)
    chosen = {name: masked(_document(loaded[name])) for name in loaded if service in (None, name)}
    if as_json:
        write_json(chosen if service is None else chosen[service])
    else:
        console = Console(highlight=False, soft_wrap=True)
        for name, document in chosen.items():
            console.print(f"[bold]\\[{name}][/]")
            for key, value in _flatten(document):
                console.print(
                    f"{key} = {value!r}" if isinstance(value, str) else f"{key} = {value}", markup=False
                )
    for problem in problems:
        Console(stderr=True, highlight=False, soft_wrap=True).print(
            f"error: {problem.line('configuration')}", markup=False
        )
    if problems:
        raise typer.Exit(EXIT_CONFIGURATION)


# -- doctor ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


async def _nats_checks(nats_settings: NatsSettings) -> list[Check]:
    import asyncio

    import nats  # the checks' clients are imported when a check runs: every other command starts faster
    from nats.js.errors import NotFoundError

    from rebal import bus

    options: dict[str, Any] = {"connect_timeout": CHECK_TIMEOUT_SECONDS, "max_reconnect_attempts": 0}
    if nats_settings.user is not None:
        options["user"] = nats_settings.user
        options["password"] = nats_settings.password.get_secret_value() if nats_settings.password else ""

    async def quiet(error: Exception) -> None:
        """nats-py prints every failed attempt; the check reports once."""

    url = nats_settings.url
    try:
        client = await asyncio.wait_for(
            nats.connect(nats_settings.servers, error_cb=quiet, allow_reconnect=False, **options),
            CHECK_TIMEOUT_SECONDS,  # nats-py retries a refused connection until cancelled
        )
    except TimeoutError:
        return [
            Check("nats", False, f"{url}: no answer within {CHECK_TIMEOUT_SECONDS:g} s"),
            Check("streams", False, "not checked: NATS does not answer"),
        ]
    except Exception as exc:  # noqa: BLE001 - any failure to connect is the check's answer
        return [
            Check("nats", False, f"{url}: {type(exc).__name__}: {exc}".rstrip(": ")),
            Check("streams", False, "not checked: NATS does not answer"),
        ]
    checks = [Check("nats", True, f"{client.connected_url.netloc if client.connected_url else url} answers")]
    try:
        js = client.jetstream()
        for spec in bus.STREAMS:
            try:
                info = await asyncio.wait_for(js.stream_info(spec.name), CHECK_TIMEOUT_SECONDS)
            except NotFoundError:
                checks.append(
                    Check(f"stream {spec.name}", False, "missing (the services declare it at start)")
                )
            except Exception as exc:  # noqa: BLE001
                checks.append(Check(f"stream {spec.name}", False, f"{type(exc).__name__}: {exc}"))
            else:
                state = info.state
                replicas = info.config.num_replicas or 1
                checks.append(
                    Check(f"stream {spec.name}", True, f"{state.messages} messages, {replicas} replica(s)")
                )
    finally:
        await client.close()
    return checks


async def _postgres_checks(database: DatabaseSettings) -> list[Check]:
    import asyncpg

    from rebal import db

    try:
        connection = await asyncpg.connect(database.url.get_secret_value(), timeout=CHECK_TIMEOUT_SECONDS)
    except Exception as exc:  # noqa: BLE001
        reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
        return [
            Check("postgres", False, reason),
            Check("migrations", False, "not checked: Postgres does not answer"),
            Check("paper exchange", False, "not checked: Postgres does not answer"),
        ]
    try:
        # The server's own words ("15.18 (Debian 15.18-0+deb12u1)"): asyncpg's parsed version reads a
        # two-part 15.18 as major 15, minor 0.
        version = str(await connection.fetchval("SHOW server_version")).split()[0]
        checks = [Check("postgres", True, f"answers (server {version})")]
        pending = await db.pending(connection)
        total = len(db.migrations())
        checks.append(
            Check(
                "migrations",
                not pending,
                f"pending: {', '.join(pending)}" if pending else f"all {total} applied",
            )
        )
        tables = await connection.fetchval("SELECT to_regclass('paper.balances') IS NOT NULL")
        accounts = (
            await connection.fetchval("SELECT count(DISTINCT account) FROM paper.balances") if tables else 0
        )
        checks.append(
            Check(
                "paper exchange",
                bool(tables),
                f"{accounts} account(s) with balances" if tables else "schema paper missing (migrations)",
            )
        )
    finally:
        await connection.close()
    return checks


def _venue_checks(loaded: dict[str, BaseSettings]) -> list[Check]:
    """The paper exchange's files and every ccxt account's keys, for the services that trade."""
    from rebal.io import FileError, load_document

    checks: list[Check] = []
    seen: set[tuple[str, Path]] = set()
    for name, settings in loaded.items():
        for section, value in _sections(settings):
            files = {k: v for k, v in value.model_dump().items() if k in ("markets_file", "prices_file")}
            for key, path in files.items():
                if (key, path) in seen:
                    continue
                seen.add((key, path))
                try:
                    load_document(path)
                except FileError as exc:
                    checks.append(Check(f"venue {section}", False, f"{name}: {section}.{key}: {exc}"))
                else:
                    checks.append(Check(f"venue {section}", True, f"{section}.{key} {path} reads"))
            if getattr(value, "kind", None) == "ccxt":
                checks.extend(_key_checks(section, value))
    if not any(check.name.startswith("keys") for check in checks):
        checks.append(Check("keys", True, "no exchange keys needed: paper exchange only"))
    return checks


def _key_checks(section: str, venue: Any) -> list[Check]:
    """A ccxt venue's accounts: each has an api_key and a secret (from the environment or files)."""
    name = section.removeprefix("venues.")
    accounts = venue.ccxt_accounts(name)
    if not accounts:
        return [Check(f"keys {name}", False, f"{section}: kind ccxt but no account has an api_key")]
    checks = []
    for account in accounts:
        missing = [k for k in ("api_key", "secret") if not getattr(account, k).get_secret_value()]
        mode = "sandbox" if account.sandbox else "LIVE"
        checks.append(
            Check(
                f"keys {name} {account.account}",
                not missing,
                f"missing {', '.join(missing)}" if missing else f"api_key and secret set ({mode})",
            )
        )
    return checks


def _sections(settings: BaseSettings) -> Iterator[tuple[str, BaseModel]]:
    from pydantic import BaseModel

    for field in type(settings).model_fields:
        value = getattr(settings, field)
        if isinstance(value, BaseModel):
            yield field, value
        elif isinstance(value, dict):
            yield from ((f"{field}.{k}", v) for k, v in value.items() if isinstance(v, BaseModel))


def _api_check(url: str, token: str | None) -> Check:
    import httpx

    if not token:
        return Check("api", False, f"{url}: no token (REBAL__API__TOKEN or REBAL__API__TOKEN_FILE)")
    try:
        response = httpx.get(
            f"{url.rstrip('/')}/status",
            headers={"Authorization": f"Bearer {token}"},
            timeout=CHECK_TIMEOUT_SECONDS,
        )
    except httpx.HTTPError as exc:
        return Check("api", False, f"{url}: {type(exc).__name__}: {exc}")
    if response.status_code != 200:
        return Check("api", False, f"{url}/status: HTTP {response.status_code}")
    body = response.json()
    return Check(
        "api", True, f"{url} answers, token accepted ({'HALTED' if body.get('halted') else 'trading'})"
    )


def doctor(
    api_url: Annotated[
        str | None,
        typer.Option(
            "--api-url", envvar="REBAL__API__URL", help="The monitor's REST API (default: api.url)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")] = False,
) -> None:
    """Check configuration, NATS, streams, Postgres, migrations, venues, keys, API; exit 1 on a failure.

    One line per check. The configuration is the services' own (REBAL_CONFIG and the environment)."""
    import asyncio

    from rich.console import Console

    from rebal.settings import EXIT_CONFIGURATION, ConfigFileError, config_file
    from rebal_cli import context
    from rebal_cli.api import connect, operator_settings

    checks: list[Check] = []
    path = config_file()
    try:
        loaded, problems = check_configuration(path)
    except ConfigFileError as exc:
        fail(str(exc), EXIT_CONFIGURATION)
    source = str(path) if path is not None else "environment and defaults"
    checks.append(
        Check(
            "configuration", not problems, "; ".join(p.line(source) for p in problems) or f"{source}: valid"
        )
    )
    # NATS, Postgres and the API where the operator's settings put them: the environment, then the client
    # context `make run` wrote (var/client.toml), then REBAL_CONFIG.
    operator = operator_settings()
    found = context.locate()
    checks.append(
        Check("context", True, str(found) if found is not None else "none (environment and defaults)")
    )

    async def infrastructure() -> list[Check]:
        on_nats, on_postgres = await asyncio.gather(
            _nats_checks(operator.nats), _postgres_checks(operator.database)
        )
        return [*on_nats, *on_postgres]

    checks.extend(asyncio.run(infrastructure()))
    checks.extend(_venue_checks(loaded))
    api = connect(api_url)
    checks.append(_api_check(api.url, api.token))
    failed = [check for check in checks if not check.ok]
    if as_json:
        write_json({"ok": not failed, "checks": [vars(check) for check in checks]})
    else:
        console = Console(highlight=False, soft_wrap=True)
        for check in checks:
            mark = "[green]ok  [/]" if check.ok else "[red]FAIL[/]"
            console.print(f"{mark} {check.name}: ", end="")
            console.print(check.detail, markup=False)
    if failed:
        raise typer.Exit(EXIT_ERROR)
