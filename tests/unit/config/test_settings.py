"""Service settings from FVC_* variables and flags: defaults, precedence, masking, refusals."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.errors import ConfigError
from app.settings import Settings, mask_url


def test_defaults_work_against_the_local_stack():
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert (settings.namespace, settings.app_id) == ("fvc", "fvc")
    assert settings.output_topic == "fvc.FVClusterUpdateRecord.json"
    assert settings.dead_letter_topic == "fvc.dead-letter"
    assert settings.internal_state_topic == "fvc.internal-state"
    assert (settings.index_type, settings.device) == ("exact", "auto")
    assert (settings.batch_size, settings.batch_timeout_s) == (512, 0.05)
    assert (settings.web_port, settings.topic_partitions) == (6066, 8)
    assert (settings.input_format, settings.output_format) == ("auto", "json")
    assert (settings.max_record_bytes, settings.expected_dimension) == (1 << 20, 0)
    assert settings.security_protocol == "PLAINTEXT"
    assert (settings.redis_tls, settings.log_level) == (False, "INFO")


def test_environment_is_read_and_typed():
    env = {
        "FVC_KAFKA_BOOTSTRAP": "k1:9092,k2:9092",
        "FVC_INDEX": "HNSW",
        "FVC_DEVICE": "gpu",
        "FVC_BATCH_SIZE": " 1024 ",
        "FVC_BATCH_TIMEOUT": "0.2",
        "FVC_WEB_PORT": "7000",
        "FVC_INPUT_FORMAT": "msgpack",
        "FVC_DIMENSION": "512",
        "FVC_REDIS_TLS": "yes",
        "FVC_LOG_LEVEL": "debug",
        "UNRELATED": "x",
    }
    settings = Settings.from_env(env)
    assert settings.kafka_bootstrap == "k1:9092,k2:9092"
    assert (settings.index_type, settings.device) == ("hnsw", "gpu")
    assert (settings.batch_size, settings.batch_timeout_s, settings.web_port) == (1024, 0.2, 7000)
    assert (settings.input_format, settings.expected_dimension) == ("msgpack", 512)
    assert (settings.redis_tls, settings.log_level) == (True, "DEBUG")


def test_flags_override_the_environment_and_none_means_not_given():
    env = {"FVC_BATCH_SIZE": "100", "FVC_APP_ID": "env-app"}
    settings = Settings.from_env(env, batch_size=7, app_id=None, redis_tls=True)
    assert (settings.batch_size, settings.app_id, settings.redis_tls) == (7, "env-app", True)


def test_os_environ_is_the_default(monkeypatch):
    monkeypatch.setenv("FVC_NAMESPACE", "site-a")
    assert Settings.from_env().namespace == "site-a"


def test_secrets_are_masked_everywhere_they_could_be_logged():
    env = {
        "FVC_SASL_PASSWORD": "s3cret",
        "FVC_REDIS_PASSWORD": "r3dis",
        "FVC_REDIS_URL": "redis://app:hunter2@redis:6379/0",
    }
    settings = Settings.from_env(env)
    shown = settings.as_dict()
    assert shown["sasl_password"] == shown["redis_password"] == "***"  # noqa: S105
    assert shown["redis_url"] == "redis://app:***@redis:6379/0"
    for text in (repr(settings), str(settings), str(shown)):
        assert "s3cret" not in text and "r3dis" not in text and "hunter2" not in text
    assert settings.sasl_password.get_secret_value() == "s3cret"  # noqa: S105
    assert settings.redis_password.get_secret_value() == "r3dis"  # noqa: S105


def test_unset_secrets_show_as_empty():
    assert Settings().as_dict()["sasl_password"] == ""


def test_mask_url_leaves_urls_without_password_alone():
    assert mask_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert mask_url("rediss://:pw@h:1/2") == "rediss://:***@h:1/2"


@pytest.mark.parametrize(
    ("env", "variable", "rule"),
    [
        ({"FVC_BATCH_SIZE": "many"}, "FVC_BATCH_SIZE", "must be an integer"),
        ({"FVC_BATCH_SIZE": "0"}, "FVC_BATCH_SIZE", "must be an integer >= 1"),
        ({"FVC_WEB_PORT": "70000"}, "FVC_WEB_PORT", "between 1 and 65535"),
        ({"FVC_BATCH_TIMEOUT": "soon"}, "FVC_BATCH_TIMEOUT", "must be a number"),
        ({"FVC_BATCH_TIMEOUT": "0"}, "FVC_BATCH_TIMEOUT", "must be a positive number"),
        ({"FVC_INDEX": "flat"}, "FVC_INDEX", "is not one of [exact, ivf, ivfpq, hnsw]"),
        ({"FVC_DEVICE": "tpu"}, "FVC_DEVICE", "is not one of [auto, cpu, gpu]"),
        ({"FVC_OUTPUT_FORMAT": "avro"}, "FVC_OUTPUT_FORMAT", "is not one of [json, msgpack]"),
        ({"FVC_REDIS_TLS": "maybe"}, "FVC_REDIS_TLS", "must be true or false"),
        ({"FVC_DIMENSION": "-1"}, "FVC_DIMENSION", "must be an integer >= 0"),
        ({"FVC_SECURITY_PROTOCOL": "TLS"}, "FVC_SECURITY_PROTOCOL", "is not one of"),
        ({"FVC_SECURITY_PROTOCOL": "SASL_SSL"}, "FVC_SASL_USERNAME", "is required with SASL_SSL"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(env, variable, rule):
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert any(path == variable and rule in text for path, _, text in info.value.problems), (
        info.value.problems
    )


def test_every_bad_value_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"FVC_BATCH_SIZE": "x", "FVC_INDEX": "y"}, web_port=0, colour="red")
    assert sorted(path for path, _, _ in info.value.problems) == [
        "FVC_BATCH_SIZE",
        "FVC_INDEX",
        "colour",
        "web_port",
    ]


def test_with_overrides_and_frozen():
    settings = Settings().with_overrides(batch_size=8, app_id=None)
    assert (settings.batch_size, settings.app_id) == (8, "fvc")
    with pytest.raises(ValidationError, match="frozen"):
        settings.batch_size = 1  # type: ignore[misc]


def test_sasl_with_a_user_is_accepted():
    env = {
        "FVC_SECURITY_PROTOCOL": "sasl_ssl",
        "FVC_SASL_MECHANISM": "scram-sha-512",
        "FVC_SASL_USERNAME": "fvc",
        "FVC_SASL_PASSWORD": "pw",
    }
    settings = Settings.from_env(env)
    assert (settings.security_protocol, settings.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
