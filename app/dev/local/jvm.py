"""Java and the Kafka broker's classpath, resolved from Maven Central by Maven.

Kafka is not packaged for Debian or PyPI; its jars are on Maven Central. ``pom.xml`` (next to
this module) names them, Maven downloads them once into ``~/.m2``, and the resolved classpath
is kept in the state folder so a later ``up`` starts the broker without calling Maven again.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from app.dev.local.procs import last_error_line
from app.errors import LocalStackError

log = logging.getLogger(__name__)

MIN_JAVA = 17  # Kafka 4.x brokers are compiled for Java 17
_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def pom_text() -> str:
    """The packaged pom.xml that pins the Kafka version."""
    return resources.files("app.dev.local").joinpath("pom.xml").read_text(encoding="utf-8")


def kafka_version() -> str:
    """The Apache Kafka version the pom pins (``kafka.version``), for messages and status."""
    try:
        root = ET.fromstring(pom_text())  # noqa: S314 - our own packaged file
    except (OSError, ET.ParseError):
        return "unknown"
    version = root.find("m:properties/m:kafka.version", _POM_NS)
    return version.text.strip() if version is not None and version.text else "unknown"


def find_java() -> str:
    """The ``java`` on PATH, checked to be Java 17 or newer."""
    java = shutil.which("java")
    if java is None:
        message = (
            f"java not found on PATH; Kafka needs Java {MIN_JAVA}+ "
            "(Debian: apt-get install openjdk-17-jre-headless)"
        )
        raise LocalStackError(message)
    major = _java_major(java)
    if major < MIN_JAVA:
        message = f"{java} is Java {major}; Kafka {kafka_version()} needs Java {MIN_JAVA}+"
        raise LocalStackError(message)
    return java


def _java_major(java: str) -> int:
    """Major version from ``java -version`` ("1.8.0_392" is 8, "17.0.15" is 17)."""
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        message = f"could not run {java} -version: {exc}"
        raise LocalStackError(message) from exc
    found = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if found is None:
        message = f"could not tell the Java version of {java}"
        raise LocalStackError(message)
    first, second = int(found.group(1)), int(found.group(2) or 0)
    return second if first == 1 else first


def classpath(work: Path, report: Callable[[str], None] = log.info) -> str:
    """The broker's classpath; Maven runs only when the pom changed or a cached jar is gone."""
    pom_copy, cp_file = work / "pom.xml", work / "classpath.txt"
    wanted = pom_text()
    if _cache_valid(pom_copy, cp_file, wanted):
        log.debug("classpath from cache %s", cp_file)
        return cp_file.read_text().strip()
    work.mkdir(parents=True, exist_ok=True)
    pom_copy.write_text(wanted, encoding="utf-8")
    cp_file.unlink(missing_ok=True)
    report(
        f"kafka: resolving the Kafka {kafka_version()} jars with Maven "
        f"(the first time downloads about 60 MB into ~/.m2; log {work / 'maven.log'})"
    )
    _run_maven(pom_copy, cp_file)
    return cp_file.read_text().strip()


def _cache_valid(pom_copy: Path, cp_file: Path, wanted: str) -> bool:
    """Whether the cached classpath was resolved from this pom and all its jars still exist."""
    try:
        if pom_copy.read_text(encoding="utf-8") != wanted:
            return False
        jars = cp_file.read_text().strip().split(":")
    except OSError:
        return False
    return bool(jars[0]) and all(Path(jar).is_file() for jar in jars)


def _run_maven(pom: Path, cp_file: Path) -> None:
    """``mvn dependency:build-classpath`` into ``cp_file``; output to maven.log beside it."""
    mvn = shutil.which("mvn")
    if mvn is None:
        message = "mvn (Maven) not found on PATH; it fetches the Kafka jars (apt-get install maven)"
        raise LocalStackError(message)
    maven_log = pom.with_name("maven.log")
    argv = [
        mvn, "-B", "-q", "-Dstyle.color=never", "-f", str(pom), "dependency:build-classpath",
        f"-Dmdep.outputFile={cp_file}", "-Dmdep.includeScope=runtime",
    ]  # fmt: skip
    with maven_log.open("w") as out:
        try:
            done = subprocess.run(  # noqa: S603 - argv is built here
                argv, cwd=pom.parent, stdout=out, stderr=subprocess.STDOUT, check=False
            )
        except OSError as exc:
            message = f"could not run Maven: {exc}"
            raise LocalStackError(message) from exc
    if done.returncode != 0 or not cp_file.is_file():
        message = (
            f"Maven could not fetch the Kafka {kafka_version()} jars "
            f"({_first_maven_error(maven_log)}); full output in {maven_log}"
        )
        raise LocalStackError(message)


def _first_maven_error(maven_log: Path) -> str:
    """Maven's first ``[ERROR]`` line names the cause; the later ones are help links."""
    try:
        text = maven_log.read_text(errors="replace")
    except OSError:
        return "no output"
    for line in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines():
        cause = line.removeprefix("[ERROR]").split(" -> [Help")[0].strip()
        if line.startswith("[ERROR]") and cause:
            return cause[:400]
    return last_error_line(maven_log)
