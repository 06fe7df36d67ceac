"""What `helm template` renders is valid Kubernetes, and every image comes from values.

Each ci/*-values.yaml is rendered (helm test pod included) and every object validated offline:
built-in kinds against the Kubernetes OpenAPI schemas of the oldest supported and the pinned
recent version (kubernetes-validate, strict: an unknown field is an error), ScaledObject and
ServiceMonitor against helm/fvc/ci/crd-schemas/. A kind without a schema fails the check.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from chart_support import CHART, CI_VALUES, CRD_SCHEMA_FILES, K8S_VERSIONS, Helm, validate_manifest

# Everything the chart can render, and which values file renders it.
EXPECTED_KINDS = {
    "Deployment",
    "ConfigMap",
    "Service",
    "ServiceAccount",
    "PodDisruptionBudget",
    "Pod",
    "ScaledObject",
    "HorizontalPodAutoscaler",
    "ServiceMonitor",
    "NetworkPolicy",
}


@pytest.mark.usefixtures("k8s_schemas")
@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
def test_rendered_manifests_are_valid(helm: Helm, values: Path, k8s_version: str) -> None:
    docs = helm.template(values)
    assert docs, "nothing rendered"
    problems = [p for doc in docs for p in validate_manifest(doc, k8s_version)]
    assert not problems, "\n".join(problems)


def test_every_kind_is_rendered_by_some_ci_values(helm: Helm) -> None:
    rendered = {doc["kind"] for values in CI_VALUES for doc in helm.template(values)}
    assert rendered == EXPECTED_KINDS


@pytest.mark.usefixtures("k8s_schemas")
def test_the_validation_catches_mistakes() -> None:
    """The validators do refuse what a template slip would produce (unknown or mistyped keys)."""
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "replica": 2,
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
            },
        },
    }
    assert any("replica" in p for p in validate_manifest(deployment, K8S_VERSIONS[-1]))
    scaled = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {
            "scaleTargetRef": {"name": "x"},
            "triggers": [
                {
                    "type": "kafka",
                    "metadata": {
                        "bootstrapServers": "k:9092",
                        "consumerGroup": "g",
                        "lagThreshhold": "10",
                    },
                }
            ],
        },
    }
    assert any("lagThreshhold" in p for p in validate_manifest(scaled, K8S_VERSIONS[-1]))
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "endpoints": [{"port": "http", "interval": "30 seconds"}]},
    }
    assert any("interval" in p for p in validate_manifest(monitor, K8S_VERSIONS[-1]))
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "x"}}
    assert any("no schema" in p for p in validate_manifest(unknown, K8S_VERSIONS[-1]))
    assert len(CRD_SCHEMA_FILES) == 2


IMAGE_LINE = re.compile(r"^\s*-?\s*image:\s*(.*)$", re.MULTILINE)


def test_templates_hard_code_no_image() -> None:
    """Every `image:` in the templates comes from the fvc.image / fvc.testImage helpers."""
    templates = [p for p in (CHART / "templates").rglob("*") if p.is_file()]
    assert templates
    seen = 0
    for path in templates:
        for value in IMAGE_LINE.findall(path.read_text()):
            seen += 1
            assert re.fullmatch(
                r'\{\{ include "fvc\.(image|testImage)" \. \| quote \}\}', value.strip()
            ), f"{path.relative_to(CHART)} sets an image that is not from values: {value}"
    assert seen >= 2  # the worker and the test pod
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    assert not re.search(
        r"(docker\.io|ghcr\.io|quay\.io|registry|busybox|curlimages|alpine)", helpers
    )


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_every_rendered_image_comes_from_values(helm: Helm, values: Path) -> None:
    sets = (
        "image.repository=registry.example.com/vision/fvc",
        "image.tag=9.9.9",
        "gpu.image.repository=registry.example.com/vision/fvc-gpu",
    )
    images = []
    for doc in helm.template(values, sets=sets):
        spec = doc.get("spec", {})
        pod = (
            spec.get("template", {}).get("spec", spec)
            if doc["kind"] in ("Deployment", "Pod")
            else {}
        )
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            images.append(container["image"])
    assert images
    for image in images:
        assert image in (
            "registry.example.com/vision/fvc:9.9.9",
            "registry.example.com/vision/fvc-gpu:9.9.9-gpu",
        ), image
