"""`rebal plan --json` with a helper process (`rebal_cli.forked`): the same bytes, the same errors and
exit codes as one process, helpers always reaped, and one process where a helper cannot help."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from rebal import render
from rebal.core.diff import diff_trees
from rebal.core.market import Markets, Prices
from rebal.core.plan import Plan, plan_rebalance
from rebal.core.tree import Tree
from rebal.io import FileError, load, load_tree
from rebal_cli import forked
from tests.bench.test_reference_agreement import generate

ROOT = Path(__file__).resolve().parents[2]
REBAL = Path(sys.executable).parent / "rebal"
ALWAYS, NEVER = "0", str(1 << 40)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A generated portfolio of 3,000 wallets (locks, new and dropped positions, missing markets)."""
    folder = tmp_path_factory.mktemp("plan")
    paths = generate.write(folder, generate.generate(3_000, 11))
    return dict(zip(("real", "target", "prices", "markets"), paths, strict=True))


def planned(files: dict[str, Path]) -> Plan:
    real, target = load_tree(files["real"], "real"), load_tree(files["target"], "target")
    prices = load(files["prices"], Prices.parse)
    return plan_rebalance(diff_trees(real, target, prices), load(files["markets"], Markets.parse))


def rebal_plan(files: dict[str, Path], parallel_from: str) -> subprocess.CompletedProcess[bytes]:
    args = [f"--{name}={path}" for name, path in files.items()]
    environment = {**os.environ, forked.PARALLEL_FROM: parallel_from}
    return subprocess.run(
        [str(REBAL), "plan", *args, "--json"], capture_output=True, env=environment, timeout=120, check=False
    )


@pytest.fixture
def helpers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The ids of the helpers forked during a test; none is left running or unreaped after it."""
    forks: list[int] = []
    fork = forked._fork

    def recorded(work: forked.Work) -> forked._Helper | None:
        helper = fork(work)
        if helper is not None:
            forks.append(helper.pid)
        return helper

    monkeypatch.setattr(forked, "_fork", recorded)
    yield forks
    for pid in forks:
        with pytest.raises(ChildProcessError):  # reaped: no zombie, nothing running
            os.waitpid(pid, os.WNOHANG)


def test_the_cli_writes_the_same_bytes_with_a_helper(files: dict[str, Path]) -> None:
    alone, helped = rebal_plan(files, NEVER), rebal_plan(files, ALWAYS)
    assert alone.returncode == helped.returncode == 0, helped.stderr
    assert helped.stdout == alone.stdout
    assert len(alone.stdout) > 1_000_000
    assert helped.stderr == alone.stderr


def test_the_console_script_ends_after_writing_what_the_app_writes_in_process(files: dict[str, Path]) -> None:
    """The console script ends the process as soon as the plan is written (`rebal_cli.app._written`):
    the whole JSON, flushed, exit code 0; in a process of its own the app returns as usual."""
    from typer.testing import CliRunner

    from rebal_cli.app import app

    console = rebal_plan(files, ALWAYS)
    in_process = CliRunner().invoke(
        app, ["plan", *(f"--{name}={path}" for name, path in files.items()), "--json"]
    )
    assert console.returncode == in_process.exit_code == 0, console.stderr
    assert console.stdout == in_process.stdout_bytes
    assert console.stderr == b""


@pytest.mark.parametrize("rows", [1_000, 777, 100_000])
def test_chunks_made_by_a_helper_are_written_in_order(
    files: dict[str, Path], helpers: list[int], monkeypatch: pytest.MonkeyPatch, rows: int
) -> None:
    plan = planned(files)
    alone = io.BytesIO()
    render.write_plan_json(plan, alone, pretty=False)
    monkeypatch.setattr(render, "CHUNK_ROWS", rows)  # many chunks: the helper makes every other one
    received: list[bytes | None] = []
    receive = forked._received_chunk

    def counted(helper: forked._Helper) -> bytes | None:
        received.append(receive(helper))
        return received[-1]

    monkeypatch.setattr(forked, "_received_chunk", counted)
    helped = io.BytesIO()
    forked.write_plan_json(plan, helped, apart=True)
    assert helped.getvalue() == alone.getvalue()
    assert len(helpers) == 1
    chunks = sum(1 for part in render.plan_parts(plan) if not isinstance(part, bytes))
    made, of = forked.HELPER_SHARE
    theirs = chunks * made // of
    assert len(received) >= theirs and None not in received[:theirs]  # the helper's share came from it


def test_a_helper_that_dies_midway_leaves_its_chunks_to_the_parent(
    files: dict[str, Path], helpers: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = planned(files)
    alone = io.BytesIO()
    render.write_plan_json(plan, alone, pretty=False)
    monkeypatch.setattr(render, "CHUNK_ROWS", 500)
    send = forked._send_chunks

    def dying(pipe: BinaryIO, parts: Iterable[render.Part]) -> None:
        send(pipe, list(parts)[:20])  # some chunks, then killed
        os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(forked, "_send_chunks", dying)
    helped = io.BytesIO()
    forked.write_plan_json(plan, helped, apart=True)
    assert helped.getvalue() == alone.getvalue()


def test_the_desired_tree_read_by_a_helper_is_the_tree(
    files: dict[str, Path], helpers: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[Tree | None] = []
    receive = forked._received_tree

    def counted(helper: forked._Helper) -> Tree | None:
        received.append(receive(helper))
        return received[-1]

    monkeypatch.setattr(forked, "_received_tree", counted)
    with forked.tree_read_apart(files["target"], "target", apart=True) as read:
        helped = read()
    alone = load_tree(files["target"], "target")
    assert len(helpers) == 1
    assert received == [helped]  # the helper's tree, not one read again here
    for name, value in vars(alone).items():
        theirs = getattr(helped, name)
        if hasattr(value, "ids"):  # a Categorical
            assert theirs.vocabulary == value.vocabulary, name
            assert (theirs.ids == value.ids).all(), name
        elif hasattr(value, "dtype"):
            assert theirs.tobytes() == value.tobytes(), name
        else:
            assert theirs == value, name


def test_a_helper_that_dies_leaves_the_tree_to_the_parent(
    files: dict[str, Path], helpers: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(forked, "_send_tree", lambda *_: os.kill(os.getpid(), signal.SIGKILL))
    with forked.tree_read_apart(files["target"], "target", apart=True) as read:
        tree = read()
    assert tree.names == load_tree(files["target"], "target").names
    assert len(helpers) == 1


def test_a_helper_is_reaped_when_the_reader_is_interrupted(
    files: dict[str, Path], helpers: list[int]
) -> None:
    with pytest.raises(KeyboardInterrupt), forked.tree_read_apart(files["target"], "target", apart=True):
        raise KeyboardInterrupt
    assert len(helpers) == 1  # and reaped (the fixture)


@pytest.mark.parametrize("which", ["real", "target"])
def test_a_bad_tree_gets_the_same_message_and_exit_code_with_a_helper(
    files: dict[str, Path], tmp_path: Path, which: str
) -> None:
    text = files[which].read_bytes()
    bad = tmp_path / f"{which}.json"
    at = len(text) * 2 // 3
    bad.write_bytes(text[:at] + b"]" + text[at:])  # malformed, deep in a large file
    broken = {**files, which: bad}
    alone, helped = rebal_plan(broken, NEVER), rebal_plan(broken, ALWAYS)
    assert alone.returncode == helped.returncode == 2
    assert helped.stderr == alone.stderr
    assert helped.stderr.decode().startswith(f"error: {bad}: ")
    assert helped.stderr.count(b"\n") == 1
    assert helped.stdout == alone.stdout == b""


def test_a_bad_tree_is_named_after_the_other_inputs_as_before(files: dict[str, Path], tmp_path: Path) -> None:
    """Both trees bad: the real tree is named, as when they are read one after the other."""
    bad_real, bad_target = tmp_path / "real.json", tmp_path / "target.json"
    bad_real.write_bytes(files["real"].read_bytes()[:-5])
    bad_target.write_bytes(files["target"].read_bytes()[:-5])
    broken = {**files, "real": bad_real, "target": bad_target}
    helped = rebal_plan(broken, ALWAYS)
    assert helped.returncode == 2
    assert helped.stderr == rebal_plan(broken, NEVER).stderr
    assert str(bad_real).encode() in helped.stderr


def test_a_bad_node_in_the_desired_tree_is_named_with_a_helper(
    files: dict[str, Path], tmp_path: Path
) -> None:
    text = files["target"].read_bytes()
    bad = tmp_path / "target.json"
    bad.write_bytes(text.replace(b'"weight":', b'"wieght":', 1))
    with forked.tree_read_apart(bad, "target", apart=True) as read, pytest.raises(FileError) as raised:
        read()
    with pytest.raises(FileError) as alone:
        load_tree(bad, "target")
    assert str(raised.value) == str(alone.value)
    assert "wieght" in str(raised.value)


def test_one_process_where_a_helper_cannot_help(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    trees = (files["real"], files["target"])
    monkeypatch.setenv(forked.PARALLEL_FROM, ALWAYS)
    assert forked.parallel(*trees)
    monkeypatch.setenv(forked.PARALLEL_FROM, NEVER)
    assert not forked.parallel(*trees)  # small trees: forking costs more than it saves
    monkeypatch.delenv(forked.PARALLEL_FROM)
    assert not forked.parallel(*trees)  # below the default size
    monkeypatch.setenv(forked.PARALLEL_FROM, ALWAYS)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0}, raising=False)
    assert not forked.parallel(*trees)  # one CPU
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1}, raising=False)
    monkeypatch.delattr(os, "fork")
    assert not forked.parallel(*trees)  # no fork (Windows)


def test_without_fork_the_parent_does_it_all(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    plan = planned(files)
    alone = io.BytesIO()
    render.write_plan_json(plan, alone, pretty=False)

    def refused() -> int:
        raise OSError("Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", refused)
    helped = io.BytesIO()
    forked.write_plan_json(plan, helped, apart=True)
    assert helped.getvalue() == alone.getvalue()
    with forked.tree_read_apart(files["target"], "target", apart=True) as read:
        assert read().names == load_tree(files["target"], "target").names
