"""Text Postgres cannot hold is refused where it enters from a file (issue 19.1, "everywhere text
enters"): a NUL in a tree, prices or any document read by `rebal.io` is one line naming the file and the
path, exit 2, before anything is planned, published or stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rebal.io import FileError, load_document
from rebal_cli.app import app

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("tree.json", '{"name": "demo", "children": [{"name": "sp\\u0000ot"}]}', "children[0].name"),
        ("tree.yaml", 'name: demo\nchildren:\n  - name: "sp\\0ot"\n', "children[0].name"),
        ("prices.json", '{"prices": {"BTC/\\u0000USDT": "60000"}}', "prices"),
    ],
)
def test_a_nul_in_a_file_is_refused_naming_where(tmp_path: Path, name: str, text: str, where: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(FileError) as refused:
        load_document(path)
    assert refused.value.where == where
    assert "NUL character (U+0000), which cannot be stored" in refused.value.message


def test_rebal_plan_refuses_a_tree_with_a_nul_in_one_line(tmp_path: Path) -> None:
    real = json.loads((DEMO / "real.json").read_text())
    real["children"][0]["name"] = "pa\u0000per"
    path = tmp_path / "real.json"
    path.write_text(json.dumps(real))
    ran = CliRunner().invoke(
        app,
        [
            "plan",
            "--real",
            str(path),
            "--target",
            str(DEMO / "target.json"),
            "--prices",
            str(DEMO / "prices.json"),
        ],
    )
    assert ran.exit_code == 2, ran.output
    assert (
        ran.stderr
        == f"error: {path}: children[0].name: contains a NUL character (U+0000), which cannot be stored\n"
    )
