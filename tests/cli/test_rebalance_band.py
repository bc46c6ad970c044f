"""`rebal rebalance --band`: a band outside 0..1 is refused with one line, before anything is sent (the
command's event refuses 1e400 anyway, which showed as a traceback; the API caps the band at 1)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from rebal_cli.app import app


@pytest.mark.parametrize("band", ["1e400", "1.5", "-0.1", "abc"])
def test_a_band_outside_0_to_1_exits_2_naming_it(band: str) -> None:
    result = CliRunner().invoke(
        app, ["rebalance", "--portfolio", "demo", "--band", band, "--nats-url", "nats://127.0.0.1:1"]
    )
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: --band: {band!r} must be a decimal from 0 to 1\n"
