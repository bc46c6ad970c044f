"""`python -m rebal_tracker`: the tracker on its own port."""

from rebal import service
from rebal_tracker.app import app, settings

service.serve(app, settings)
