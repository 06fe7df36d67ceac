"""Service settings: where Kafka and Redis are, topic names, batching, index and security.

One frozen object built from ``FVC_*`` environment variables, then CLI flags on top, with local
defaults that work against ``fvc local up``. Secrets never appear in its repr or ``as_dict()``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

from app.errors import ConfigError

MASK = "***"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def _rule(parse: Callable[[str], Any]) -> BeforeValidator:
    """Check any value in its text form, so variables, flags and code obey the same rules."""

    def check(raw: Any) -> Any:
        return parse(("true" if raw else "false") if isinstance(raw, bool) else str(raw))

    return BeforeValidator(check)


def _integer(low: int, high: int | None = None) -> BeforeValidator:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            message = "must be an integer"
            raise ValueError(message) from None
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            message = f"must be an integer {bound}"
            raise ValueError(message)
        return value

    return _rule(parse)


def _positive_float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        message = "must be a number"
        raise ValueError(message) from None
    if not value > 0 or value == float("inf"):
        message = "must be a positive number of seconds"
        raise ValueError(message)
    return value


def _choice(*choices: str, upper: bool = False) -> BeforeValidator:
    def parse(text: str) -> str:
        value = text.strip().upper() if upper else text.strip().lower()
        if value not in choices:
            message = f"is not one of [{', '.join(choices)}]"
            raise ValueError(message)
        return value

    return _rule(parse)


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value not in _TRUE + _FALSE:
        message = "must be true or false"
        raise ValueError(message)
    return value in _TRUE


def _text(text: str) -> str:
    return text.strip()


Text = Annotated[str, _rule(_text)]
Flag = Annotated[bool, _rule(_boolean)]
Seconds = Annotated[float, _rule(_positive_float)]


class Settings(BaseSettings):
    """Everything a worker or command needs to reach the outside world.

    ``Settings(...)`` is the defaults plus the values given; only ``from_env`` reads variables,
    so code and tests get the same object whatever the shell exports.
    """

    model_config = SettingsConfigDict(
        env_prefix="FVC_", frozen=True, extra="forbid", validate_by_name=True
    )

    kafka_bootstrap: Text = "127.0.0.1:9092"
    redis_url: Text = "redis://127.0.0.1:6379/0"
    namespace: Text = "fvc"
    app_id: Text = "fvc"
    output_topic: Text = "fvc.FVClusterUpdateRecord.json"
    dead_letter_topic: Text = "fvc.dead-letter"
    internal_state_topic: Text = "fvc.internal-state"
    assignments_topic: Text = ""
    config_path: Text = Field("", validation_alias="FVC_CONFIG")
    index_type: Annotated[str, _choice("exact", "ivf", "ivfpq", "hnsw")] = Field(
        "exact", validation_alias="FVC_INDEX"
    )
    device: Annotated[str, _choice("auto", "cpu", "gpu")] = "auto"
    gpu_fp16: Flag = False
    batch_size: Annotated[int, _integer(1)] = 512
    batch_timeout_s: Seconds = Field(0.05, validation_alias="FVC_BATCH_TIMEOUT")
    search_threads: Annotated[int, _integer(1)] = 1
    overlap_commits: Flag = True
    store_outage_s: Seconds = 300.0
    broker_outage_s: Seconds = 300.0
    group_session_timeout_s: Seconds = 10.0
    allowed_lateness_ms: Annotated[int, _integer(0)] = 0
    lookahead_ms: Annotated[int, _integer(0)] = 0
    idle_timeout_s: Annotated[int, _integer(0)] = Field(60, validation_alias="FVC_IDLE_TIMEOUT")
    ingest: Annotated[str, _choice("faust", "bulk")] = "bulk"
    web_port: Annotated[int, _integer(1, 65535)] = 6066
    topic_partitions: Annotated[int, _integer(1)] = 8
    input_format: Annotated[str, _choice("auto", "json", "msgpack")] = "auto"
    output_format: Annotated[str, _choice("json", "msgpack")] = "json"
    output_profile: Annotated[str, _choice("default", "uvap")] = "default"
    max_record_bytes: Annotated[int, _integer(1)] = 1 << 20
    strict_input: Flag = False
    expected_dimension: Annotated[int, _integer(0)] = Field(0, validation_alias="FVC_DIMENSION")
    security_protocol: Annotated[
        str, _choice("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL", upper=True)
    ] = "PLAINTEXT"
    sasl_mechanism: Annotated[
        str,
        _choice("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER", upper=True),
    ] = "PLAIN"
    sasl_username: Text = Field("", validate_default=True)
    sasl_password: SecretStr = SecretStr("")
    ssl_cafile: Text = ""
    ssl_certfile: Text = ""
    ssl_keyfile: Text = ""
    redis_password: SecretStr = SecretStr("")
    redis_tls: Flag = False
    data_dir: Text = ".fvc/worker-data"
    log_format: Annotated[str, _choice("text", "json")] = "text"
    log_level: Annotated[
        str, _choice("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", upper=True)
    ] = "INFO"

    @field_validator("sasl_username")
    @classmethod
    def _user_for_sasl(cls, user: str, info: ValidationInfo) -> str:
        """SASL with a password mechanism is useless without a user name: say so at start."""
        protocol = info.data.get("security_protocol", "")
        mechanism = info.data.get("sasl_mechanism", "")
        needs_user = mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
        if protocol.startswith("SASL") and needs_user and not user:
            message = f"is required with {protocol} and {mechanism}"
            raise ValueError(message)
        return user

    @field_validator("output_profile")
    @classmethod
    def _uvap_writes_json(cls, profile: str, info: ValidationInfo) -> str:
        """UVAP's records are proto3 JSON: a msgpack body would parse nowhere UVAP runs."""
        if profile == "uvap" and info.data.get("output_format") == "msgpack":
            message = "needs FVC_OUTPUT_FORMAT=json: UVAP's records are proto3 JSON"
            raise ValueError(message)
        return profile

    @property
    def gpu_fp16_active(self) -> bool:
        """Whether half-precision copies are kept: ``FVC_GPU_FP16`` where the index is on a GPU."""
        from app.index.faiss_index import resolve_device

        return self.gpu_fp16 and self.index_type == "exact" and resolve_device(self.device) == "gpu"

    @property
    def ingest_group(self) -> str:
        """The consumer group that reads the camera topics.

        Bulk ingest uses a librdkafka consumer, which cannot share a group with Faust's own
        consumer (their assignment protocols differ), so it gets a group of its own.
        """
        return self.app_id if self.ingest == "faust" else f"{self.app_id}.ingest"

    @property
    def group_heartbeat_s(self) -> float:
        """Heartbeats five to a session timeout (at most every 3 s, Kafka's default).

        A member is declared dead only after a whole session timeout without one, so a few
        lost heartbeats (a GC pause, a busy event loop) never cost a rebalance.
        """
        return min(3.0, self.group_session_timeout_s / 5)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword values only: ``from_env`` reads the variables (see the class docstring)."""
        return (init_settings,)

    @classmethod
    def variables(cls) -> dict[str, str]:
        """The ``FVC_*`` variable of each setting, by field name."""
        prefix = cls.model_config["env_prefix"]
        return {
            name: str(field.validation_alias or f"{prefix}{name.upper()}")
            for name, field in cls.model_fields.items()
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``environ`` (default ``os.environ``), then non-None ``overrides``.

        Overrides come from CLI flags, so None means "flag not given". Every bad value is
        reported at once in one ConfigError naming the variable (or the field, for a flag).
        """
        fields = cls.model_fields
        given = {name: value for name, value in overrides.items() if value is not None}
        unknown = [(name, value, "is not a setting") for name, value in overrides.items()
                   if name not in fields]  # also variable names, which kwargs would accept
        source = _Environ(cls, os.environ if environ is None else environ)
        values = {}
        for name, field in fields.items():
            raw = given.get(name, source.get_field_value(field, name)[0])
            if raw is not None:
                values[name] = raw
        try:
            settings = cls(**values)
        except ValidationError as exc:
            problems = [cls._problem(error, given) for error in exc.errors()]
            raise ConfigError(unknown + problems) from None
        if unknown:
            raise ConfigError(unknown)
        return settings

    @classmethod
    def _problem(cls, error: ErrorDetails, given: Mapping[str, Any]) -> tuple[str, object, str]:
        """One refusal as (variable, or field for a flag; value, masked if secret; rule)."""
        name = str(error["loc"][0])
        source = name if name in given else cls.variables()[name]
        shown = MASK if cls.model_fields[name].annotation is SecretStr else error["input"]
        cause = error.get("ctx", {}).get("error")
        return source, shown, str(cause) if cause is not None else error["msg"]

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with non-None ``overrides`` applied (already-typed values from code)."""
        return self.model_copy(update={k: v for k, v in overrides.items() if v is not None})

    def __repr_args__(self) -> Any:
        """The masked view, so a logged or printed Settings never shows a secret."""
        return self.as_dict().items()

    def as_dict(self) -> dict[str, Any]:
        """Every setting by name, secrets (and a password inside a URL) masked: safe to log."""
        shown: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = MASK if value.get_secret_value() else ""
            shown[name] = value
        shown["redis_url"] = mask_url(self.redis_url)
        return shown


class _Environ(EnvSettingsSource):
    """pydantic-settings' reading of ``FVC_*`` variables, from any mapping (tests pass dicts)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


def mask_url(url: str) -> str:
    """``redis://user:secret@host`` → ``redis://user:***@host``; other URLs unchanged."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))
