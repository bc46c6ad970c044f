"""`rebal plan --json` writes compact JSON into a file or a pipe and indented JSON to a terminal, with
the same content either way (docs/formats.md)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
REBAL = Path(sys.executable).parent / "rebal"
ARGS = [
    "plan",
    *("--real", str(EXAMPLES / "real.json"), "--target", str(EXAMPLES / "target.json")),
    *("--prices", str(EXAMPLES / "prices.json"), "--markets", str(EXAMPLES / "markets.json")),
    "--json",
]


def on_a_terminal() -> bytes:
    """What `rebal plan --json` prints when its stdout is a terminal (a pseudo-terminal here)."""
    leader, follower = pty.openpty()
    process = subprocess.Popen([str(REBAL), *ARGS], stdout=follower, stderr=subprocess.PIPE)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 1 << 16)
        except OSError:  # the terminal is gone: the process closed it
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=60) == 0
    return b"".join(chunks).replace(b"\r\n", b"\n")


def test_a_file_or_pipe_gets_compact_json_and_a_terminal_indented_json() -> None:
    piped = subprocess.run([str(REBAL), *ARGS], capture_output=True, check=True, timeout=60).stdout
    assert piped.endswith(b"}\n") and piped.count(b"\n") == 1  # one line
    assert b'{"diff":{"path":"alice",' in piped
    shown = on_a_terminal()
    assert shown.startswith(b'{\n  "diff": {\n    "path": "alice",')
    assert json.loads(shown) == json.loads(piped)
