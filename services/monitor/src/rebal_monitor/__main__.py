"""`python -m rebal_monitor`: the monitor (journal, API, dashboard) on its own port."""

import logging
import sys

import uvicorn

from rebal import service
from rebal.settings import EXIT_CONFIGURATION
from rebal_monitor.app import build
from rebal_monitor.settings import MonitorSettings, token_problem

settings = service.settings_or_exit(MonitorSettings)
problem = token_problem(settings)
if problem is not None:
    print(f"rebal-monitor: configuration error: {problem}", file=sys.stderr)
    sys.exit(EXIT_CONFIGURATION)
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
app = build(settings)
service.tune_garbage_collector()
logging.getLogger("rebal.monitor").info("starting on http://%s:%d", settings.http.host, settings.http.port)
uvicorn.run(app, host=settings.http.host, port=settings.http.port, log_level="warning", lifespan="on")
