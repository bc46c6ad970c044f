"""`python -m rebal_optimizer`: the optimizer on its own port (exit 4 on a configuration error, named)."""

import sys

from pydantic import ValidationError

from rebal import service
from rebal_optimizer.settings import OptimizerSettings

CONFIG_ERROR = 4

try:
    OptimizerSettings()
except ValidationError as exc:
    print(f"rebal-optimizer: configuration error: {exc}", file=sys.stderr)
    sys.exit(CONFIG_ERROR)

from rebal_optimizer.app import app, settings  # noqa: E402 - reads the same, valid, settings

service.serve(app, settings)
