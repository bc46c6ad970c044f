"""`python -m rebal_tracker`: the tracker on its own port (exit 4 on a configuration error, named)."""

from rebal import service
from rebal_tracker.app import build
from rebal_tracker.settings import TrackerSettings

settings = service.settings_or_exit(TrackerSettings)
service.serve(build(settings), settings)
