"""confluent-kafka clients configured from Settings: one place for bootstrap, SASL and TLS.

Every command that talks to Kafka through confluent-kafka (produce, tail, admin tasks) builds its
client here, so a secured cluster needs only the ``FVC_*`` security settings, never a code change,
and the producer, consumer and admin client can never disagree about how to connect. Consumers
sort the errors librdkafka delivers among their messages with ``records_of``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from app.errors import FvcError
from app.settings import Settings

log = logging.getLogger(__name__)

ADMIN_TIMEOUT_S = 15.0
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
    admin = admin or make_admin(settings)
    try:
        return set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        message = f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc.args[0].str()}"
        raise FvcError(message) from exc
