"""`python -m rebal_planner`: the planner on its own port."""

from rebal import service
from rebal_planner.app import app, settings

service.serve(app, settings)
