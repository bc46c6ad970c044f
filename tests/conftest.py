# Real NATS JetStream and Postgres fixtures (nats_server, postgres_dsn, database) for integration tests.
pytest_plugins = ["rebal_devstack.pytest_plugin"]
