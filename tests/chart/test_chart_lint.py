"""`helm lint --strict` passes with every ci/*-values.yaml, and bad values are refused by name.

values.schema.json refuses a wrong type, an unknown key or a threshold out of [0, 1]; the
templates refuse combinations a schema cannot express (both autoscalers, more autoscaled
workers than partitions, a password in redis.url...). Each refusal must name the value, in
`helm lint` and in `helm template` (what `helm install` runs) alike.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from chart_support import CI_VALUES, K8S_VERSIONS, Helm, write_values


def test_the_ci_values_files_cover_the_issue() -> None:
    names = {p.name.removesuffix("-values.yaml") for p in CI_VALUES}
    assert {"default", "gpu", "keda", "hpa", "existing-secrets"} <= names


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
@pytest.mark.parametrize("kube_version", K8S_VERSIONS)
def test_lint_strict_passes(helm: Helm, values: Path, kube_version: str) -> None:
    out = helm.lint(values, kube_version=kube_version)
    assert "0 chart(s) failed" in out
    assert "[WARNING]" not in out and "[ERROR]" not in out


def _stream(threshold: object = 0.8) -> dict[str, object]:
    return {
        "stream_id": "cam",
        "fv_field_selector": {"feature_vector_path": "features"},
        "reg_stream_config": {"reg_threshold": threshold},
    }


def _merging(**changes: object) -> dict[str, object]:
    merging = {
        "initial_threshold": 0.8,
        "threshold_discount_rate": 0.98,
        "min_threshold": 0.65,
        "time_interval_ms": 5000,
    }
    merging.update(changes)
    return {
        "config": {
            "clustering_config": {"method": "SIMPLE_AVERAGE", "cluster_merging": merging},
            "input_stream_configs": [_stream()],
        }
    }


# (id, values, what the message must name)
BAD_VALUES = [
    ("wrong-type-int", {"replicaCount": "two"}, "/replicaCount"),
    ("wrong-type-bool", {"gpu": {"enabled": "yes"}}, "/gpu/enabled"),
    ("wrong-type-nested", {"settings": {"batchSize": 1.5}}, "/settings/batchSize"),
    ("unknown-key", {"replicas": 3}, "'replicas'"),
    ("unknown-nested-key", {"kafka": {"bootstrap": "k:9092"}}, "'bootstrap'"),
    (
        "unknown-config-key",
        {
            "config": {
                "clustering_config": {"method": "USE_LAST", "methd": 1},
                "input_stream_configs": [_stream()],
            }
        },
        "'methd'",
    ),
    ("enum", {"settings": {"index": "flat"}}, "/settings/index"),
    (
        "reg-threshold-above-1",
        {
            "config": {
                "clustering_config": {"method": "USE_LAST"},
                "input_stream_configs": [_stream(1.5)],
            }
        },
        "/config/input_stream_configs/0/reg_stream_config/reg_threshold",
    ),
    (
        "reg-threshold-below-0",
        {
            "config": {
                "clustering_config": {"method": "USE_LAST"},
                "input_stream_configs": [_stream(-0.1)],
            }
        },
        "/config/input_stream_configs/0/reg_stream_config/reg_threshold",
    ),
    (
        "initial-threshold-above-1",
        _merging(initial_threshold=1.2),
        "/config/clustering_config/cluster_merging/initial_threshold",
    ),
    (
        "min-threshold-below-0",
        _merging(min_threshold=-0.1),
        "/config/clustering_config/cluster_merging/min_threshold",
    ),
    (
        "threshold-wrong-type",
        _merging(min_threshold="high"),
        "/config/clustering_config/cluster_merging/min_threshold",
    ),
    (
        "no-streams",
        {"config": {"clustering_config": {"method": "USE_LAST"}, "input_stream_configs": []}},
        "/config/input_stream_configs",
    ),
    (
        "both-autoscalers",
        {"autoscaling": {"keda": {"enabled": True}, "hpa": {"enabled": True}}},
        "/autoscaling/hpa/enabled",
    ),
]

# Rules only the templates can check (they compare values, or must not echo a secret): `helm
# template` / `helm install` refuse them; `helm lint` deliberately never fails on a template's
# `fail` (it reports it as "[INFO] Fail: ...") so the message is checked in its output.
TEMPLATE_RULES = [
    (
        "more-replicas-than-partitions",
        {"autoscaling": {"maxReplicas": 20, "hpa": {"enabled": True}}},
        "autoscaling.maxReplicas (20) is above settings.topicPartitions (8)",
    ),
    ("password-in-redis-url", {"redis": {"url": "redis://:hunter2@redis:6379/0"}}, "redis.url"),
    (
        "sasl-without-secret",
        {"kafka": {"securityProtocol": "SASL_SSL", "sasl": {"username": "fvc"}}},
        "kafka.sasl.existingSecret",
    ),
    (
        "keda-sasl-without-auth",
        {"kafka": {"securityProtocol": "SSL"}, "autoscaling": {"keda": {"enabled": True}}},
        "autoscaling.keda.authenticationRef.name",
    ),
    (
        "duplicate-topic",
        {
            "config": {
                "clustering_config": {"method": "USE_LAST"},
                "input_stream_configs": [
                    _stream(),
                    {**_stream(), "stream_id": "cam2", "topic": "cam.FeatureVectorRecord.json"},
                ],
            }
        },
        "topic cam.FeatureVectorRecord.json",
    ),
]


@pytest.mark.parametrize(
    ("values", "named"), [(v, n) for _, v, n in BAD_VALUES], ids=[i for i, _, _ in BAD_VALUES]
)
def test_bad_values_are_refused_by_name(
    helm: Helm, tmp_path: Path, values: dict[str, object], named: str
) -> None:
    path = write_values(tmp_path, "bad", values)
    assert named in helm.lint_error(path)
    assert named in helm.template_error(path)


@pytest.mark.parametrize(
    ("values", "named"),
    [(v, n) for _, v, n in TEMPLATE_RULES],
    ids=[i for i, _, _ in TEMPLATE_RULES],
)
def test_template_rules_refuse_by_name(
    helm: Helm, tmp_path: Path, values: dict[str, object], named: str
) -> None:
    path = write_values(tmp_path, "bad", values)
    # Past the schema too (--skip-schema-validation), the templates themselves refuse.
    assert named in helm.template_error(path, extra=("--skip-schema-validation",))
    reported = helm.lint_output(path)
    assert "Fail:" in reported and named in reported


def test_both_autoscalers_refused_from_the_command_line(helm: Helm) -> None:
    both = ("autoscaling.keda.enabled=true", "autoscaling.hpa.enabled=true")
    assert "/autoscaling/hpa/enabled" in helm.template_error(sets=both)
    # The schema says it first; the template says it too, in words, past the schema.
    error = helm.template_error(sets=both, extra=("--skip-schema-validation",))
    assert "autoscaling.keda.enabled and autoscaling.hpa.enabled are both true" in error
    assert "never both" in error


def test_secrets_never_echoed_in_refusals(helm: Helm, tmp_path: Path) -> None:
    path = write_values(tmp_path, "bad", {"redis": {"url": "redis://fvc:hunter2@redis:6379/0"}})
    assert "hunter2" not in helm.template_error(path)


def test_idle_consumers_can_be_allowed(helm: Helm, tmp_path: Path) -> None:
    path = write_values(
        tmp_path,
        "idle",
        {"autoscaling": {"maxReplicas": 20, "allowIdleConsumers": True, "keda": {"enabled": True}}},
    )
    assert "0 chart(s) failed" in helm.lint(path)
