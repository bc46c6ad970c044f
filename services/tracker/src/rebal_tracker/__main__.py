"""`python -m rebal_tracker`: the tracker on its own port (exit 4 on a configuration error, named)."""

import sys

from pydantic import ValidationError

from rebal import service
from rebal_tracker.settings import TrackerSettings

CONFIG_ERROR = 4

try:
    TrackerSettings()
except ValidationError as exc:
    print(f"rebal-tracker: configuration error: {exc}", file=sys.stderr)
    sys.exit(CONFIG_ERROR)

from rebal_tracker.app import app, settings  # noqa: E402 - reads the same, valid, settings

service.serve(app, settings)
