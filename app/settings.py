"""Service settings: where Kafka and Redis are, topic names, batching, index and security.

One frozen object built from ``FVC_*`` environment variables, then CLI flags on top, with local
defaults that work against ``fvc local up``. Secrets never appear in its repr or ``as_dict()``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from app.errors import ConfigError

MASK = "***"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def _setting(env: str, default: Any, parse: Callable[[str], Any], secret: bool = False) -> Any:
    """A settings field: its variable, its default and how a string becomes its value."""
    meta = {"env": env, "parse": parse, "secret": secret}
    return field(default=default, metadata=meta, repr=not secret)


def _integer(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text.strip())
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            message = f"must be an integer {bound}"
            raise ValueError(message)
        return value

    return parse


def _positive_float(text: str) -> float:
    value = float(text.strip())
    if not value > 0 or value == float("inf"):
        message = "must be a positive number of seconds"
        raise ValueError(message)
    return value


def _choice(*choices: str, upper: bool = False) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().upper() if upper else text.strip().lower()
        if value not in choices:
            message = f"is not one of [{', '.join(choices)}]"
            raise ValueError(message)
        return value

    return parse


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value not in _TRUE + _FALSE:
        message = "must be true or false"
        raise ValueError(message)
    return value in _TRUE


def _text(text: str) -> str:
    return text.strip()


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a worker or command needs to reach the outside world."""

    kafka_bootstrap: str = _setting("FVC_KAFKA_BOOTSTRAP", "127.0.0.1:9092", _text)
    redis_url: str = _setting("FVC_REDIS_URL", "redis://127.0.0.1:6379/0", _text)
    namespace: str = _setting("FVC_NAMESPACE", "fvc", _text)
    app_id: str = _setting("FVC_APP_ID", "fvc", _text)
    output_topic: str = _setting("FVC_OUTPUT_TOPIC", "fvc.FVClusterUpdateRecord.json", _text)
    dead_letter_topic: str = _setting("FVC_DEAD_LETTER_TOPIC", "fvc.dead-letter", _text)
    internal_state_topic: str = _setting("FVC_INTERNAL_STATE_TOPIC", "fvc.internal-state", _text)
    assignments_topic: str = _setting("FVC_ASSIGNMENTS_TOPIC", "", _text)
    config_path: str = _setting("FVC_CONFIG", "", _text)
    index_type: str = _setting("FVC_INDEX", "exact", _choice("exact", "ivf", "ivfpq", "hnsw"))
    device: str = _setting("FVC_DEVICE", "auto", _choice("auto", "cpu", "gpu"))
    batch_size: int = _setting("FVC_BATCH_SIZE", 512, _integer(1))
    batch_timeout_s: float = _setting("FVC_BATCH_TIMEOUT", 0.05, _positive_float)
    search_threads: int = _setting("FVC_SEARCH_THREADS", 1, _integer(1))
    ingest: str = _setting("FVC_INGEST", "faust", _choice("faust", "bulk"))
    web_port: int = _setting("FVC_WEB_PORT", 6066, _integer(1, 65535))
    topic_partitions: int = _setting("FVC_TOPIC_PARTITIONS", 8, _integer(1))
    input_format: str = _setting("FVC_INPUT_FORMAT", "auto", _choice("auto", "json", "msgpack"))
    output_format: str = _setting("FVC_OUTPUT_FORMAT", "json", _choice("json", "msgpack"))
    max_record_bytes: int = _setting("FVC_MAX_RECORD_BYTES", 1 << 20, _integer(1))
    expected_dimension: int = _setting("FVC_DIMENSION", 0, _integer(0))
    security_protocol: str = _setting(
        "FVC_SECURITY_PROTOCOL",
        "PLAINTEXT",
        _choice("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL", upper=True),
    )
    sasl_mechanism: str = _setting(
        "FVC_SASL_MECHANISM",
        "PLAIN",
        _choice("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER", upper=True),
    )
    sasl_username: str = _setting("FVC_SASL_USERNAME", "", _text)
    sasl_password: str = _setting("FVC_SASL_PASSWORD", "", str, secret=True)
    ssl_cafile: str = _setting("FVC_SSL_CAFILE", "", _text)
    ssl_certfile: str = _setting("FVC_SSL_CERTFILE", "", _text)
    ssl_keyfile: str = _setting("FVC_SSL_KEYFILE", "", _text)
    redis_password: str = _setting("FVC_REDIS_PASSWORD", "", str, secret=True)
    redis_tls: bool = _setting("FVC_REDIS_TLS", False, _boolean)
    data_dir: str = _setting("FVC_DATA_DIR", ".fvc/worker-data", _text)
    log_format: str = _setting("FVC_LOG_FORMAT", "text", _choice("text", "json"))
    log_level: str = _setting(
        "FVC_LOG_LEVEL",
        "INFO",
        _choice("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", upper=True),
    )

    @property
    def ingest_group(self) -> str:
        """The consumer group that reads the camera topics.

        Bulk ingest uses a librdkafka consumer, which cannot share a group with Faust's own
        consumer (their assignment protocols differ), so it gets a group of its own.
        """
        return self.app_id if self.ingest == "faust" else f"{self.app_id}.ingest"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``environ`` (default ``os.environ``), then non-None ``overrides``.

        Overrides come from CLI flags, so None means "flag not given". Every bad value is
        reported at once in one ConfigError naming the variable (or the field, for a flag).
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        problems: list[tuple[str, object, str]] = []
        known = {f.name: f for f in fields(cls)}
        for name in overrides:
            if name not in known:
                problems.append((name, overrides[name], "is not a setting"))
        for f in known.values():
            source, raw = _source(f.name, f.metadata["env"], env, overrides)
            if raw is None:
                continue
            try:
                values[f.name] = _convert(f.metadata["parse"], raw)
            except ValueError as exc:
                shown = MASK if f.metadata["secret"] else raw
                problems.append((source, shown, _why(exc)))
        settings = cls(**values)
        problems += _security_problems(settings)
        if problems:
            raise ConfigError(problems)
        return settings

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with non-None ``overrides`` applied (already-typed values from code)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def __repr__(self) -> str:
        """The masked view, so a logged or printed Settings never shows a secret."""
        shown = ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items())
        return f"Settings({shown})"

    def as_dict(self) -> dict[str, Any]:
        """Every setting by name, secrets (and a password inside a URL) masked: safe to log."""
        shown: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            shown[f.name] = MASK if f.metadata["secret"] and value else value
        shown["redis_url"] = mask_url(self.redis_url)
        return shown


def _source(
    name: str, env_name: str, env: Mapping[str, str], overrides: Mapping[str, Any]
) -> tuple[str, Any]:
    """Where a setting's value comes from (flag beats variable), and the raw value."""
    if overrides.get(name) is not None:
        return name, overrides[name]
    if env_name in env:
        return env_name, env[env_name]
    return env_name, None


def _security_problems(settings: Settings) -> list[tuple[str, object, str]]:
    """SASL with a password mechanism is useless without a user name: say so at start."""
    needs_user = settings.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
    if settings.security_protocol.startswith("SASL") and needs_user and not settings.sasl_username:
        rule = f"is required with {settings.security_protocol} and {settings.sasl_mechanism}"
        return [("FVC_SASL_USERNAME", "", rule)]
    return []


def _convert(parse: Callable[[str], Any], raw: Any) -> Any:
    """A typed flag value is checked like its text form, so the same rules hold for both."""
    text = ("true" if raw else "false") if isinstance(raw, bool) else str(raw)
    return parse(text)


def _why(exc: ValueError) -> str:
    """Our own parsers give a rule; int()/float() give Python's wording, reworded here."""
    text = str(exc)
    if text.startswith(("must", "is not")):
        return text
    return "must be a number" if "float" in text else "must be an integer"


def mask_url(url: str) -> str:
    """``redis://user:secret@host`` → ``redis://user:***@host``; other URLs unchanged."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))
