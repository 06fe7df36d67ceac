"""The worker's HTTP pages: /health, /ready, /metrics, /stats and POST /reload."""

from __future__ import annotations

import faust
from faust.web import Request, Response, View

from app.worker.runtime import Runtime

PROMETHEUS_TYPE = "text/plain"


def _crash(app: faust.App) -> str:
    """Why a part of the Faust app crashed ('' if none): a crashed fetcher consumes nothing."""
    for service in (app, app.consumer, getattr(app, "_fetcher", None)):
        reason = getattr(service, "crash_reason", None)
        if reason is not None:
            return repr(reason)
    return ""


def attach(app: faust.App, runtime: Runtime) -> None:
    """Register the pages on ``app``."""

    @app.page("/health")
    async def health(web: View, request: Request) -> Response:
        crashed = _crash(app)
        if crashed:
            return web.json({"status": "crashed", "reason": crashed}, status=503)
        return web.json({"status": "ok"})

    @app.page("/ready")
    async def ready(web: View, request: Request) -> Response:
        store, broker = runtime.outage.available, runtime.broker_outage.available
        ok = runtime.ready and not runtime.config_errors and runtime.assigned is not None
        ok = ok and store and broker
        body = {
            "ready": ok, "index_loaded": runtime.ready, "assigned": runtime.assigned,
            "store_available": store, "broker_available": broker,
            "config_errors": runtime.config_errors,
        }
        return web.json(body, status=200 if ok else 503)

    @app.page("/metrics")
    async def metrics(web: View, request: Request) -> Response:
        return web.bytes(runtime.metrics.render(), content_type=PROMETHEUS_TYPE)

    @app.page("/stats")
    async def stats(web: View, request: Request) -> Response:
        return web.json(await runtime.stats())

    @app.page("/reload")
    class Reload(View):
        """Re-read and apply the config file; 500 with the problems when it is invalid."""

        async def post(self, request: Request) -> Response:
            errors = await runtime.reload()
            if errors:
                return self.json({"reloaded": False, "errors": errors}, status=500)
            return self.json({"reloaded": True})
