"""The Faust application of a worker: broker, security, web port, topics.

Only wiring lives here; what each agent, timer and page does is in ``app.worker.runtime``.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import faust

from app.kafka_client import TOPIC_WAIT_S, ensure_topics, wait_for_topics
from app.settings import Settings
from app.worker.runtime import Runtime


def broker_urls(settings: Settings) -> list[str]:
    """``host:port,host:port`` as Faust's list of ``kafka://`` URLs."""
    return [f"kafka://{host.strip()}" for host in settings.kafka_bootstrap.split(",") if host]


def broker_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """SASL and/or TLS credentials from the ``FVC_*`` security settings."""
    protocol = settings.security_protocol
    context = None
    if protocol.endswith("SSL"):
        context = ssl.create_default_context(cafile=settings.ssl_cafile or None)
        if settings.ssl_certfile:
            context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile or None)
    if protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password.get_secret_value(),
            mechanism=settings.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def leader_topic(settings: Settings) -> str:
    """The topic Faust elects the leader by (its own name for it, app version 1).

    The worker that holds its one partition runs the leader timers: publishing, realization,
    merge and retention.
    """
    return f"{settings.app_id}-__assignor-__leader"


def wait_for_subscriptions(runtime: Runtime, timeout_s: float = TOPIC_WAIT_S) -> float:
    """Create Faust's leader topic, then wait until the broker lists it and every input topic.

    The first assignment of a consumer group leaves out every topic its leader's metadata
    lacks, until a metadata refresh minutes later (see ``wait_for_topics``). On a broker that
    has just started, topics created a moment before can be missing: a worker subscribing then
    would read no camera topic, and without the leader topic no worker would run the leader
    timers. Faust creates that topic as it starts, too late to wait for; creating it first
    lets one wait cover both. Returns the seconds waited.
    """
    settings = runtime.settings
    ensure_topics(settings, [leader_topic(settings)], partitions=1)
    return wait_for_topics(settings, [*runtime.config.topics, leader_topic(settings)], timeout_s)


def create_app(runtime: Runtime) -> faust.App:
    """A Faust app with the worker's agents, timers and pages attached."""
    from agents import ingest, timers, web

    settings = runtime.settings
    # Faust makes its data dir without parents: a worker started in a fresh folder would stop
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=broker_urls(settings),
        broker_credentials=broker_credentials(settings),
        store="memory://",
        datadir=settings.data_dir,
        web_port=settings.web_port,
        web_bind="0.0.0.0",  # noqa: S104 - the pod's probes and metrics scrapes come from outside
        web_enabled=True,
        web_host="localhost",
        topic_partitions=settings.topic_partitions,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_commit_interval=1.0,
        # A killed worker's partitions move after this, not Faust's default minute.
        broker_session_timeout=settings.group_session_timeout_s,
        broker_heartbeat_interval=settings.group_heartbeat_s,
        stream_wait_empty=False,
        autodiscover=False,
    )
    ingest.attach(app, runtime)
    timers.attach(app, runtime)
    web.attach(app, runtime)
    return app
