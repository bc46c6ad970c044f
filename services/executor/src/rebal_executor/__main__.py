"""`python -m rebal_executor`: the executor on its own port (exit 4 on a configuration error, named)."""

from rebal import service
from rebal_executor.settings import ExecutorSettings

service.settings_or_exit(ExecutorSettings)

from rebal_executor.app import app, settings  # noqa: E402 - reads the same, valid, settings

service.serve(app, settings)
