"""`python -m rebal_optimizer`: the optimizer on its own port."""

from rebal import service
from rebal_optimizer.app import app, settings

service.serve(app, settings)
