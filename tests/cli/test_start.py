"""`rebal` starts light: --help and --version load none of the heavy packages, and each command loads
what it uses when it runs (issue 17, target 2; the times are bench/cli_start.py's)."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rebal.settings import PORTS
from rebal_allocation.allocation import METHOD_PARAMETERS
from rebal_cli import __version__, strategies, support
from rebal_cli.app import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
HEAVY = (
    "numpy",
    "pydantic",
    "pydantic_settings",
    "httpx",
    "nats",
    "asyncio",
    "rebal.events",
    "msgspec",
    "yaml",
    "rich",
    "tomllib",
)
# The app as the console script runs it, but returning here: `main` ends a finished `rebal plan --json`
# at once (rebal_cli.app._written), before this could look.
LOADED = """
import sys
sys.argv = {argv!r}
from rebal_cli.app import app
try:
    app()
except SystemExit:
    pass
print("loaded:" + ",".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
"""


def loaded(*argv: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", LOADED.format(argv=["rebal", *argv], heavy=HEAVY)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    line = next(line for line in done.stderr.splitlines() if line.startswith("loaded:"))
    return {name for name in line.removeprefix("loaded:").split(",") if name}


@pytest.mark.parametrize("option", ["--help", "--version"])
def test_help_and_version_load_none_of_the_heavy_packages(option: str) -> None:
    assert loaded(option) == set()


@pytest.mark.parametrize("argv", [["fund", "--help"], ["plan", "--help"], ["plan", "--bogus"]])
def test_a_command_s_help_and_a_usage_error_are_plain_text_without_rich(argv: list[str]) -> None:
    assert "rich" not in loaded(*argv)


def test_a_plan_from_files_loads_no_client_of_the_running_system() -> None:
    files = ("real", "target", "prices", "markets")
    used = loaded("plan", *(f"--{name}={EXAMPLES / name}.json" for name in files), "--json")
    assert used.isdisjoint(
        {"httpx", "nats", "asyncio", "pydantic", "pydantic_settings", "rebal.events", "yaml", "tomllib"}
    ), used  # pydantic: typer's own coercion of the options is bypassed (rebal_cli.plain)
    assert {"numpy", "msgspec"} <= used  # the core and the file reader it does use


def test_version_prints_the_distribution_s_version() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "rebal"), "--version"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and done.stdout == f"rebal {version('rebal-cli')}\n"
    assert __version__ == version("rebal-cli")


def test_the_names_the_help_lists_without_loading_their_modules_are_theirs() -> None:
    assert tuple(PORTS) == support.SERVICES
    assert tuple(METHOD_PARAMETERS) == strategies.METHODS


def test_every_command_s_help_shows() -> None:
    runner = CliRunner()
    groups = [[]] + [[name] for name, group in ((g.name, g) for g in app.registered_groups) if name]
    for prefix in groups:
        shown = runner.invoke(app, [*prefix, "--help"])
        assert shown.exit_code == 0, (prefix, shown.output)
    commands = [command.name or command.callback.__name__ for command in app.registered_commands]  # type: ignore[union-attr]
    for name in commands:
        shown = runner.invoke(app, [name, "--help"])
        assert shown.exit_code == 0, (name, shown.output)
