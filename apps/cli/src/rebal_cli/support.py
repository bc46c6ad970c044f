"""What every `rebal` command module shares: exit codes, the one-line error, JSON output, defaults.

Exit codes (documented in README): 0 ok, 1 error, 2 not found / bad input, 3 not running,
4 configuration error.

The command modules import at their top only typer, the standard library and light modules (this one,
`rebal_cli.context`, `rebal.subjects`, `rebal.core.numbers`, `rebal.core.display`); what a command
needs beyond (the API client, the renderer, the core, pydantic, httpx, NATS) is imported in its body,
so `rebal --help` and each command load only what they use (tests/cli/test_start.py, bench/cli_start.py).
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Sequence
from decimal import Decimal
from pathlib import Path
from typing import NoReturn

import orjson
import typer

from rebal.core.numbers import parse_decimal

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_NOT_RUNNING = 0, 1, 2, 3
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_API_URL = "http://127.0.0.1:8105"
# The services, as `rebal.settings.PORTS` names them (tests/cli/test_start.py keeps them equal).
SERVICES = ("tracker", "optimizer", "planner", "executor", "monitor")


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """One line on stderr naming what is wrong, and the exit code (never a traceback)."""
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"error: {message}", markup=False)
    raise typer.Exit(code)


def write_json(data: object) -> None:
    sys.stdout.buffer.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
    sys.stdout.flush()


def band_option(raw: str) -> Decimal:
    """A `--band`: a fraction of the portfolio from 0 to 1, as the API takes it (1e400 is refused here,
    not by the event's validation as a traceback)."""
    value = parse_decimal(raw)
    if value is None or not 0 <= value <= 1:
        fail(f"--band: {raw!r} must be a decimal from 0 to 1")
    return value


def exchanges_not_held(
    held: Collection[str], sections: Sequence[tuple[Path, str, Collection[str], str]]
) -> list[str]:
    """The exchanges a file names (each section: the file, the key its exchanges are under, "" for the
    top level, those exchanges, what the file gives for them) that no account is on (`held`: the
    accounts' exchanges): one line each, naming the file and the key. A typo ("binanse") would otherwise
    leave the account without what the file meant for it, unnoticed. Printed as warnings: a shared file
    may list more exchanges."""
    return [
        f"{path}: {f'{key}.' if key else ''}{exchange}: no account is on this exchange; its {what} are not "
        "used"
        for path, key, table, what in sections
        for exchange in sorted(set(table) - set(held))
    ]


def warn(lines: Sequence[str]) -> None:
    """Each line on stderr as a warning (the command goes on)."""
    for line in lines:
        print(f"warning: {line}", file=sys.stderr)
