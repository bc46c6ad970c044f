"""The dev stack's secrets, made once under ``var/secrets/`` and readable by their owner only.

`make run` closes its bus and its database as production does: nats-server loads deploy/nats/auth.conf
(every service, the operators' CLI, the migration and each demo strategy a user of its own, no anonymous
access) with a generated password per user, and Postgres asks for a password (scram-sha-256).
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

SECRETS_DIR = "secrets"
AUTH_CONF = Path("deploy") / "nats" / "auth.conf"
POSTGRES_PASSWORD_FILE = "postgres-password"
_USER = re.compile(r"\{user: ([a-z-]+), password: \$([A-Z_]+)")


def auth_users(auth_conf: Path) -> dict[str, str]:
    """Every user of an auth.conf (``bot-trend``), with the variable its password is read from
    (``BOT_TREND_PASSWORD``)."""
    return dict(_USER.findall(auth_conf.read_text()))


def new_secret() -> str:
    """192 random bits, as a word: nats-server parses the passwords auth.conf reads from the environment
    as configuration values, so one starting with a digit or a sign would be taken for a number."""
    return f"rebal-{secrets.token_hex(24)}"


def secret_file(path: Path) -> Path:
    """``path`` holding a random secret, made when missing; owner-only (0600, in a 0700 directory when
    this makes the directory), also when it was there with a wider mode."""
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(new_secret() + "\n")
    elif path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return path


def read_secret(path: Path) -> str:
    return path.read_text().strip()


def secrets_dir(var_dir: Path) -> Path:
    return var_dir / SECRETS_DIR


def nats_password_file(var_dir: Path, user: str) -> Path:
    """Where the dev stack keeps NATS user ``user``'s password."""
    return secrets_dir(var_dir) / f"nats-{user}"


def postgres_password_file(var_dir: Path) -> Path:
    """Where the dev stack keeps the password of Postgres's ``postgres`` role."""
    return secrets_dir(var_dir) / POSTGRES_PASSWORD_FILE
