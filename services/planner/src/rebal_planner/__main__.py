"""`python -m rebal_planner`: the planner on its own port (exit 4 on a configuration error, named)."""

from rebal import service
from rebal_planner.app import build
from rebal_planner.settings import PlannerSettings

settings = service.settings_or_exit(PlannerSettings)
service.serve(build(settings), settings)
