"""Rebal local infrastructure: real NATS JetStream and Postgres servers as child processes.

Used by ``make run`` and by the integration tests (through :mod:`rebal_devstack.pytest_plugin`).
Every server started here is stopped when the interpreter exits.
"""

from rebal_devstack.nats import ClusterSettings, NatsCluster, NatsServer, find_nats_server
from rebal_devstack.postgres import (
    PostgresServer,
    create_database,
    drop_database,
    dsn_with_database,
    find_postgres_bin_dir,
    wait_for_postgres,
)

__all__ = [
    "ClusterSettings",
    "NatsCluster",
    "NatsServer",
    "PostgresServer",
    "create_database",
    "drop_database",
    "dsn_with_database",
    "find_nats_server",
    "find_postgres_bin_dir",
    "wait_for_postgres",
]
