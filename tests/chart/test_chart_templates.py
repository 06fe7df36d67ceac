"""Assertions on what the chart renders: what operators rely on in the Deployment and friends.

The command the workers run, every FVC_* setting, secrets by reference only, the secure
defaults, probes on the web port, GPU scheduling, KEDA watching the workers' own consumer
group, the config checksum, and the default clustering config equal to config/four-cameras.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_support import CHART, ROOT, Helm, env, find, kinds, worker, write_values

from app.config import parse_config
from app.settings import Settings

CI = CHART / "ci"
WORKER_COMMAND = ["fvc", "worker", "--config", "/etc/fvc/config.json"]
# Variables the chart sets that are not (yet) fields of app.settings.Settings.
EXTRA_VARIABLES = {"FVC_DATA_DIR"}


def _pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return find(docs, "Deployment")["spec"]["template"]


def _volumes(pod_spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod_spec.get("volumes", [])}


def _mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container.get("volumeMounts", [])}


@pytest.fixture(scope="module")
def default(helm: Helm) -> list[dict[str, Any]]:
    return helm.template()


# ---- the command and the settings --------------------------------------------------------


def test_default_install_runs_the_documented_worker_command(default: list[dict[str, Any]]) -> None:
    container = worker(default)
    assert container["command"] + container["args"] == WORKER_COMMAND
    readme = (CHART / "README.md").read_text()
    assert " ".join(WORKER_COMMAND) in readme
    assert kinds(default) == [
        "PodDisruptionBudget",
        "ServiceAccount",
        "ConfigMap",
        "Service",
        "Deployment",
        "Pod",
    ]


def test_every_setting_is_set_from_values(helm: Helm) -> None:
    """Each FVC_* variable of app/settings.py reaches the worker (with every option on)."""
    known = set(Settings.variables().values())
    variables = env(worker(helm.template(CI / "existing-secrets-values.yaml")))
    missing = sorted(known - set(variables))
    assert not missing, f"app/settings.py reads {missing}, which the chart never sets"
    unknown = sorted(
        n for n in variables if n.startswith("FVC_") and n not in known | EXTRA_VARIABLES
    )
    assert not unknown, f"the chart sets {unknown}, which app/settings.py does not read"


def test_default_install_leaves_the_output_topics_to_the_config(
    default: list[dict[str, Any]],
) -> None:
    """A UVAP microservice config's ``target`` names the output topic: the chart keeps out."""
    variables = env(worker(default))
    assert "FVC_OUTPUT_TOPIC" not in variables and "FVC_INTERNAL_STATE_TOPIC" not in variables
    assert Settings.from_env({}).output_topic == "fvc.FVClusterUpdateRecord.json"


def test_default_settings_parse_as_the_worker_would(default: list[dict[str, Any]]) -> None:
    known = set(Settings.variables().values())
    variables = {name: e["value"] for name, e in env(worker(default)).items() if "value" in e}
    settings = Settings.from_env({k: v for k, v in variables.items() if k in known})
    assert settings.app_id == "fvc"
    assert settings.web_port == 6066
    assert settings.config_path == "/etc/fvc/config.json"
    assert variables["FVC_DATA_DIR"] == "/data"


def test_numbers_render_as_plain_integers(helm: Helm, tmp_path: Path) -> None:
    values = write_values(
        tmp_path, "big", {"settings": {"maxRecordBytes": 16777216, "batchSize": 4096}}
    )
    variables = env(worker(helm.template(values)))
    assert variables["FVC_MAX_RECORD_BYTES"]["value"] == "16777216"
    assert variables["FVC_BATCH_SIZE"]["value"] == "4096"


def test_web_port_drives_container_probes_and_service(helm: Helm) -> None:
    docs = helm.template(sets=("settings.webPort=7070",))
    container = worker(docs)
    assert container["ports"] == [{"name": "http", "containerPort": 7070, "protocol": "TCP"}]
    assert env(container)["FVC_WEB_PORT"]["value"] == "7070"
    assert find(docs, "Service")["spec"]["ports"][0]["targetPort"] == "http"


# ---- the clustering config ---------------------------------------------------------------


def _config(docs: list[dict[str, Any]]) -> Any:
    return json.loads(find(docs, "ConfigMap")["data"]["config.json"])


def test_default_config_is_config_four_cameras(default: list[dict[str, Any]]) -> None:
    expected = json.loads((ROOT / "config" / "four-cameras.json").read_text())
    assert _config(default) == expected
    parse_config(_config(default))  # and the worker accepts it


def test_config_is_mounted_where_the_command_reads_it(default: list[dict[str, Any]]) -> None:
    pod = _pod(default)["spec"]
    mount = _mounts(worker(default))["/etc/fvc"]
    assert mount["readOnly"] is True and "subPath" not in mount
    assert (
        _volumes(pod)[mount["name"]]["configMap"]["name"]
        == find(default, "ConfigMap")["metadata"]["name"]
    )


def test_config_checksum_rolls_pods_only_when_the_config_changes(
    helm: Helm, tmp_path: Path
) -> None:
    def checksum(*values: Path, sets: tuple[str, ...] = ()) -> str:
        return _pod(helm.template(*values, sets=sets))["metadata"]["annotations"]["checksum/config"]

    base = checksum()
    changed = write_values(
        tmp_path,
        "changed",
        {"config": {"clustering_config": {"cluster_merging": {"min_threshold": 0.7}}}},
    )
    assert checksum(changed) != base
    assert checksum(sets=("replicaCount=3",)) == base
    assert len(base) == 64


def test_config_from_values_renders_as_json(helm: Helm, tmp_path: Path) -> None:
    config = {
        "clustering_config": {
            "method": "USE_LAST",
            "cluster_merging": None,
            "cluster_realization": None,
        },
        "input_stream_configs": [
            {
                "stream_id": "door",
                "fv_field_selector": {"feature_vector_path": "f"},
                "reg_stream_config": {"reg_threshold": 0.91},
            }
        ],
    }
    rendered = _config(helm.template(write_values(tmp_path, "own", {"config": config})))
    assert rendered["clustering_config"]["method"] == "USE_LAST"
    assert "cluster_merging" not in rendered["clustering_config"]
    assert rendered["input_stream_configs"][0]["reg_stream_config"] == {"reg_threshold": 0.91}
    parse_config(rendered)


# ---- secrets -----------------------------------------------------------------------------


def test_secrets_come_only_from_existing_secrets(helm: Helm) -> None:
    docs = helm.template(CI / "existing-secrets-values.yaml")
    assert "Secret" not in kinds(docs)
    variables = env(worker(docs))
    assert variables["FVC_SASL_PASSWORD"] == {
        "name": "FVC_SASL_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "fvc-kafka-sasl", "key": "password"}},
    }
    assert variables["FVC_SASL_USERNAME"]["valueFrom"]["secretKeyRef"] == {
        "name": "fvc-kafka-sasl",
        "key": "username",
    }
    assert variables["FVC_REDIS_PASSWORD"] == {
        "name": "FVC_REDIS_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "fvc-redis", "key": "redis-password"}},
    }
    assert variables["FVC_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
    assert variables["FVC_REDIS_TLS"]["value"] == "true"
    # TLS files: mounted read-only from the Secret, the variables point into the mount.
    container = worker(docs)
    tls = _mounts(container)["/etc/fvc-tls/kafka"]
    assert tls["readOnly"] is True
    assert _volumes(_pod(docs)["spec"])[tls["name"]]["secret"]["secretName"] == "fvc-kafka-tls"
    assert variables["FVC_SSL_CAFILE"]["value"] == "/etc/fvc-tls/kafka/ca.crt"
    assert variables["FVC_SSL_CERTFILE"]["value"] == "/etc/fvc-tls/kafka/tls.crt"
    assert variables["FVC_SSL_KEYFILE"]["value"] == "/etc/fvc-tls/kafka/tls.key"
    config_map = find(docs, "ConfigMap")
    assert "password" not in json.dumps(config_map).lower()


def test_no_password_variable_without_a_secret(default: list[dict[str, Any]]) -> None:
    variables = env(worker(default))
    assert "FVC_SASL_PASSWORD" not in variables and "FVC_REDIS_PASSWORD" not in variables
    for entry in variables.values():
        assert "secretKeyRef" not in json.dumps(entry)


def test_values_hold_no_secret_by_default() -> None:
    text = (CHART / "values.yaml").read_text()
    for line in text.splitlines():
        if line.strip().startswith("#"):
            continue
        assert "password:" not in line.lower() or line.strip().endswith('""'), line


# ---- security ----------------------------------------------------------------------------


@pytest.mark.parametrize("values", ["default", "gpu", "existing-secrets"])
def test_secure_defaults(helm: Helm, values: str) -> None:
    docs = helm.template(CI / f"{values}-values.yaml")
    for doc in (find(docs, "Deployment")["spec"]["template"], {"spec": find(docs, "Pod")["spec"]}):
        spec = doc["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["privileged"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert find(docs, "ServiceAccount")["automountServiceAccountToken"] is False


def test_writable_dirs_are_empty_dirs(default: list[dict[str, Any]]) -> None:
    mounts = _mounts(worker(default))
    volumes = _volumes(_pod(default)["spec"])
    for path in ("/data", "/tmp"):  # noqa: S108 - a mount path, not a temp file
        assert "emptyDir" in volumes[mounts[path]["name"]], path
        assert not mounts[path].get("readOnly", False)
    assert env(worker(default))["FVC_DATA_DIR"]["value"] == "/data"


# ---- probes and shutdown -----------------------------------------------------------------


def test_probes_on_the_web_port(default: list[dict[str, Any]]) -> None:
    container = worker(default)
    assert container["startupProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    startup = container["startupProbe"]
    assert (
        startup["periodSeconds"] * startup["failureThreshold"] >= 300
    )  # room for an index rebuild


def test_grace_period_allows_a_clean_rebalance(default: list[dict[str, Any]]) -> None:
    assert _pod(default)["spec"]["terminationGracePeriodSeconds"] >= 60


def test_helm_test_pod_checks_ready_through_the_service(default: list[dict[str, Any]]) -> None:
    pod = find(default, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = " ".join(pod["spec"]["containers"][0]["command"])
    service = find(default, "Service")
    assert f"http://{service['metadata']['name']}.vision.svc:6066/ready" in script
    assert pod["spec"]["restartPolicy"] == "Never"
    # The Service (and the PDB, the Deployment) must not take the test pod for a worker.
    selector = service["spec"]["selector"]
    assert not selector.items() <= pod["metadata"]["labels"].items()


# ---- GPU ---------------------------------------------------------------------------------


def test_gpu_option(helm: Helm) -> None:
    docs = helm.template(CI / "gpu-values.yaml")
    container = worker(docs)
    spec = _pod(docs)["spec"]
    assert container["image"] == "fvc:0.1.0-gpu"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "4Gi"}
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    assert spec["runtimeClassName"] == "nvidia"
    assert env(container)["FVC_DEVICE"]["value"] == "gpu"


def test_cpu_default_asks_for_no_gpu(default: list[dict[str, Any]]) -> None:
    container = worker(default)
    spec = _pod(default)["spec"]
    assert container["image"] == "fvc:0.1.0"
    assert "nvidia.com/gpu" not in json.dumps(container["resources"])
    assert (
        "tolerations" not in spec and "nodeSelector" not in spec and "runtimeClassName" not in spec
    )


def test_image_digest_wins_over_tag(helm: Helm) -> None:
    digest = "sha256:" + "a" * 64
    assert worker(helm.template(sets=(f"image.digest={digest}",)))["image"] == f"fvc@{digest}"


# ---- autoscaling -------------------------------------------------------------------------


def test_keda_watches_the_workers_consumer_group(helm: Helm) -> None:
    docs = helm.template(CI / "keda-values.yaml", release="cams")
    scaled = find(docs, "ScaledObject")
    group = env(worker(docs))["FVC_APP_ID"]["value"]
    assert group == "cams-fvc"
    triggers = scaled["spec"]["triggers"]
    assert {t["metadata"]["consumerGroup"] for t in triggers} == {f"{group}.ingest"}  # bulk
    assert [t["metadata"]["topic"] for t in triggers] == [
        f"camera_{i}.FeatureVectorRecord.json" for i in range(4)
    ]
    assert scaled["spec"]["scaleTargetRef"]["name"] == find(docs, "Deployment")["metadata"]["name"]
    assert scaled["spec"]["maxReplicaCount"] <= int(
        env(worker(docs))["FVC_TOPIC_PARTITIONS"]["value"]
    )
    assert "HorizontalPodAutoscaler" not in kinds(docs)
    assert "replicas" not in find(docs, "Deployment")["spec"]


def test_keda_group_follows_consumer_group_value(helm: Helm) -> None:
    docs = helm.template(CI / "keda-values.yaml", sets=("consumerGroup=vision-clusters",))
    assert env(worker(docs))["FVC_APP_ID"]["value"] == "vision-clusters"
    assert {
        t["metadata"]["consumerGroup"] for t in find(docs, "ScaledObject")["spec"]["triggers"]
    } == {"vision-clusters.ingest"}


@pytest.mark.parametrize(
    ("sets", "group"),
    [
        (("settings.ingest=faust",), "cams-fvc"),
        (("settings.ingest=bulk",), "cams-fvc.ingest"),
        (("settings.ingest=bulk", "consumerGroup=vision-clusters"), "vision-clusters.ingest"),
    ],
)
def test_keda_watches_the_group_that_reads_the_camera_topics(
    helm: Helm, sets: tuple[str, ...], group: str
) -> None:
    """Bulk ingest reads in a group of its own; Faust's then holds only its leader topic."""
    docs = helm.template(CI / "keda-values.yaml", sets=sets, release="cams")
    variables = {name: e["value"] for name, e in env(worker(docs)).items() if "value" in e}
    settings = Settings.from_env(variables)
    triggers = find(docs, "ScaledObject")["spec"]["triggers"]
    assert {t["metadata"]["consumerGroup"] for t in triggers} == {settings.ingest_group} == {group}


def test_keda_topics_default_like_the_worker(helm: Helm, tmp_path: Path) -> None:
    config = {
        "clustering_config": {
            "method": "USE_LAST",
            "cluster_merging": None,
            "cluster_realization": None,
        },
        "input_stream_configs": [
            {
                "stream_id": "lobby",
                "fv_field_selector": {"feature_vector_path": "f"},
                "reg_stream_config": {"reg_threshold": 0.9},
            }
        ],
    }
    docs = helm.template(CI / "keda-values.yaml", write_values(tmp_path, "one", {"config": config}))
    expected = [s.topic for s in parse_config(_config(docs)).streams]
    assert [
        t["metadata"]["topic"] for t in find(docs, "ScaledObject")["spec"]["triggers"]
    ] == expected
    listed = helm.template(CI / "keda-values.yaml", sets=("autoscaling.keda.topics={a,b}",))
    assert [t["metadata"]["topic"] for t in find(listed, "ScaledObject")["spec"]["triggers"]] == [
        "a",
        "b",
    ]


def test_keda_with_sasl_and_tls(helm: Helm) -> None:
    docs = helm.template(CI / "existing-secrets-values.yaml")
    for trigger in find(docs, "ScaledObject")["spec"]["triggers"]:
        assert trigger["metadata"]["sasl"] == "scram_sha512"
        assert trigger["metadata"]["tls"] == "enable"
        assert trigger["authenticationRef"] == {
            "name": "fvc-kafka-keda",
            "kind": "TriggerAuthentication",
        }


def test_hpa_instead_of_keda(helm: Helm) -> None:
    docs = helm.template(CI / "hpa-values.yaml")
    hpa = find(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    assert "ScaledObject" not in kinds(docs)
    assert "replicas" not in find(docs, "Deployment")["spec"]


def test_fixed_replicas_without_autoscaler(default: list[dict[str, Any]]) -> None:
    assert find(default, "Deployment")["spec"]["replicas"] == 2
    assert not {"ScaledObject", "HorizontalPodAutoscaler"} & set(kinds(default))


# ---- availability, service, monitoring, network ------------------------------------------


def test_pdb_selects_the_workers(default: list[dict[str, Any]]) -> None:
    pdb = find(default, "PodDisruptionBudget")
    labels = _pod(default)["metadata"]["labels"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    selector = find(default, "Deployment")["spec"]["selector"]["matchLabels"]
    assert find(default, "Service")["spec"]["selector"] == selector


def test_service_monitor_scrapes_metrics(helm: Helm) -> None:
    docs = helm.template(CI / "observability-values.yaml")
    monitor = find(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"] == [
        {"port": "http", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}
    ]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    service_labels = find(docs, "Service")["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels.items()


def test_network_policy(helm: Helm) -> None:
    docs = helm.template(CI / "observability-values.yaml")
    policy = find(docs, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    peers = policy["ingress"][0]["from"]
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    } in peers
    # The helm test pod can still reach the workers.
    test_pod_labels = find(docs, "Pod")["metadata"]["labels"]
    assert any(
        p.get("podSelector", {}).get("matchLabels", {}).items() <= test_pod_labels.items()
        for p in peers
        if "podSelector" in p
    )
    assert {"port": 53, "protocol": "UDP"} in policy["egress"][0]["ports"]


def test_optional_resources_are_off_by_default(default: list[dict[str, Any]]) -> None:
    assert not {"ServiceMonitor", "NetworkPolicy", "Secret"} & set(kinds(default))


def test_notes_render(helm: Helm, tmp_path: Path) -> None:
    """NOTES.txt renders with next steps (`helm template` skips NOTES: render it via tpl)."""
    chart = tmp_path / "fvc"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "notes.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ tpl (.Files.Get "notes.txt") . | quote }}\n'
    )
    out = helm.run(
        "template",
        "fvc",
        str(chart),
        "--namespace",
        "vision",
        "--show-only",
        "templates/zz-notes.yaml",
        "-f",
        str(CI / "keda-values.yaml"),
    ).stdout
    notes = yaml.safe_load(out)["data"]["notes"]
    assert "kubectl -n vision rollout status deployment/fvc" in notes
    assert "KEDA on consumer lag, 1..12 workers" in notes
    assert "helm test fvc -n vision" in notes
    assert "camera_0.FeatureVectorRecord.json, camera_1" in notes
