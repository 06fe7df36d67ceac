"""Helpers of the chart checks: run the pinned helm, parse what it renders, validate manifests.

Kubernetes objects are validated offline with the kubernetes-validate package (the Kubernetes
OpenAPI schemas converted to JSON Schema, strict: unknown fields refused), for the oldest
Kubernetes the chart supports and a recent one; the two custom resources (KEDA ScaledObject,
Prometheus operator ServiceMonitor) against the schemas kept in helm/fvc/ci/crd-schemas/.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "fvc"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
CRD_SCHEMAS = CHART / "ci" / "crd-schemas"
CHART_CHECK = ROOT / "scripts" / "chart-check"

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the recent version the
# manifests are pinned against (also what `helm template` assumes here).
K8S_OLDEST = "1.28.0"
K8S_PINNED = "1.37.0"
K8S_VERSIONS = (K8S_OLDEST, K8S_PINNED)

# Custom resources: (apiVersion, kind) -> schema file under CRD_SCHEMAS.
CRD_SCHEMA_FILES = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda-v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
}


class HelmFailed(AssertionError):
    """Helm refused the chart or the values; the message is helm's own output."""


@dataclass(frozen=True)
class Helm:
    """The pinned helm binary, run on helm/fvc."""

    path: str

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run helm with ``args``; HelmFailed carries stdout and stderr when it fails."""
        done = subprocess.run(  # noqa: S603 - our own pinned helm binary
            [self.path, *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "HELM_CACHE_HOME": str(ROOT / ".fvc" / "helm-cache")},
            check=False,
        )
        if check and done.returncode != 0:
            raise HelmFailed(f"helm {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done

    def lint(self, *values: Path | str, kube_version: str = K8S_PINNED) -> str:
        """`helm lint --strict` with the values files given; returns its output."""
        args = ["lint", "--strict", str(CHART), "--kube-version", kube_version]
        for path in values:
            args += ["-f", str(path)]
        return self.run(*args).stdout

    def lint_error(self, *values: Path | str) -> str:
        """The output of a `helm lint --strict` that must fail."""
        args = ["lint", "--strict", str(CHART), "--kube-version", K8S_PINNED]
        for path in values:
            args += ["-f", str(path)]
        done = self.run(*args, check=False)
        assert done.returncode != 0, f"helm lint accepted {values}:\n{done.stdout}"
        return done.stdout + done.stderr

    def template(
        self,
        *values: Path | str,
        sets: tuple[str, ...] = (),
        release: str = "fvc",
        namespace: str = "vision",
    ) -> list[dict[str, Any]]:
        """Render the chart (hooks and test pods included) and parse every document."""
        return _parse(self.template_text(*values, sets=sets, release=release, namespace=namespace))

    def template_text(
        self,
        *values: Path | str,
        sets: tuple[str, ...] = (),
        release: str = "fvc",
        namespace: str = "vision",
    ) -> str:
        """The rendered YAML text."""
        return _render(self.path, tuple(str(v) for v in values), sets, release, namespace)

    def lint_output(self, *values: Path | str) -> str:
        """Everything `helm lint --strict` prints, whether it passes or not."""
        args = ["lint", "--strict", str(CHART), "--kube-version", K8S_PINNED]
        for path in values:
            args += ["-f", str(path)]
        done = self.run(*args, check=False)
        return done.stdout + done.stderr

    def template_error(
        self, *values: Path | str, sets: tuple[str, ...] = (), extra: tuple[str, ...] = ()
    ) -> str:
        """The error output of a `helm template` that must fail."""
        args = ["template", "fvc", str(CHART), "--kube-version", K8S_PINNED, *extra]
        for path in values:
            args += ["-f", str(path)]
        for item in sets:
            args += ["--set", item]
        done = self.run(*args, check=False)
        assert done.returncode != 0, f"helm template accepted {values} {sets}"
        return done.stderr


@functools.lru_cache(maxsize=256)
def _render(
    helm: str, values: tuple[str, ...], sets: tuple[str, ...], release: str, namespace: str
) -> str:
    args = ["template", release, str(CHART), "--namespace", namespace, "--kube-version", K8S_PINNED]
    for path in values:
        # Cached by path: a values file a test writes lives in that test's own tmp_path.
        args += ["-f", path]
    for item in sets:
        args += ["--set", item]
    return Helm(helm).run(*args).stdout


def _parse(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one rendered object of ``kind`` (and ``name``); fails when there is none or more."""
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    """The kinds rendered, in order."""
    return [d["kind"] for d in docs]


def worker(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The worker container of the Deployment."""
    containers = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "worker")


def env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The container's environment by name (each entry as rendered)."""
    return {e["name"]: e for e in container.get("env", [])}


def write_values(tmp_path: Path, name: str, values: Any) -> Path:
    """A values file in ``tmp_path`` holding ``values`` (YAML text or an object)."""
    path = tmp_path / f"{name}.yaml"
    text = values if isinstance(values, str) else yaml.safe_dump(values, sort_keys=False)
    path.write_text(text)
    return path


@functools.lru_cache(maxsize=None)
def _crd_validator(api_version: str, kind: str) -> Any:
    import jsonschema

    schema = json.loads((CRD_SCHEMAS / CRD_SCHEMA_FILES[(api_version, kind)]).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate_manifest(doc: dict[str, Any], k8s_version: str) -> list[str]:
    """Every problem of one rendered object against its schema (strict); [] when valid.

    A kind with no schema at all is itself a problem: nothing goes unvalidated.
    """
    import kubernetes_validate

    api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
    where = f"{kind}/{doc.get('metadata', {}).get('name', '?')}"
    if (api_version, kind) in CRD_SCHEMA_FILES:
        validator = _crd_validator(api_version, kind)
        return [
            f"{where}: {'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        ]
    try:
        kubernetes_validate.validate(doc, k8s_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path) or "<root>"
        return [f"{where} (Kubernetes {exc.version}): {path}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"{where}: no schema: {exc.message}"]
    return []
