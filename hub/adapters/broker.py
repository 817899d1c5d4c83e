"""The local Apache Kafka broker that ``hub broker start`` runs: one KRaft node, broker and
controller combined, listening on 127.0.0.1 only, with its data under ``HUB_HOME/kafka``.

Plain mode (development only) has a PLAINTEXT listener. Secure mode (``--secure``, RELIABILITY.md
A7) binds no plaintext port at all: clients reach a SASL_SSL listener (SCRAM-SHA-512 over TLS, the
hub's own CA, see ``hub.adapters.tls``), the controller listener is SASL_SSL with PLAIN for the
broker's own principal only, the KRaft ``StandardAuthorizer`` denies whatever no ACL allows, and
the one super user, ``hub-admin``, gets its SCRAM credential when the storage is formatted
(KIP-900), so the broker is secure from its first start. The mode is fixed when the storage is
formatted; starting the other way is refused.

Kafka's jars are resolved from Maven Central through Maven (``kafka/pom.xml``) and cached outside
the repository, under ``<cache_dir>/kafka/<version>/libs``. Nothing here is needed when
``HUB_KAFKA_BOOTSTRAP`` points at an existing cluster.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from hub.adapters import kafka_security, tls
from hub.domain.errors import InfraError
from hub.settings import KafkaSecuritySettings, Settings

log = structlog.get_logger(__name__)

POM = Path(__file__).resolve().parents[2] / "kafka" / "pom.xml"
COMPLETE_MARKER = ".complete"

MISSING_JAVA = (
    "Java 17 or newer is needed to run the local Kafka broker, and `java` was not found "
    "(install it, e.g. `apt-get install openjdk-17-jre-headless`, or set JAVA_HOME); "
    "or point the hub at an existing cluster with HUB_KAFKA_BOOTSTRAP=host:port"
)
MISSING_MAVEN = (
    "Maven is needed once, to fetch Apache Kafka {version}'s jars from Maven Central into {cache}, "
    "and `mvn` was not found (install it, e.g. `apt-get install maven`); "
    "or point the hub at an existing cluster with HUB_KAFKA_BOOTSTRAP=host:port"
)

# One line per artifact Maven fetches in batch mode: "Downloaded from central: https://..."
_DOWNLOADED = re.compile(r"Downloaded from \S+: (\S+)")

ProgressFn = Callable[[int, str], None]


def java_command() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise InfraError(MISSING_JAVA)
    return found


def jars_dir(settings: Settings) -> Path:
    return settings.cache_dir / "kafka" / settings.broker.kafka_version / "libs"


def jars_ready(settings: Settings) -> bool:
    return (jars_dir(settings) / COMPLETE_MARKER).exists()


def fetch_jars(settings: Settings, progress: ProgressFn | None = None) -> Path:
    """Resolve Kafka and its runtime dependencies through Maven, once; returns the jar directory.

    ``progress(count, artifact)`` is called for every artifact Maven downloads.
    """
    target = jars_dir(settings)
    if jars_ready(settings):
        return target
    version = settings.broker.kafka_version
    mvn = shutil.which("mvn")
    if not mvn:
        raise InfraError(MISSING_MAVEN.format(version=version, cache=target))
    if not POM.exists():
        raise InfraError(f"{POM}: the Kafka POM is missing from this checkout")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=target.parent))
    command = [
        mvn, "-B", "-f", str(POM), "dependency:copy-dependencies",
        f"-Dkafka.version={version}", "-DincludeScope=runtime", f"-DoutputDirectory={staging}",
    ]  # fmt: skip
    log.info("kafka_jars_fetch_started", version=version, target=str(target))
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    tail: list[str] = []
    count = 0
    for line in proc.stdout:
        tail = (tail + [line.rstrip()])[-30:]
        match = _DOWNLOADED.search(line)
        if match:
            count += 1
            if progress:
                progress(count, match.group(1).rsplit("/", 1)[-1])
    if proc.wait() != 0:
        shutil.rmtree(staging, ignore_errors=True)
        errors = [line for line in tail if "ERROR" in line] or tail[-5:]
        raise InfraError(
            f"Maven could not resolve Apache Kafka {version} (is Maven Central reachable?): "
            + " | ".join(errors[:3])
        )
    (staging / COMPLETE_MARKER).write_text(version + "\n")
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    jars = len(list(target.glob("*.jar")))
    log.info("kafka_jars_fetched", version=version, jars=jars, downloaded=count)
    return target


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str
    data_dir: Path
    answering: bool

    def describe(self) -> str:
        if self.answering:
            return f"running (pid {self.pid}) on {self.bootstrap}, data in {self.data_dir}"
        if self.running:
            return f"starting or unresponsive (pid {self.pid}) on {self.bootstrap}"
        return "stopped"


def answers_metadata(
    bootstrap: str, timeout: float = 2.0, security: dict[str, Any] | None = None
) -> bool:
    """True when a broker at ``bootstrap`` answers a metadata request within ``timeout``."""
    admin = AdminClient(
        {
            "bootstrap.servers": bootstrap,
            "socket.timeout.ms": int(timeout * 1000),
            "log_level": 0,
            **(security or {}),
        }
    )
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException:
        return False
    return bool(metadata.brokers)


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as dead.
    with contextlib.suppress(FileNotFoundError, IndexError):
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z"
    return True


PLAINTEXT = "plaintext"
SECURE = "sasl_ssl"
HOST = "127.0.0.1"


class LocalBroker:
    """A single-node KRaft broker under ``HUB_HOME/kafka``; idempotent start, clean stop.

    ``secure`` chooses the mode of a broker whose storage is not formatted yet; None means the mode
    it was formatted with (plain when there is none)."""

    def __init__(self, settings: Settings, secure: bool | None = None) -> None:
        self.settings = settings
        self.root = settings.home / "kafka"
        self.data_dir = self.root / "data"
        self.mode_path = self.root / "security-mode"
        self.tls_files = tls.TlsFiles.under(kafka_security.security_dir(settings.home))
        formatted = self.mode_path.read_text().strip() if self.mode_path.exists() else None
        if formatted is None and (self.data_dir / "meta.properties").exists():
            formatted = PLAINTEXT  # formatted before secure mode existed
        wanted = None if secure is None else (SECURE if secure else PLAINTEXT)
        if formatted and wanted and formatted != wanted:
            raise InfraError(
                f"the broker's storage in {self.data_dir} was formatted for {formatted} mode; "
                f"start it {'with' if formatted == SECURE else 'without'} --secure, or stop it and "
                f"remove {self.root} (its topics are lost) to change mode"
            )
        self.mode = formatted or wanted or PLAINTEXT
        self.config_path = self.root / "server.properties"
        self.log4j_path = self.root / "log4j2.properties"
        self.pid_path = self.root / "broker.pid"
        self.log_path = self.root / "server.log"
        self.console_path = self.root / "console.log"
        self.bootstrap = f"127.0.0.1:{settings.broker.port}"

    # -- state -----------------------------------------------------------------------------
    def _pid(self) -> int | None:
        try:
            pid = int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _alive(pid) else None

    @property
    def secure(self) -> bool:
        return self.mode == SECURE

    def admin_security(self) -> dict[str, Any]:
        """The librdkafka keys for the broker's own principal, ``hub-admin`` (secure mode)."""
        if not self.secure:
            return {}
        admin = self.settings.model_copy(
            update={"kafka_security": KafkaSecuritySettings(mode="sasl_ssl")}
        )
        return kafka_security.client_security(admin, username=kafka_security.ADMIN)

    def status(self) -> BrokerStatus:
        pid = self._pid()
        answering = pid is not None and answers_metadata(
            self.bootstrap, security=self.admin_security()
        )
        return BrokerStatus(pid is not None, pid, self.bootstrap, self.data_dir, answering)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- configuration ---------------------------------------------------------------------
    def server_properties(self) -> dict[str, str]:
        props = self._common_properties()
        if self.secure:
            props.update(self._secure_properties())
        return props

    def _secure_properties(self) -> dict[str, str]:
        b = self.settings.broker
        password = kafka_security.Credentials(self.settings.home).get(kafka_security.ADMIN)
        assert password is not None, "the admin password is created before the configuration"
        admin, mechanism = kafka_security.ADMIN, kafka_security.MECHANISM
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
        plain = "org.apache.kafka.common.security.plain.PlainLoginModule"
        return {
            # No plaintext listener: clients and the controller both speak SASL over TLS.
            "listeners": f"SASL_SSL://{HOST}:{b.port},CONTROLLER://{HOST}:{b.controller_port}",
            "advertised.listeners": f"SASL_SSL://{HOST}:{b.port}",
            "inter.broker.listener.name": "SASL_SSL",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SASL_SSL",
            "sasl.mechanism.inter.broker.protocol": mechanism,
            "listener.name.sasl_ssl.sasl.enabled.mechanisms": mechanism,
            f"listener.name.sasl_ssl.{mechanism.lower()}.sasl.jaas.config": (
                f'{scram} required username="{admin}" password="{password}";'
            ),
            # SCRAM credentials live in the metadata log the controller serves, so the
            # controller listener authenticates the broker with PLAIN, for hub-admin only.
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": (
                f'{plain} required username="{admin}" password="{password}" '
                f'user_{admin}="{password}";'
            ),
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.tls_files.broker_keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.tls_files.ca_cert),
            "ssl.endpoint.identification.algorithm": "https",
            "ssl.enabled.protocols": "TLSv1.3,TLSv1.2",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{admin}",
            "allow.everyone.if.no.acl.found": "false",
            # Clients re-authenticate this often, so a deleted user is cut off (AZ-7).
            "connections.max.reauth.ms": str(b.max_reauth_ms),
        }

    def _common_properties(self) -> dict[str, str]:
        b = self.settings.broker
        return {
            "process.roles": "broker,controller",
            "node.id": str(b.node_id),
            "controller.quorum.voters": f"{b.node_id}@127.0.0.1:{b.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{b.port},CONTROLLER://127.0.0.1:{b.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{b.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "3",
            "auto.create.topics.enable": "false",
            # A single broker: every internal topic has one replica (RELIABILITY.md B.7).
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "6",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "6",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "unclean.leader.election.enable": "false",
        }

    def _write_config(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.secure:
            credentials = kafka_security.Credentials(self.settings.home)
            if credentials.ensure(kafka_security.ADMIN)[1]:
                credentials.save()
            tls.ensure_broker_tls(self.tls_files.ca_cert.parent, (HOST,))
        props = "".join(f"{k}={v}\n" for k, v in self.server_properties().items())
        # The secure configuration holds the admin password: owner only.
        tls.write_private(
            self.config_path,
            ("# written by `hub broker start`; edits are overwritten\n" + props).encode(),
        )
        self.log4j_path.write_text(
            "status = error\n"
            "appender.file.type = RollingFile\n"
            "appender.file.name = FILE\n"
            f"appender.file.fileName = {self.log_path}\n"
            f"appender.file.filePattern = {self.log_path}.%i\n"
            "appender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
            "appender.file.policies.type = Policies\n"
            "appender.file.policies.size.type = SizeBasedTriggeringPolicy\n"
            "appender.file.policies.size.size = 20MB\n"
            "appender.file.strategy.type = DefaultRolloverStrategy\n"
            "appender.file.strategy.max = 3\n"
            "rootLogger.level = INFO\n"
            "rootLogger.appenderRef.file.ref = FILE\n"
            "logger.kafka.name = kafka\nlogger.kafka.level = INFO\n"
            "logger.state.name = state.change.logger\nlogger.state.level = WARN\n"
        )

    def _java(self, *args: str, heap: str | None = None) -> list[str]:
        command = [java_command()]
        if heap:
            command += [f"-Xms{heap}", f"-Xmx{heap}"]
        return command + [
            "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j_path}",
            "-cp", str(jars_dir(self.settings) / "*"), *args,
        ]  # fmt: skip

    def _format_storage(self) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        cid = "-"
        while cid.startswith("-"):  # the storage tool would read a leading '-' as an option
            cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        command = ["format", "-t", cid, "-c", str(self.config_path)]
        if self.secure:
            password = kafka_security.Credentials(self.settings.home).get(kafka_security.ADMIN)
            scram = f"{kafka_security.MECHANISM}=[name={kafka_security.ADMIN},password={password}]"
            command += ["--add-scram", scram]
        result = subprocess.run(
            self._java("kafka.tools.StorageTool", *command), capture_output=True, text=True
        )
        if result.returncode != 0:
            raise InfraError(
                "formatting the broker's storage failed: "
                + (result.stdout + result.stderr).strip()[-300:]
            )
        self.mode_path.write_text(self.mode + "\n")
        log.info(
            "broker_storage_formatted", data_dir=str(self.data_dir), cluster_id=cid, mode=self.mode
        )

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, progress: ProgressFn | None = None) -> BrokerStatus:
        """Start the broker unless it runs already; return once it answers a metadata request."""
        java_command()
        fetch_jars(self.settings, progress)
        with self._lock():
            pid = self._pid()
            if pid is None:
                if _port_in_use(self.settings.broker.port):
                    raise InfraError(
                        f"port {self.settings.broker.port} is in use by another process; stop it, "
                        "or choose another port with HUB_BROKER__PORT"
                    )
                self._write_config()
                self._format_storage()
                with open(self.console_path, "ab") as console:
                    proc = subprocess.Popen(
                        self._java(
                            "kafka.Kafka", str(self.config_path), heap=self.settings.broker.heap
                        ),
                        stdout=console,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                pid = proc.pid
                self.pid_path.write_text(f"{pid}\n")
                log.info(
                    "broker_started", pid=pid, bootstrap=self.bootstrap, kafka_security=self.label
                )
            self._wait_until_answering(pid)
        return self.status()

    @property
    def label(self) -> str:
        if self.secure:
            return f"SASL_SSL ({kafka_security.MECHANISM}, StandardAuthorizer)"
        return kafka_security.PLAINTEXT_LABEL

    def _wait_until_answering(self, pid: int) -> None:
        security = self.admin_security()
        deadline = time.monotonic() + self.settings.broker.start_timeout_s
        while time.monotonic() < deadline:
            if not _alive(pid):
                raise InfraError(
                    f"the broker exited during start-up; see {self.log_path}: {self._tail_error()}"
                )
            if answers_metadata(self.bootstrap, timeout=1.0, security=security):
                return
            time.sleep(0.3)
        raise InfraError(
            f"the broker did not answer on {self.bootstrap} within "
            f"{self.settings.broker.start_timeout_s:.0f}s; see {self.log_path}"
        )

    def _tail_error(self) -> str:
        lines: list[str] = []
        for path in (self.console_path, self.log_path):
            with contextlib.suppress(FileNotFoundError):
                lines += path.read_text(errors="replace").splitlines()[-200:]
        errors = [line for line in lines if "ERROR" in line or "Exception" in line]
        return (errors or lines or ["no log output"])[-1][:300]

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout``); False if not running."""
        with self._lock():
            pid = self._pid()
            if pid is None:
                self.pid_path.unlink(missing_ok=True)
                return False
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(pid):
                log.warning("broker_killed", pid=pid, after_s=timeout)
                os.kill(pid, signal.SIGKILL)
                while _alive(pid):
                    time.sleep(0.1)
            self.pid_path.unlink(missing_ok=True)
            log.info("broker_stopped", pid=pid)
            return True

    def logs(self, lines: int = 50) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except FileNotFoundError:
            return []
