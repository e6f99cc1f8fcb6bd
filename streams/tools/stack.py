"""The local stack: Apache Kafka (KRaft, single node) and Redis on loopback.

Kafka's broker jars come from Maven Central through `mvn` into a cache reused by every run;
the storage directory is formatted on first start. Redis is Debian's `redis-server`. Each
service this module starts gets a pid file under the data directory, which is how `status`
tells "started by shinsa" from "already running" and why `down` stops only its own.
With `--monitoring`, Debian's Prometheus (and Alertmanager, when a chat webhook is set) run the
same way, on loopback, with their data under the data directory and the rules of monitoring/.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.settings import (
    COMPACTED_TOPICS,
    MODEL_MESSAGE_BYTES,
    MONITORING_DIR,
    TOPIC_NAMES,
    Settings,
)


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


# ---------------------------------------------------------------- monitoring

RULES_DIR = MONITORING_DIR / "prometheus" / "rules"
ALERTMANAGER_TEMPLATE = MONITORING_DIR / "alertmanager" / "alertmanager.yml"
WEBHOOK_PLACEHOLDER = '"${SHINSA_ALERT_WEBHOOK_URL}"'
TICKET_PLACEHOLDER = '"${SHINSA_TICKET_WEBHOOK_URL}"'
WORKER_JOB = "shinsa-worker"


def monitoring_dir(settings: Settings) -> Path:
    """Rendered configuration (it may hold the webhook secret): kept out of the repository."""
    return settings.data_dir / "monitoring"


def prometheus_dir(settings: Settings) -> Path:
    return settings.data_dir / "prometheus"


def alertmanager_dir(settings: Settings) -> Path:
    return settings.data_dir / "alertmanager"


def prometheus_config(
    targets: list[str],
    alertmanagers: list[str],
    interval: str = "5s",
    rules: str = "rules/*.yml",
) -> dict[str, Any]:
    """Shinsa's Prometheus configuration as data.

    monitoring/prometheus/prometheus.yml is this with the local defaults (a unit test keeps
    them equal), so the stack, the tests and Docker users scrape and alert the same way.
    """
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": interval,
            "evaluation_interval": interval,
            "external_labels": {"system": "shinsa"},
        },
        "rule_files": [rules],
        "scrape_configs": [{"job_name": WORKER_JOB, "static_configs": [{"targets": targets}]}],
    }
    if alertmanagers:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": alertmanagers}]}]}
    return config


def write_prometheus_config(path: Path, config: dict[str, Any]) -> Path:
    """Write `config` as JSON, which is YAML too: no YAML library needed at run time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def render_alertmanager_config(template: str, webhook_url: str, ticket_url: str = "") -> str:
    """The template with the pages' and the tickets' webhook URLs filled in (tickets go to the
    pages' channel without their own); what `envsubst` would do, but quoted safely: a JSON
    string is a YAML double-quoted scalar whatever the URL contains."""
    for placeholder in (WEBHOOK_PLACEHOLDER, TICKET_PLACEHOLDER):
        if placeholder not in template:
            raise StackError(f"{ALERTMANAGER_TEMPLATE} lost its {placeholder} placeholder")
    ticket_url = ticket_url or webhook_url
    for url in (webhook_url, ticket_url):
        if not url.startswith(("https://", "http://")):
            raise StackError(
                "SHINSA_ALERT_WEBHOOK_URL and SHINSA_TICKET_WEBHOOK_URL must be chat "
                "incoming-webhook URLs (https://...)"
            )
    rendered = template.replace(WEBHOOK_PLACEHOLDER, json.dumps(webhook_url))
    return rendered.replace(TICKET_PLACEHOLDER, json.dumps(ticket_url))


def render_monitoring(settings: Settings, out: Path | None = None) -> list[Path]:
    """Write the local stack's prometheus.yml and, with a webhook URL, alertmanager.yml.

    Prometheus scrapes the worker on SHINSA_METRICS_PORT and sends alerts to Alertmanager on
    SHINSA_ALERTMANAGER_PORT; the rules are read from the repository where they are reviewed.
    """
    out = out or monitoring_dir(settings)
    if settings.metrics_port == 0:
        raise StackError(
            "SHINSA_METRICS_PORT=0 lets each worker pick a port Prometheus cannot know: "
            "set the port of the worker to scrape (default 9464)"
        )
    url = settings.alert_webhook_url.get_secret_value()
    config = prometheus_config(
        [f"127.0.0.1:{settings.metrics_port}", f"127.0.0.1:{settings.campaign_metrics_port}"],
        [f"127.0.0.1:{settings.alertmanager_port}"] if url else [],
        rules=str(RULES_DIR / "*.yml"),
    )
    written = [write_prometheus_config(out / "prometheus.yml", config)]
    if url:
        path = out / "alertmanager.yml"
        tickets = settings.ticket_webhook_url.get_secret_value()
        text = render_alertmanager_config(ALERTMANAGER_TEMPLATE.read_text(), url, tickets)
        path.write_text(text)
        path.chmod(0o600)  # the webhook URL is a credential
        written.append(path)
    return written


def ensure_installed(binary: str, package: str, say: Callable[[str], None] = print) -> str:
    """The path of a Debian package's program, installed with apt-get when run as root."""
    found = shutil.which(binary)
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise StackError(f"{binary} is not installed: sudo apt-get install -y {package}")
    say(f"installing {package} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            raise StackError(f"{' '.join(cmd)} failed:\n{result.stderr[-2000:]}")
    return shutil.which(binary) or f"/usr/bin/{binary}"


def prometheus_cmd(binary: str, config: Path, data: Path, port: int) -> list[str]:
    """Prometheus on loopback only, with its own data directory (never the system one)."""
    return [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=400d",  # campaigns compare a month with last year's
        "--web.enable-lifecycle",
    ]


def start_service(name: str, cmd: list[str], home: Path, port: int, timeout: float = 30.0) -> None:
    """Spawn a service with its pid file and log in `home`; wait until its port answers."""
    pid_file, log = home / f"{name}.pid", home / f"{name}.log"
    spawn(cmd, log, pid_file)

    def answering() -> bool:
        if read_pid(pid_file) is None:
            raise StackError(f"{name} exited on start; see {log}")
        return port_open("127.0.0.1", port)

    wait_until(answering, timeout, name)


def warn_if_foreign(name: str, home: Path, port: int, say: Callable[[str], None]) -> None:
    """Say so when the port is held by a process shinsa did not start (a system service)."""
    if read_pid(home / f"{name}.pid") is None:
        say(
            f"something shinsa did not start answers on 127.0.0.1:{port} (Debian's {name} "
            f"service?); it does not use Shinsa's configuration: set "
            f"SHINSA_{name.upper()}_PORT to a free port"
        )


def reload_prometheus(port: int, say: Callable[[str], None]) -> None:
    """Ask a running Prometheus to re-read its configuration (--web.enable-lifecycle)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/-/reload", method="POST")
    try:
        urllib.request.urlopen(request, timeout=10).close()
    except OSError as exc:
        say(f"Prometheus did not reload its configuration ({exc}); see its log")


def prometheus_up(settings: Settings, say: Callable[[str], None] = print) -> bool:
    """Start Prometheus unless something answers on its port; True if this call started it."""
    if port_open("127.0.0.1", settings.prometheus_port):
        if read_pid(prometheus_dir(settings) / "prometheus.pid") is None:
            warn_if_foreign("prometheus", prometheus_dir(settings), settings.prometheus_port, say)
        else:  # ours: pick up changed ports or a webhook set since it started
            render_monitoring(settings)
            reload_prometheus(settings.prometheus_port, say)
        return False
    binary = ensure_installed("prometheus", "prometheus", say)
    config = render_monitoring(settings)[0]
    home = prometheus_dir(settings)
    say(f"starting Prometheus on 127.0.0.1:{settings.prometheus_port}")
    cmd = prometheus_cmd(binary, config, home / "data", settings.prometheus_port)
    start_service("prometheus", cmd, home, settings.prometheus_port)
    return True


def alertmanager_up(settings: Settings, say: Callable[[str], None] = print) -> bool:
    """Start Alertmanager when a webhook URL is set; True if this call started it."""
    if not settings.alert_webhook_url.get_secret_value():
        say(
            "no SHINSA_ALERT_WEBHOOK_URL: alerts are evaluated by Prometheus (see its /alerts "
            "page) but not sent, and Alertmanager is not started"
        )
        return False
    if port_open("127.0.0.1", settings.alertmanager_port):
        warn_if_foreign("alertmanager", alertmanager_dir(settings), settings.alertmanager_port, say)
        return False
    binary = ensure_installed("prometheus-alertmanager", "prometheus-alertmanager", say)
    config = render_monitoring(settings)[1]
    home = alertmanager_dir(settings)
    say(f"starting Alertmanager on 127.0.0.1:{settings.alertmanager_port}")
    cmd = [
        binary,
        f"--config.file={config}",
        f"--storage.path={home / 'data'}",
        f"--web.listen-address=127.0.0.1:{settings.alertmanager_port}",
        "--cluster.listen-address=",  # one instance: no gossip port
    ]
    start_service("alertmanager", cmd, home, settings.alertmanager_port)
    return True


def monitoring_up(settings: Settings, say: Callable[[str], None] = print) -> None:
    """Alertmanager first, so Prometheus's first alert has somewhere to go."""
    alertmanager_up(settings, say)
    prometheus_up(settings, say)


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
    for name, home in (
        ("prometheus", prometheus_dir(settings)),
        ("alertmanager", alertmanager_dir(settings)),
    ):
        if stop_pid(home / f"{name}.pid"):
            stopped.append(name)
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
        service_status("prometheus", prometheus_dir(settings), settings.prometheus_port),
        service_status("alertmanager", alertmanager_dir(settings), settings.alertmanager_port),
    ]


def service_status(name: str, home: Path, port: int) -> ServiceStatus:
    """A loopback service whose pid file and log live in `home` (monitoring services)."""
    pid = read_pid(home / f"{name}.pid")
    return ServiceStatus(
        name,
        f"127.0.0.1:{port}",
        port_open("127.0.0.1", port),
        pid is not None,
        pid,
        home / f"{name}.log",
    )
