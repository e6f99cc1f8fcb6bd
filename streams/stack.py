"""The local stack: Apache Kafka (KRaft, single node) and Redis on loopback.

Kafka's broker jars come from Maven Central through `mvn` into a cache reused by every run;
the storage directory is formatted on first start. Redis is Debian's `redis-server`. Each
service this module starts gets a pid file under the data directory, which is how `status`
tells "started by shinsa" from "already running" and why `down` stops only its own.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from streams.settings import COMPACTED_TOPICS, MODEL_MESSAGE_BYTES, TOPIC_NAMES, Settings


class StackError(RuntimeError):
    """A stack step failed; the message says what to do about it."""


POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.shinsa</groupId><artifactId>kafka-broker</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{version}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId>
      <version>1.7.36</version></dependency>
  </dependencies>
</project>
"""

LOG4J = """log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File={log}
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
"""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    address: str
    answering: bool
    started_by_shinsa: bool
    pid: int | None
    log: Path | None


# ---------------------------------------------------------------- helpers


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise StackError(f"{what} did not come up within {timeout:.0f}s")
        time.sleep(0.2)


def read_pid(pid_file: Path) -> int | None:
    """The pid in `pid_file` if that process is still alive."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def stop_pid(pid_file: Path, timeout: float = 30.0) -> bool:
    """SIGTERM (then SIGKILL) the process of `pid_file`; True if one was running."""
    pid = read_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and read_pid(pid_file) is not None:
        _reap(pid)
        time.sleep(0.2)
    if read_pid(pid_file) is not None:
        os.kill(pid, signal.SIGKILL)
        _reap(pid)
    pid_file.unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def spawn(cmd: list[str], log: Path, pid_file: Path) -> int:
    """Start `cmd` detached from this process (it outlives the CLI), output to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pid_file.write_text(str(proc.pid))
    return proc.pid


# ---------------------------------------------------------------- Kafka


def kafka_dir(settings: Settings) -> Path:
    return settings.data_dir / "kafka"


def kafka_libs(settings: Settings) -> Path:
    return settings.cache_dir / f"kafka-{settings.kafka_version}" / "libs"


def fetch_kafka(settings: Settings, say: Callable[[str], None] = print) -> Path:
    """The broker's jars, fetched with mvn once into the cache."""
    libs = kafka_libs(settings)
    if (libs / f"kafka_2.13-{settings.kafka_version}.jar").exists():
        return libs
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise StackError(
            "Kafka needs Java 17+ and Maven: apt-get install openjdk-17-jre-headless maven"
        )
    say(f"fetching Apache Kafka {settings.kafka_version} jars with mvn (once) into {libs}")
    build = libs.parent / "build"
    build.mkdir(parents=True, exist_ok=True)
    (build / "pom.xml").write_text(POM.format(version=settings.kafka_version))
    tmp = libs.parent / "libs.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    result = subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(build / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}",
            "-DincludeScope=runtime",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(
            f"mvn could not fetch Kafka {settings.kafka_version}:\n{result.stdout[-2000:]}"
            f"{result.stderr[-2000:]}"
        )
    tmp.rename(libs)
    return libs


def write_kafka_config(settings: Settings) -> Path:
    home = kafka_dir(settings)
    home.mkdir(parents=True, exist_ok=True)
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{settings.kafka_controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{settings.kafka_port},"
        f"CONTROLLER://127.0.0.1:{settings.kafka_controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{settings.kafka_port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(home / "data"),
        "num.partitions": str(settings.partitions),
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "log.retention.hours": "168",
        "log.segment.bytes": "104857600",
    }
    config = home / "server.properties"
    config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    (home / "log4j.properties").write_text(LOG4J.format(log=home / "kafka.log"))
    return config


def java_cmd(settings: Settings, main: str, *args: str, heap: str = "256m") -> list[str]:
    home = kafka_dir(settings)
    return [
        "java",
        f"-Xmx{heap}",
        f"-Xms{heap}",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j.configuration=file:{home / 'log4j.properties'}",
        "-cp",
        f"{kafka_libs(settings)}/*",
        main,
        *args,
    ]


def format_storage(settings: Settings, config: Path) -> None:
    if (kafka_dir(settings) / "data" / "meta.properties").exists():
        return
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    result = subprocess.run(
        java_cmd(
            settings, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"formatting Kafka storage failed: {result.stdout}{result.stderr}")


def kafka_up(settings: Settings, say: Callable[[str], None] = print) -> bool:
    """Start the broker unless one answers; True if this call started it."""
    pid_file = kafka_dir(settings) / "kafka.pid"
    if port_open("127.0.0.1", settings.kafka_port):
        return False
    fetch_kafka(settings, say)
    config = write_kafka_config(settings)
    format_storage(settings, config)
    say(f"starting Kafka {settings.kafka_version} on 127.0.0.1:{settings.kafka_port}")
    spawn(
        java_cmd(settings, "kafka.Kafka", str(config), heap=settings.kafka_heap),
        kafka_dir(settings) / "kafka.out",
        pid_file,
    )

    def answering() -> bool:
        if read_pid(pid_file) is None:
            raise StackError(f"Kafka exited on start; see {kafka_dir(settings) / 'kafka.log'}")
        return port_open("127.0.0.1", settings.kafka_port)

    wait_until(answering, 90, "Kafka")
    return True


# ---------------------------------------------------------------- Redis


def redis_dir(settings: Settings) -> Path:
    return settings.data_dir / "redis"


def ensure_redis_installed(say: Callable[[str], None] = print) -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise StackError(
            "redis-server is not installed. Install Debian's package: "
            "sudo apt-get install -y redis-server"
        )
    say("installing redis-server with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "redis-server"]):
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            raise StackError(f"{' '.join(cmd)} failed:\n{result.stderr[-2000:]}")
    return shutil.which("redis-server") or "/usr/bin/redis-server"


def redis_up(settings: Settings, say: Callable[[str], None] = print) -> bool:
    host, port = settings.redis_host_port
    if port_open(host, port):
        return False
    server = ensure_redis_installed(say)
    home = redis_dir(settings)
    home.mkdir(parents=True, exist_ok=True)
    say(f"starting Redis on 127.0.0.1:{settings.redis_port}")
    spawn(
        [
            server,
            "--bind",
            "127.0.0.1",
            "--port",
            str(settings.redis_port),
            "--dir",
            str(home),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ],
        home / "redis.log",
        home / "redis.pid",
    )
    wait_until(lambda: port_open("127.0.0.1", settings.redis_port), 30, "Redis")
    return True


# ---------------------------------------------------------------- topics


def topic_configs(name: str) -> dict[str, str]:
    configs: dict[str, str] = {}
    if name in COMPACTED_TOPICS:
        configs = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1"}
    if name == "models":  # a checkpoint is one message; a forest can outgrow Kafka's 1 MB
        configs["max.message.bytes"] = str(MODEL_MESSAGE_BYTES)
    return configs


def create_topics(settings: Settings) -> list[str]:
    """Create the pipeline's topics that are missing; returns the names created."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    existing = set(admin.list_topics(timeout=15).topics)
    wanted = [
        NewTopic(
            settings.topic(name),
            num_partitions=settings.partitions,
            replication_factor=1,
            config=topic_configs(name),
        )
        for name in TOPIC_NAMES
        if settings.topic(name) not in existing
    ]
    if not wanted:
        return []
    for topic, future in admin.create_topics(wanted, operation_timeout=30).items():
        try:
            future.result()
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise StackError(f"creating topic {topic} failed: {exc}") from None
    names = [t.topic for t in wanted]
    wait_until(lambda: _have_leaders(admin, names), 30, "leaders of the new topics")
    return names


def _have_leaders(admin: object, names: list[str]) -> bool:
    """Whether every partition of `names` has a leader (a new topic is unusable until then)."""
    topics = admin.list_topics(timeout=5).topics  # type: ignore[attr-defined]
    return all(
        name in topics
        and topics[name].partitions
        and all(p.leader >= 0 for p in topics[name].partitions.values())
        for name in names
    )


# ---------------------------------------------------------------- the whole stack


def up(settings: Settings, say: Callable[[str], None] = print) -> list[str]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    kafka_up(settings, say)
    redis_up(settings, say)
    wait_until(lambda: _kafka_metadata_ok(settings), 60, "Kafka metadata")
    return create_topics(settings)


def _kafka_metadata_ok(settings: Settings) -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient({"bootstrap.servers": settings.kafka_bootstrap}).list_topics(timeout=2)
    except Exception:
        return False
    return True


def down(settings: Settings) -> list[str]:
    stopped = []
    if stop_pid(redis_dir(settings) / "redis.pid"):
        stopped.append("redis")
    if stop_pid(kafka_dir(settings) / "kafka.pid", timeout=60):
        stopped.append("kafka")
    return stopped


def status(settings: Settings) -> list[ServiceStatus]:
    host, port = settings.redis_host_port
    kafka_host, _, kafka_port = settings.kafka_bootstrap.split(",")[0].rpartition(":")
    kafka_pid = read_pid(kafka_dir(settings) / "kafka.pid")
    redis_pid = read_pid(redis_dir(settings) / "redis.pid")
    return [
        ServiceStatus(
            "kafka",
            settings.kafka_bootstrap,
            port_open(kafka_host, int(kafka_port)),
            kafka_pid is not None,
            kafka_pid,
            kafka_dir(settings) / "kafka.log",
        ),
        ServiceStatus(
            "redis",
            f"{host}:{port}",
            port_open(host, port),
            redis_pid is not None,
            redis_pid,
            redis_dir(settings) / "redis.log",
        ),
    ]
