"""`python -m rebal_optimizer`: the optimizer on its own port (exit 4 on a configuration error, named)."""

from rebal import service
from rebal_optimizer.app import build
from rebal_optimizer.settings import OptimizerSettings

settings = service.settings_or_exit(OptimizerSettings)
service.serve(build(settings), settings)
