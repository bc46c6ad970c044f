"""`python -m rebal_executor`: the executor on its own port (exit 4 on a configuration error, named)."""

from rebal import service
from rebal_executor.app import build
from rebal_executor.settings import ExecutorSettings

settings = service.settings_or_exit(ExecutorSettings)
service.serve(build(settings), settings)
