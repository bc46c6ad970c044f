"""`python -m rebal_monitor`: the monitor on its own port."""

from rebal import service
from rebal_monitor.app import app, settings

service.serve(app, settings)
