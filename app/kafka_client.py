"""confluent-kafka clients configured from Settings: one place for bootstrap, SASL and TLS.

Every command that talks to Kafka through confluent-kafka (produce, tail, admin tasks) builds its
client here, so a secured cluster needs only the ``FVC_*`` security settings, never a code change,
and the producer, consumer and admin client can never disagree about how to connect. Consumers
sort the errors librdkafka delivers among their messages with ``records_of``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic, TopicMetadata

from app.errors import FvcError
from app.settings import Settings

log = logging.getLogger(__name__)

ADMIN_TIMEOUT_S = 15.0
TOPIC_WAIT_S = 60.0
TOPIC_POLL_S = 0.2
TOPIC_REPORT_S = 5.0  # while waiting for topics, one log line this often
# librdkafka's own log lines (connection refused, retries...) go to this logger rather than
# straight to stderr, so a worker's logging config governs them and a command can quiet them.
LIBRDKAFKA_LOG = logging.getLogger("fvc.librdkafka")


def client_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """The librdkafka properties every client shares, then ``extra`` (dots as in librdkafka).

    SASL and TLS properties appear only when the security protocol uses them, so a plaintext
    local broker gets a minimal config and librdkafka never warns about unused properties.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "security.protocol": settings.security_protocol.lower(),
        "logger": LIBRDKAFKA_LOG,
    }
    if settings.security_protocol.startswith("SASL"):
        config["sasl.mechanism"] = settings.sasl_mechanism
        if settings.sasl_username:
            config["sasl.username"] = settings.sasl_username
            config["sasl.password"] = settings.sasl_password.get_secret_value()
    if settings.security_protocol.endswith("SSL"):
        tls = {
            "ssl.ca.location": settings.ssl_cafile,
            "ssl.certificate.location": settings.ssl_certfile,
            "ssl.key.location": settings.ssl_keyfile,
        }
        config.update({name: path for name, path in tls.items() if path})
    config.update(extra)
    return config


def quiet_client_logs() -> None:
    """Silence librdkafka's own log, for one-shot commands.

    They report failures themselves, so librdkafka's repeated connection errors would only bury
    the one line that explains what went wrong.
    """
    LIBRDKAFKA_LOG.setLevel(logging.CRITICAL)


def make_producer(settings: Settings, **extra: Any) -> Producer:
    """A producer that keeps per-partition order even when it retries (idempotence on)."""
    defaults = {"enable.idempotence": True, "linger.ms": 5, "compression.type": "lz4"}
    return Producer(client_config(settings, **(defaults | extra)))


def make_consumer(
    settings: Settings, group: str | None = None, *, from_beginning: bool = False, **extra: Any
) -> Consumer:
    """A consumer in ``group``, or in a unique one-off group that never commits offsets.

    A one-off group leaves no state on the broker that a later run could resume from by
    accident, so "only new records" and "from the beginning" always mean what they say.
    ``extra`` overrides these defaults (a reader that must know where a partition ends turns
    ``enable.partition.eof`` on).
    """
    one_off = group is None
    defaults = {
        "group.id": group or f"fvc-oneoff-{uuid.uuid4().hex[:12]}",
        "auto.offset.reset": "earliest" if from_beginning else "latest",
        "enable.auto.commit": not one_off,
        "enable.partition.eof": False,
    }
    return Consumer(client_config(settings, **(defaults | extra)))


def records_of(messages: Iterable[Message]) -> list[Message]:
    """The messages that carry a record; a fatal client error raises FvcError.

    librdkafka also hands over errors as messages. Most are passing (a broker restart, a topic
    not created yet) and the client recovers by itself, so they are logged and skipped; a fatal
    one (fencing, an idempotence failure) means this client can do nothing more.
    """
    records = []
    for message in messages:
        error = message.error()
        if error is None:
            records.append(message)
        else:
            raise_if_fatal(error)
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer: %s", error.str())
    return records


def raise_if_fatal(error: KafkaError) -> None:
    """Raise FvcError for an error after which the client cannot go on."""
    if error.fatal():
        message = f"Kafka consumer failed: {error.str()}"
        raise FvcError(message)


def make_admin(settings: Settings, **extra: Any) -> AdminClient:
    """An admin client with the shared connection settings."""
    return AdminClient(client_config(settings, **extra))


def ensure_topics(
    settings: Settings,
    topics: Iterable[str],
    partitions: int | None = None,
    *,
    compacted: bool = False,
    keep_forever: bool = False,
    timeout: float = ADMIN_TIMEOUT_S,
) -> list[str]:
    """Create the topics that do not exist yet; existing ones are left exactly as they are.

    Returns the topics it created. ``partitions`` defaults to ``settings.topic_partitions``.
    A broker that cannot be reached or refuses the creation becomes an FvcError naming it.
    """
    wanted = sorted(set(topics))
    admin = make_admin(settings)  # must outlive the futures, or they fail with _DESTROY
    existing = topic_names(settings, timeout=timeout, admin=admin)
    missing = [t for t in wanted if t not in existing]
    if not missing:
        return []
    count = partitions or settings.topic_partitions
    configs = {"cleanup.policy": "compact"} if compacted else {}
    if keep_forever:
        configs["retention.ms"] = "-1"
    futures = admin.create_topics(
        [
            NewTopic(t, num_partitions=count, replication_factor=-1, config=configs)
            for t in missing
        ],
        request_timeout=timeout,
    )
    created = []
    for topic, future in futures.items():
        try:
            future.result(timeout=timeout)
            created.append(topic)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                message = f"cannot create topic {topic!r}: {exc.args[0].str()}"
                raise FvcError(message) from exc
    return sorted(created)


def topic_names(
    settings: Settings, *, timeout: float = ADMIN_TIMEOUT_S, admin: AdminClient | None = None
) -> set[str]:
    """Names of the topics on the cluster; an unreachable broker is an FvcError."""
    return set(cluster_metadata(settings, timeout=timeout, admin=admin).topics)


def cluster_metadata(
    settings: Settings, *, timeout: float = ADMIN_TIMEOUT_S, admin: AdminClient | None = None
) -> ClusterMetadata:
    """The broker's metadata of every topic; an unreachable broker is an FvcError."""
    admin = admin or make_admin(settings)
    try:
        return admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        message = f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc.args[0].str()}"
        raise FvcError(message) from exc


def wait_for_topics(
    settings: Settings, topics: Iterable[str], timeout_s: float = TOPIC_WAIT_S
) -> float:
    """Wait until the broker's metadata lists every topic with its partitions and their leaders.

    A consumer group's leader assigns only the partitions its metadata lists when the group
    forms, and neither aiokafka (Faust) nor librdkafka looks again before its next metadata
    refresh, minutes later. A broker that has just started can leave a topic created a moment
    before out of its metadata for a second or more, and a worker that subscribed then would
    hold no partition of it. So a worker calls this between creating its topics and subscribing.

    Returns the seconds waited. Raises FvcError naming what is still missing after
    ``timeout_s``, or when the broker cannot be reached.
    """
    wanted = sorted(set(topics))
    admin = make_admin(settings)
    started = time.monotonic()
    deadline, report_at = started + timeout_s, started
    while unready := _not_ready(settings, admin, wanted, deadline):
        now = time.monotonic()
        listing = ", ".join(f"{topic} ({why})" for topic, why in unready.items())
        if now >= deadline:
            message = f"topics not ready on {settings.kafka_bootstrap} after {timeout_s:.0f}s: "
            raise FvcError(message + listing)
        if now >= report_at:
            log.info("waiting up to %.0fs for the broker to list %s", deadline - now, listing)
            report_at = now + TOPIC_REPORT_S
        time.sleep(TOPIC_POLL_S)
    waited = time.monotonic() - started
    if report_at > started:
        log.info("the broker lists every topic after %.1fs", waited)
    return waited


def _not_ready(
    settings: Settings, admin: AdminClient, topics: list[str], deadline: float
) -> dict[str, str]:
    """``unready_topics`` by the broker's metadata now; the request may run until ``deadline``."""
    timeout = max(deadline - time.monotonic(), 1.0)
    return unready_topics(cluster_metadata(settings, timeout=timeout, admin=admin), topics)


def unready_topics(metadata: ClusterMetadata, topics: Iterable[str]) -> dict[str, str]:
    """Why each of ``topics`` cannot be consumed yet by ``metadata``; empty when all can."""
    reasons = {topic: _unready(metadata.topics.get(topic)) for topic in topics}
    return {topic: why for topic, why in reasons.items() if why}


def _unready(topic: TopicMetadata | None) -> str:
    """Why one topic cannot be consumed yet ('' when it can): unlisted, failed or leaderless."""
    if topic is None:
        return "not listed"
    if topic.error is not None:
        return topic.error.str()
    if not topic.partitions:
        return "no partitions"
    leaderless = sorted(p.id for p in topic.partitions.values() if p.leader < 0 or p.error)
    if leaderless:
        return f"no leader for partitions {leaderless}"
    return ""
