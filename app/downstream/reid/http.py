"""The HTTP endpoints of a re-identification service, on aiohttp (installed with Faust).

``POST /identify`` answers 503 until the view has caught up with the topic, rather than
answering from a partial view, and searches on a worker thread so a large batch never holds up
``/health`` or ``/metrics``. Errors are JSON ``{"error": ...}`` with the status that says whose
fault it is. ``/openapi.json`` serves ``schemas/openapi.reid.json``, the description a client
is written against.
"""

from __future__ import annotations

import asyncio
import time
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from app.downstream.reid.request import BadRequest, parse_identify

if TYPE_CHECKING:
    from app.downstream.reid.service import ReidService

MAX_BODY_BYTES = 64 << 20  # 10,000 vectors of 512 floats as JSON fit with room to spare
SERVICE: web.AppKey[ReidService] = web.AppKey("service")
PROMETHEUS_TYPE = "text/plain; version=0.0.4"


def make_app(service: ReidService) -> web.Application:
    """The aiohttp application of ``service``."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[SERVICE] = service
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/stats", stats)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_post("/identify", identify)
    app.router.add_get("/clusters/{cluster_id}", cluster)
    return app


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


async def health(request: web.Request) -> web.Response:
    """200 while the service works; 503 once a part of it failed (a restart is needed)."""
    failure = request.app[SERVICE].failure()
    if failure:
        return _json({"status": "failed", "reason": failure}, 503)
    return _json({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """200 once the view caught up with the end of the topic as it was at start."""
    service = request.app[SERVICE]
    ok = service.follower.ready.is_set() and not service.failure()
    body = {"ready": ok, "status": service.follower.status, "clusters": len(service.state),
            "lag": service.follower.lag}
    return _json(body, 200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    body = request.app[SERVICE].metrics.render()
    return web.Response(body=body, headers={"Content-Type": PROMETHEUS_TYPE})


async def stats(request: web.Request) -> web.Response:
    """What the service holds and how far it has read."""
    return _json(request.app[SERVICE].stats())


@cache
def _openapi() -> bytes:
    text = resources.files("schemas").joinpath("openapi.reid.json").read_bytes()
    return orjson.dumps(orjson.loads(text))


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 description of these endpoints."""
    return web.Response(body=_openapi(), content_type="application/json")


async def identify(request: web.Request) -> web.Response:
    """Top-k realized clusters for one vector or a batch, each with a ``match`` flag."""
    service = request.app[SERVICE]
    began = time.perf_counter()
    if not service.follower.ready.is_set():
        message = f"still reading the cluster events ({service.follower.status}); retry soon"
        return _json({"error": message}, 503)
    try:
        body = await request.read()
        query = parse_identify(body, request.headers.get("Content-Type", ""),
                               k=service.k, threshold=service.threshold)
        answers = await asyncio.to_thread(
            service.state.identify, query.queries, query.k, query.threshold
        )
    except web.HTTPRequestEntityTooLarge:
        service.metrics.bad_requests.inc()
        return _json({"error": f"the body is larger than {MAX_BODY_BYTES} bytes"}, 413)
    except BadRequest as exc:
        service.metrics.bad_requests.inc()
        return _json({"error": str(exc)}, exc.status)
    except ValueError as exc:  # a dimension other than the clusters'
        service.metrics.bad_requests.inc()
        return _json({"error": str(exc)}, 400)
    service.metrics.count_answers("http", answers)
    result = {"results": [a.to_dict() for a in answers], "k": query.k,
              "threshold": query.threshold, "clusters": len(service.state)}
    service.metrics.request_seconds.observe(time.perf_counter() - began)
    return _json(result)


async def cluster(request: web.Request) -> web.Response:
    """A cluster id as consumers saw it, resolved through merges to the cluster holding it now."""
    service = request.app[SERVICE]
    asked = request.match_info["cluster_id"]
    current, found = service.state.lookup(asked)
    if found is None:
        gone = f" (merged into {current!r}, not realized now)" if current != asked else ""
        message = f"no realized cluster {asked!r}{gone}; it may have been deleted"
        return _json({"error": message, "cluster_id": current}, 404)
    return _json({"requested": asked, "cluster_id": current, "merged": current != asked,
                  "num_observations": found.num_observations})
