"""`python -m rebal_optimizer`: the optimizer on its own port (exit 4 on a configuration error, named)."""

from rebal import service
from rebal_optimizer.settings import OptimizerSettings

service.settings_or_exit(OptimizerSettings)

from rebal_optimizer.app import app, settings  # noqa: E402 - reads the same, valid, settings

service.serve(app, settings)
