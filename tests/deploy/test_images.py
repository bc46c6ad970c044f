"""What a service's image installs: its distribution's runtime closure in the committed lock, nothing of
the operators' wing (the CLI, the devstack and their typer/rich) and nothing of the test toolchain."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from rebal.settings import PORTS

ROOT = Path(__file__).resolve().parents[2]
LOCK = tomllib.loads((ROOT / "uv.lock").read_text())
PACKAGES: dict[str, dict[str, Any]] = {package["name"]: package for package in LOCK["package"]}
# Installed by `make run`/`make test` for the operators and the developers, never in a service's image.
NOT_IN_IMAGES = {"rebal-cli", "rebal-devstack", "typer", "rich", "playwright", "pytest", "scikit-learn"}


def runtime_closure(name: str) -> set[str]:
    """Every package `uv sync --no-dev --package NAME` installs: dependencies (with the extras asked
    for), transitively; dependency groups are left out."""
    seen: set[str] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(name, ())]
    while todo:
        current, extras = todo.pop()
        package = PACKAGES[current]
        key = f"{current}[{','.join(extras)}]"
        if key in seen:
            continue
        seen.add(key)
        wanted = list(package.get("dependencies", []))
        for extra in extras:
            wanted += package.get("optional-dependencies", {}).get(extra, [])
        todo += [(dependency["name"], tuple(dependency.get("extra", ()))) for dependency in wanted]
    return {key.split("[")[0] for key in seen}


@pytest.mark.parametrize("service", list(PORTS))
def test_a_service_image_carries_no_cli_devstack_or_test_tools(service: str) -> None:
    closure = runtime_closure(f"rebal-{service}")
    assert "rebal" in closure
    assert closure & NOT_IN_IMAGES == set()


def test_the_shared_library_depends_on_no_cli_toolkit() -> None:
    assert {"typer", "rich", "httpx"} & runtime_closure("rebal") == set()


def test_the_image_recipe_copies_every_workspace_member() -> None:
    """uv resolves a package of the workspace only with every member's pyproject present."""
    members = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]["members"]
    copied = set(re.findall(r"^COPY (\S+) \./", (ROOT / "Dockerfile").read_text(), re.MULTILINE))
    assert {member.split("/")[0] for member in members} <= copied
