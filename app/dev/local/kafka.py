"""A real single-node Apache Kafka in KRaft mode (one process is broker and controller).

The same broker the workers meet in production, not an emulation: the jars come from Maven
Central (see ``jvm.py``), the machine's ``java`` runs ``kafka.Kafka``. Settings suit one node
on a small machine: replication 1 everywhere, topics created on first use, no rebalance delay.
"""

from __future__ import annotations

import base64
import logging
import subprocess
import uuid
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from app.dev.local import jvm, procs
from app.dev.local.service import HOST, LocalService, Report
from app.errors import LocalStackError

log = logging.getLogger(__name__)

JVM_OPTIONS = ["-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-XX:+ExitOnOutOfMemoryError"]

_SERVER_PROPERTIES = """\
# Written by `fvc local up` on every start; edit app/dev/local/kafka.py instead.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{host}:{controller_port}
listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}
advertised.listeners=PLAINTEXT://{host}:{port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
num.partitions=1
# Keep records whatever their timestamps: replayed or synthetic scenes carry event times older
# than any time-based retention, and would otherwise be deleted minutes after they are written.
log.retention.ms=-1
auto.create.topics.enable=true
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
"""

_LOG4J2 = """\
# Written by `fvc local up`: the broker logs to one rolling file.
status = warn
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.filePattern = {log}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def kafka_answers(bootstrap: str, timeout: float) -> bool:
    """Whether a broker at ``bootstrap`` answers a metadata request (lists topics)."""
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    try:
        if not procs.port_answers(host.strip("[]") or HOST, int(port), timeout=min(timeout, 2)):
            return False
    except ValueError:
        return False
    # log_level 0: librdkafka would print every refused connection to stderr.
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        return bool(admin.list_topics(timeout=timeout).brokers)
    except KafkaException:
        return False


def new_cluster_id() -> str:
    """A random id in Kafka's Uuid text form: 22 url-safe base64 characters, no leading '-'."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class KafkaService(LocalService):
    """The local broker+controller under ``home`` (config, data, logs, pid file)."""

    name = "kafka"
    keyword = "kafka.Kafka"
    port_keys = ("kafka_port", "controller_port")
    grace = 30.0  # a clean KRaft shutdown flushes logs and the metadata snapshot

    def __init__(self, home: Path, port: int, controller_port: int) -> None:
        """A broker kept under ``home``, clients on ``port``, the KRaft quorum on the other."""
        super().__init__(home)
        self.port = port
        self.controller_port = controller_port
        self._java = ""
        self._classpath = ""

    @property
    def address(self) -> str:
        """Bootstrap servers for clients."""
        return f"{HOST}:{self.port}"

    @property
    def ports(self) -> tuple[int, ...]:
        """Client listener and controller (KRaft quorum) listener."""
        return (self.port, self.controller_port)

    @property
    def properties(self) -> Path:
        """The broker's config, rewritten on each start."""
        return self.home / "server.properties"

    @property
    def log_path(self) -> Path:
        """The broker's log4j log."""
        return self.home / "logs" / "server.log"

    @property
    def output_path(self) -> Path:
        """JVM stdout/stderr: crashes before log4j starts land here."""
        return self.home / "logs" / "kafka.out"

    def prepare(self, report: Report) -> None:
        """Find Java, resolve the jars, write the config, format storage on first start."""
        self._java = jvm.find_java()
        self._classpath = jvm.classpath(self.home / "maven", report)
        self._write_config()
        self._format_storage(report)

    def command(self) -> list[str]:
        """``java -cp <jars> kafka.Kafka server.properties``, logging through log4j2."""
        log4j = self.home / "log4j2.properties"
        return [
            self._java, *JVM_OPTIONS, "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}", f"-Dkafka.logs.dir={self.log_path.parent}",
            "-cp", self._classpath, "kafka.Kafka", str(self.properties),
        ]  # fmt: skip

    def probe(self, timeout: float) -> bool:
        """A real metadata request, not just an open port."""
        return kafka_answers(self.address, timeout)

    def _write_config(self) -> None:
        """Rewrite server.properties and the log4j2 config, so changed ports apply."""
        data = self.home / "data"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        data.mkdir(parents=True, exist_ok=True)
        self.properties.write_text(
            _SERVER_PROPERTIES.format(
                host=HOST, port=self.port, controller_port=self.controller_port, data=data
            )
        )
        (self.home / "log4j2.properties").write_text(_LOG4J2.format(log=self.log_path))

    def _format_storage(self, report: Report) -> None:
        """Run Kafka's StorageTool once: KRaft refuses to start on an unformatted log dir."""
        if (self.home / "data" / "meta.properties").is_file():
            return
        cluster_id = new_cluster_id()
        argv = [
            self._java, "-Xmx256m", "-cp", self._classpath, "kafka.tools.StorageTool",
            "format", "--cluster-id", cluster_id, "--config", str(self.properties),
        ]  # fmt: skip
        report(f"kafka: formatting storage in {self.home / 'data'} (cluster id {cluster_id})")
        done = subprocess.run(  # noqa: S603 - argv is built here
            argv, capture_output=True, text=True, timeout=120, check=False
        )
        (self.home / "logs" / "format.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
            message = f"formatting Kafka storage in {self.home / 'data'} failed: {lines[-1]}"
            raise LocalStackError(message)
