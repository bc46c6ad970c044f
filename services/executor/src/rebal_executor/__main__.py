"""`python -m rebal_executor`: the executor on its own port."""

from rebal import service
from rebal_executor.app import app, settings

service.serve(app, settings)
