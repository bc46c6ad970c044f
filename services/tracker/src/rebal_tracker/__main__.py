"""`python -m rebal_tracker`: the tracker on its own port (exit 4 on a configuration error, named)."""

from rebal import service
from rebal_tracker.settings import TrackerSettings

service.settings_or_exit(TrackerSettings)

from rebal_tracker.app import app, settings  # noqa: E402 - reads the same, valid, settings

service.serve(app, settings)
