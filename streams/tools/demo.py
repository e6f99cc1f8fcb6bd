"""`shinsa demo`: the whole product in one command on a fresh machine.

Stack up → a worker in the background → simulated traffic (with a little deliberately broken
input) → wait for every valid order's decision → summary of decisions, fraud patterns caught,
dead letters, throughput, latency and the worker's KPIs from /metrics.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from streams.clients import end_offsets, read_topic
from streams.codec import SchemaRegistry
from streams.dlq import REASON
from streams.errors import UserError
from streams.records import WALLET_KINDS
from streams.settings import Settings
from streams.tools import stack
from streams.tools.simulate import SimConfig, Simulator


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment of a worker that shares `settings`' topics, Redis and namespace (a test's
    or a benchmark's, on the local stack); /metrics and the HTTP API on free ports."""
    return {
        "SHINSA_TOPIC_PREFIX": settings.topic_prefix,
        "SHINSA_APP_ID": settings.app_id,
        "SHINSA_METRICS_PORT": "0",
        "SHINSA_API_PORT": "0",
        "SHINSA_CAMPAIGN_METRICS_PORT": "0",
        "SHINSA_REDIS_URL": settings.redis_url,
    }


def start_worker(
    settings: Settings, log: Path, env: dict[str, str] | None = None, role: str = "screen"
) -> subprocess.Popen:
    """A worker process running `shinsa worker --role ROLE`, its output in `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.tools.cli", "worker", "--role", role],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )


def stop_worker(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    """Graceful stop (SIGTERM: Faust commits offsets and leaves the group), SIGKILL if stuck."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def metrics_url(log: Path) -> str | None:
    found = re.search(r"metrics on (http://\S+/metrics)", log.read_text("utf-8", "replace"))
    return found.group(1) if found else None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_demo(
    settings: Settings,
    *,
    orders: int,
    seed: int | None,
    console: Console,
    progress: Callable[[], Progress],
) -> None:
    from streams.tools.publish import encode_events, send_prepared

    console.rule("[bold]Shinsa demo")
    stack.up(settings, say=lambda m: console.print(f"[dim]{m}"))
    decisions_start = end_offsets(settings, settings.topic("decisions"))
    dlq_start = end_offsets(settings, settings.topic("dlq"))
    log = settings.data_dir / "demo-worker.log"
    worker = start_worker(settings, log)
    console.print(f"worker started (pid {worker.pid}, log {log})")
    apply_demo_campaign(settings)
    campaign = None
    try:
        seed = seed if seed is not None else int(time.time()) % 1_000_000
        cfg = SimConfig(
            orders=orders,
            seed=seed,
            invalid_rate=0.005,
            wallet_payments=orders // 2,
            campaign=True,
        )
        events = list(Simulator(cfg).events())
        encoded = encode_events(settings, events)
        registry = SchemaRegistry(settings.schema_dir)
        truth = {}
        for event in events:
            if event.topic == "orders" and not event.broken:
                truth[event.value["order_id"]] = event.fraud_pattern
        # accounts and logins happened before the payments they precede (days, minutes): a
        # bulk replay sends them first, so the wallet sees them as it would have then
        first = [e for e in encoded if e[0] in ("accounts", "logins")]
        send_prepared(settings, first, "wallet accounts and logins")
        verified = {
            e.value["account_id"]
            for e in events
            if e.topic == "accounts" and not e.broken and e.value["kind"] == "KYC_VERIFIED"
        }
        wait_for_accounts(settings, verified, worker, progress)
        # after the KYC is applied: a login read before its account's KYC makes nobody
        # eligible (README, the campaign), and this replay sends months of logins at once
        campaign_log = settings.data_dir / "demo-campaign.log"
        campaign = start_worker(settings, campaign_log, role="campaign")
        console.print(f"campaign worker started (pid {campaign.pid}, log {campaign_log})")
        rest = [e for e in encoded if e[0] not in ("accounts", "logins")]
        send_prepared(settings, rest, f"simulating {orders} orders (seed {seed})")
        decided = wait_for_decisions(
            settings, registry, decisions_start, set(truth), worker, progress
        )
        show_summary(settings, console, decided, truth, dlq_start, metrics_url(log))
        patterns = {
            e.value["payment_id"]: e.fraud_pattern
            for e in events
            if e.topic == "payments" and not e.broken and e.value["kind"] in WALLET_KINDS
        }
        show_payments(settings, console, registry, decisions_start, patterns)
        show_segments(settings, console, decided, log)
        show_campaign(settings, console)
    finally:
        stop_worker(worker)
        if campaign is not None:
            stop_worker(campaign)
    console.print(
        "\n[bold]Next:[/bold] `shinsa decisions` (table) or `shinsa decisions --json --follow`; "
        "`shinsa dlq`; `shinsa campaign status`; `shinsa worker` to keep screening; "
        "`shinsa simulate --rate 200` for live traffic; `shinsa stack down` when done. The "
        "stack is still up."
    )


def wait_for_accounts(
    settings: Settings,
    accounts: set[str],
    worker: subprocess.Popen,
    progress: Callable[[], Progress],
    timeout: float = 120.0,
) -> None:
    """Until the worker has applied the verified accounts (its accounts agent writes each to
    Redis; a worker just started takes seconds to be assigned its partitions)."""
    import redis

    from agents.state import Keys

    client = redis.Redis.from_url(settings.redis_url)
    keys = Keys(settings.identity_namespace)
    names = [keys.wallet_account(a) for a in sorted(accounts)]
    deadline = time.monotonic() + timeout
    with progress() as bar:
        task = bar.add_task("waiting for the wallet accounts", total=len(names), rate="")
        while True:
            pipe = client.pipeline(transaction=False)
            for name in names:
                pipe.hexists(name, "kyc")
            done = sum(pipe.execute())
            bar.update(task, completed=done)
            if done >= len(names):
                return
            if worker.poll() is not None:
                raise UserError(f"the worker exited with code {worker.returncode}; see its log")
            if time.monotonic() > deadline:
                raise UserError(f"only {done} of {len(names)} wallet accounts in {timeout:.0f}s")
            time.sleep(0.5)


def wait_for_decisions(
    settings: Settings,
    registry: SchemaRegistry,
    start: dict[int, int],
    expected: set[str],
    worker: subprocess.Popen,
    progress: Callable[[], Progress],
    timeout: float = 300.0,
) -> dict[str, dict[str, Any]]:
    decided: dict[str, dict[str, Any]] = {}
    offsets = dict(start)
    deadline = time.monotonic() + timeout
    with progress() as bar:
        task = bar.add_task("waiting for decisions", total=len(expected), rate="")
        while len(decided) < len(expected):
            if worker.poll() is not None:
                raise UserError(f"the worker exited with code {worker.returncode}; see its log")
            if time.monotonic() > deadline:
                raise UserError(
                    f"only {len(decided)} of {len(expected)} decisions in {timeout:.0f}s"
                )
            for msg in read_topic(settings, settings.topic("decisions"), start=offsets):
                offsets[msg.partition()] = msg.offset() + 1
                d = registry.decode("Decision", msg.value())
                if d["order_id"] in expected:
                    decided[d["order_id"]] = d
            bar.update(task, completed=len(decided))
            time.sleep(0.5)
    return decided


def show_summary(
    settings: Settings,
    console: Console,
    decided: dict[str, dict[str, Any]],
    truth: dict[str, str | None],
    dlq_start: dict[int, int],
    metrics: str | None,
) -> None:
    rows = list(decided.values())
    by_decision = Counter(d["decision"] for d in rows)
    table = Table("decision", "orders", "share", "amount (¥)", title="Decisions")
    for decision in ("APPROVE", "REVIEW", "DECLINE"):
        amount = sum(d["amount"] for d in rows if d["decision"] == decision)
        n = by_decision[decision]
        table.add_row(decision, f"{n:,}", f"{n / len(rows):.1%}", f"{amount:,}")
    console.print(table)

    patterns = Table(
        "simulated pattern",
        "orders",
        "approved",
        "review",
        "declined",
        title="Fraud patterns vs decisions",
    )
    for pattern in sorted({p or "legitimate" for p in truth.values()}):
        ds = [d for oid, d in decided.items() if (truth[oid] or "legitimate") == pattern]
        c = Counter(d["decision"] for d in ds)
        patterns.add_row(
            pattern, str(len(ds)), str(c["APPROVE"]), str(c["REVIEW"]), str(c["DECLINE"])
        )
    console.print(patterns)
    how = Counter(d["reasons"][-1] if d["reasons"] else "" for d in rows)
    console.print(
        f"Scored by the model: {how['SCORE_MODEL']:,}; by the rules while the model was cold "
        f"(too few outcomes learned yet): {how['MODEL_COLD_START']:,}. Outcomes arrive with the "
        "traffic and the worker learns from them as it goes: `shinsa model status`."
    )

    reasons = Counter()
    for msg in read_topic(settings, settings.topic("dlq"), start=dlq_start):
        headers = dict(msg.headers() or [])
        reasons[headers.get(REASON, b"?").decode()] += 1
    console.print(
        f"[bold]Dead letters:[/bold] {sum(reasons.values())} "
        f"({', '.join(f'{r} {n}' for r, n in reasons.most_common()) or 'none'})"
    )

    decided_at = [d["decided_at"] for d in rows]
    span = (max(decided_at) - min(decided_at)).total_seconds() if rows else 0
    latencies = [d["latency_ingest_ms"] for d in rows]
    console.print(
        f"[bold]Throughput:[/bold] {len(rows):,} decisions in {span:.1f}s "
        f"({len(rows) / span if span else float('nan'):,.0f}/s, including the producer's pace)"
    )
    console.print(
        f"[bold]Latency from ingest[/bold] (decision time − Kafka timestamp of the order): "
        f"p50 {percentile(latencies, 0.5):.0f} ms, p99 {percentile(latencies, 0.99):.0f} ms "
        "(orders were produced faster than one worker screens, so this includes queueing)"
    )
    if metrics:
        show_kpis(console, metrics)


DEMO_CAMPAIGN = "otsukidama"


def apply_demo_campaign(settings: Settings) -> None:
    """The card seed's campaign over this JST month and the last (the simulated month)."""
    import orjson

    from agents.campaign import jst_month, previous_month, to_ms
    from streams.clients import DeliveryTracker, make_producer, produce_one

    month = jst_month(to_ms(datetime.now(UTC)))
    campaign = {"id": DEMO_CAMPAIGN, "name": "お月玉", "months": [previous_month(month), month]}
    producer = make_producer(settings)
    tracker = DeliveryTracker()
    topic = settings.topic("campaigns")
    produce_one(producer, topic, DEMO_CAMPAIGN.encode(), orjson.dumps(campaign), tracker)
    producer.flush(30)


def show_campaign(settings: Settings, console: Console) -> None:
    """The campaign's months once its worker has caught up (its figures stop moving)."""
    import redis

    from agents.campaign import jst_month, previous_month, to_ms
    from agents.state import Keys

    month = jst_month(to_ms(datetime.now(UTC)))
    months = (previous_month(month), month)
    client = redis.Redis.from_url(settings.redis_url)

    keys = Keys(settings.identity_namespace)

    def figures() -> list[dict[bytes, bytes]]:
        return [client.hgetall(keys.campaign_stats(DEMO_CAMPAIGN, m)) for m in months]

    last, deadline = None, time.monotonic() + 30
    while time.monotonic() < deadline:
        now = figures()
        if now == last and any(now):
            break
        last = now
        time.sleep(2)
    table = Table("", *months, title=f"お月玉 campaign ({DEMO_CAMPAIGN}; the campaign worker)")
    for kind, label in (
        ("purchases", "earning card purchases"),
        ("eligible", "eligible members (logged in)"),
        ("issued", "tickets issued"),
        ("revoked", "tickets revoked"),
        ("participants", "participants"),
    ):
        table.add_row(label, *(f"{int(f.get(kind.encode(), 0)):,}" for f in last or figures()))
    console.print(table)


TWENTIES_THIRTIES = ["20-24", "25-29", "30-34", "35-39"]


def show_segments(
    settings: Settings, console: Console, decided: dict[str, dict[str, Any]], log: Path
) -> None:
    """The busiest merchant's audience through the worker's API, as the merchant asks for it
    with its own key (agents/segments.py: never fewer than 50, rounded, audited)."""
    import asyncio

    from agents.segments import SegmentStore
    from agents.state import redis_client
    from streams.errors import UserError
    from streams.tools.api_client import call

    approved = Counter(d["merchant_id"] for d in decided.values() if d["decision"] == "APPROVE")
    found = re.search(r"API on (http://\S+)/segments", log.read_text("utf-8", "replace"))
    if not approved or not found:
        console.print("[dim]no segment shown: the worker's API did not start (SHINSA_API_PORT)")
        return
    merchant = approved.most_common(1)[0][0]

    async def issue() -> str:
        client = redis_client(settings)
        try:
            return await SegmentStore(client, settings.identity_namespace).issue_key(merchant)
        finally:
            await client.aclose()

    key = asyncio.run(issue())
    table = Table("segment", "people", title=f"Audience of merchant {merchant} (its own key)")
    for label, query in (
        ("all its customers", {}),
        ("women", {"genders": ["female"]}),
        (
            "20-39, bought in the last 7 days",
            {"age_bands": ["20-24", "25-29", "30-34", "35-39"], "within_days": 7},
        ),
    ):
        try:
            shown = call(found.group(1), "/segments/count", key, query)["shown"]
        except UserError as exc:
            shown = f"refused: {str(exc).splitlines()[0]}"
        table.add_row(label, shown)
    console.print(table)


def show_payments(
    settings: Settings,
    console: Console,
    registry: SchemaRegistry,
    start: dict[int, int],
    patterns: dict[str, str | None],
) -> None:
    """The wallet payments decided (decisions with subject PAYMENT): by kind, and each
    simulated fraud pattern against its decisions."""
    decided: dict[str, dict[str, Any]] = {}
    for msg in read_topic(settings, settings.topic("decisions"), start=start):
        d = registry.decode("Decision", msg.value())
        if d["subject"] == "PAYMENT":
            decided[d["payment_id"]] = d
    if not decided:
        console.print("[dim]no wallet payments decided in this run")
        return
    verdicts = ("APPROVE", "REVIEW", "DECLINE")
    table = Table("kind", "payments", "approved", "review", "declined", title="Wallet payments")
    by_kind = Counter((d["payment_kind"] or "?", d["decision"]) for d in decided.values())
    for kind in sorted({k for k, _ in by_kind}):
        row = [by_kind[(kind, v)] for v in verdicts]
        table.add_row(kind, f"{sum(row):,}", *(f"{n:,}" for n in row))
    console.print(table)
    by_pattern = Counter(
        (patterns.get(pid) or "legitimate", d["decision"]) for pid, d in decided.items()
    )
    table = Table(
        "simulated pattern",
        "payments",
        "approved",
        "review",
        "declined",
        title="Wallet fraud patterns vs decisions",
    )
    for pattern in sorted({p for p, _ in by_pattern}):
        row = [by_pattern[(pattern, v)] for v in verdicts]
        table.add_row(pattern, f"{sum(row):,}", *(f"{n:,}" for n in row))
    console.print(table)


def show_kpis(console: Console, url: str) -> None:
    """The worker's KPIs as `shinsa kpi` shows them (streams/tools/kpi.py), not raw samples."""
    from streams.tools.kpi import from_worker, table

    try:
        text = urllib.request.urlopen(url, timeout=5).read().decode("utf-8", "replace")
    except OSError as exc:
        console.print(f"[yellow]could not read {url}: {exc}")
        return
    console.print(f"[bold]KPIs from the worker[/bold] ({url}, {datetime.now(UTC):%H:%M:%S} UTC):")
    console.print(table(from_worker(text, url)))
