"""`python -m rebal_planner`: the planner on its own port (exit 4 on a configuration error, named)."""

from rebal import service
from rebal_planner.settings import PlannerSettings

service.settings_or_exit(PlannerSettings)

from rebal_planner.app import app, settings  # noqa: E402 - reads the same, valid, settings

service.serve(app, settings)
