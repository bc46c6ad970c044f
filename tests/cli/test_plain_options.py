"""`rebal_cli.plain`: the plan's option values taken without pydantic are typer's own, and whatever it
does not take itself (odd numbers, unreadable paths) gets typer's value or typer's message."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer._adapters import build_leaf_adapter
from typer.models import OptionInfo
from typer.testing import CliRunner

from rebal_cli.app import app
from rebal_cli.plain import DIGITS, MISSING, _plain

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FILES = [f"--{name}={EXAMPLES / name}.json" for name in ("real", "target", "prices")]


def typer_s(annotation: Any, value: Any) -> Any:
    return build_leaf_adapter(annotation, OptionInfo()).validate_python(value)


@given(st.one_of(st.from_regex(DIGITS, fullmatch=True), st.text(max_size=40), st.floats()))
def test_a_float_taken_here_is_typer_s_float(value: str | float) -> None:
    taken = _plain(float, True, value)
    if taken is not MISSING:
        assert repr(taken) == repr(typer_s(float, value))


@pytest.mark.parametrize("value", ["0", "0.05", "1.", "12.500", "0.100000000000000005551115123125"])
def test_plain_digits_are_taken_here(value: str) -> None:
    assert _plain(float, True, value) == typer_s(float, value)


@pytest.mark.parametrize("value", ["1e-2", " 1", "1_0", "nan", "-0", "+1", "\u0661", "0x10", ""])
def test_other_numbers_are_left_to_typer(value: str) -> None:
    assert _plain(float, True, value) is MISSING


@given(st.text(max_size=30))
def test_a_text_is_typer_s_text(value: str) -> None:
    assert _plain(str, True, value) == typer_s(str, value)


@pytest.mark.parametrize("value", ["real.json", "a//b/", ".", "x y", "a\udcff"])
def test_a_path_taken_here_is_typer_s_path(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "real.json").write_text("{}")
    expected = typer_s(Path, value)
    taken = _plain(Path, True, value)
    assert taken is MISSING or (taken == expected and type(taken) is type(expected))
    assert _plain(Path, False, value) == expected


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_an_unreadable_path_is_left_to_typer(tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    secret.chmod(0)
    assert _plain(Path, True, str(secret)) is MISSING


@pytest.mark.parametrize(
    ("band", "message"),
    [
        (
            "abc",
            "Invalid value for '--band': Input should be a valid number, unable to parse string as a number",
        ),
        (
            "\u0661",
            "Invalid value for '--band': Input should be a valid number, unable to parse string as a number",
        ),
        ("-1", "error: --band: -1.0 must be a number >= 0"),
        ("nan", "error: --band: nan must be a number >= 0"),
    ],
)
def test_a_bad_band_gets_typer_s_message_and_exit_2(band: str, message: str) -> None:
    result = CliRunner().invoke(app, ["plan", *FILES, f"--band={band}", "--json"])
    assert result.exit_code == 2
    assert message in result.output


def test_a_band_written_otherwise_plans_as_the_same_band() -> None:
    runner = CliRunner()
    plain, exponent = (
        runner.invoke(app, ["plan", *FILES, f"--band={band}", "--json"]) for band in ("0.05", "5e-2")
    )
    assert plain.exit_code == exponent.exit_code == 0
    assert plain.output == exponent.output
