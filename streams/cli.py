"""`shinsa`: the command line of the local stack, the worker and the clients.

Errors a user can fix are printed as one message saying what to do, without a traceback.
Heavy imports (Faust, Kafka clients) happen inside the commands that need them.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from streams.campaign_cli import campaign_app
from streams.errors import UserError
from streams.model_cli import model_app
from streams.progress import LineProgress, progress_for
from streams.segment_cli import segment_app
from streams.settings import Settings, settings_for_cli

app = typer.Typer(
    help="Shinsa: real-time transaction screening on Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
stack_app = typer.Typer(help="The local Kafka + Redis stack.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
identity_app = typer.Typer(help="Identity resolution (名寄せ).", no_args_is_help=True)
app.add_typer(identity_app, name="identity")
app.add_typer(model_app, name="model")
policy_app = typer.Typer(help="Screening policies: default and per-merchant rules, lists.")
app.add_typer(policy_app, name="policy")
monitoring_app = typer.Typer(help="Prometheus and Alertmanager setup.", no_args_is_help=True)
app.add_typer(monitoring_app, name="monitoring")
review_app = typer.Typer(
    help="The review queue: orders decided REVIEW and reviewers' verdicts.", no_args_is_help=True
)
app.add_typer(review_app, name="review")
app.add_typer(segment_app, name="segment")
app.add_typer(campaign_app, name="campaign")
console = Console()
err = Console(stderr=True)


class Role(StrEnum):
    screen = "screen"
    campaign = "campaign"


def settings() -> Settings:
    return settings_for_cli()


def progress() -> Progress | LineProgress:
    return progress_for(err)


# ---------------------------------------------------------------- stack


@stack_app.command("up")
def stack_up(
    monitoring: Annotated[
        bool,
        typer.Option(
            "--monitoring",
            help="Also Prometheus (SHINSA_PROMETHEUS_PORT) scraping the worker, and "
            "Alertmanager when SHINSA_ALERT_WEBHOOK_URL is set.",
        ),
    ] = False,
) -> None:
    """Start Kafka (KRaft) and Redis on loopback if not running, and create the topics."""
    from streams import stack

    s = settings()
    created = stack.up(s, say=lambda m: err.print(f"[dim]{m}[/dim]"))
    if created:
        err.print(f"created topics: {', '.join(created)}")
    if monitoring:
        stack.monitoring_up(s, say=lambda m: err.print(f"[dim]{m}[/dim]"))
    show_status(s)


@stack_app.command("down")
def stack_down() -> None:
    """Stop the services this project started (others are left alone)."""
    from streams import stack

    stopped = stack.down(settings())
    console.print(
        f"stopped: {', '.join(stopped)}" if stopped else "nothing started by shinsa is running"
    )


@stack_app.command("status")
def stack_status() -> None:
    """Each service, its address, and whether shinsa started it."""
    show_status(settings())


def show_status(s: Settings) -> None:
    from streams import stack

    table = Table("service", "address", "state", "started by shinsa", "log")
    for st in stack.status(s):
        state = "[green]up[/green]" if st.answering else "[red]down[/red]"
        table.add_row(
            st.name,
            st.address,
            state,
            f"yes (pid {st.pid})" if st.pid else "no",
            str(st.log) if st.pid else "",
        )
    console.print(table)


# ---------------------------------------------------------------- worker


@app.command()
def worker(
    loglevel: Annotated[str, typer.Option("--loglevel", "-l", help="info or debug")] = "info",
    role: Annotated[
        Role,
        typer.Option(
            help="screen: orders, payments, control streams, the API; campaign: "
            "the campaign's tickets alone (its own process and consumer group)"
        ),
    ] = Role.screen,
) -> None:
    """Run a worker: screen orders and payments, validate events, serve /metrics (and the API);
    with --role campaign, issue campaign tickets."""
    from streams.worker import run_campaign_worker, run_worker

    settings()  # a bad SHINSA_* variable is reported here, not as a traceback from the app

    sys.argv = [sys.argv[0], "worker"]
    if role is Role.campaign:
        run_campaign_worker(loglevel)
    else:
        run_worker(loglevel)


# ---------------------------------------------------------------- producing


@app.command()
def produce(
    file: Annotated[Path, typer.Argument(help="JSON lines; '-' for standard input.")],
    topic: Annotated[
        str | None,
        typer.Option(
            help="Every line is a record of this topic (orders, payments, ...). "
            'Without it each line is {"topic": ..., "value": {...}}.'
        ),
    ] = None,
) -> None:
    """Validate JSON lines against the schemas and publish them as Avro.

    Nothing is sent unless every line is valid; invalid lines are listed with their numbers.
    """
    import orjson

    from streams.clients import prepare
    from streams.codec import CodecError, SchemaRegistry

    s = settings()
    registry = SchemaRegistry(s.schema_dir)
    if str(file) != "-" and not file.exists():
        raise UserError(f"{file}: no such file")
    lines = (
        sys.stdin.read().splitlines() if str(file) == "-" else file.read_text("utf-8").splitlines()
    )
    prepared, problems = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
            if topic is None:
                if not isinstance(obj, dict) or "topic" not in obj or "value" not in obj:
                    raise CodecError(
                        "envelope", 'expected {"topic": ..., "value": {...}} (or pass --topic)'
                    )
                prepared.append(prepare(registry, obj["topic"], obj["value"]))
            else:
                prepared.append(prepare(registry, topic, obj))
        except orjson.JSONDecodeError as exc:
            problems.append(f"line {number}: not valid JSON ({exc.msg})")
        except CodecError as exc:
            problems.append(f"line {number}: {exc.reason}: {exc.detail}")
    if problems:
        shown = "\n".join(problems[:50])
        more = f"\n… and {len(problems) - 50} more" if len(problems) > 50 else ""
        raise UserError(f"{len(problems)} invalid line(s), nothing was sent:\n{shown}{more}")
    sent = send_prepared(s, [(p.topic, p.key, p.value) for p in prepared], "producing")
    console.print(f"sent {sent} events")


def send_prepared(
    s: Settings, events: list[tuple[str, bytes | None, bytes]], what: str, rate: float = 0.0
) -> int:
    """Send (logical topic, key, value) with progress; returns how many the broker acknowledged."""
    from streams.clients import DeliveryTracker, make_producer, produce_one

    producer = make_producer(s)
    tracker = DeliveryTracker()
    started = time.monotonic()
    with progress() as bar:
        task = bar.add_task(what, total=len(events), rate="")
        for i, (topic, key, value) in enumerate(events, 1):
            produce_one(producer, s.topic(topic), key, value, tracker)
            if rate:
                ahead = i / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            if i % 500 == 0 or i == len(events):
                producer.poll(0)
                elapsed = max(time.monotonic() - started, 1e-6)
                bar.update(task, completed=i, rate=f"{i / elapsed:,.0f} ev/s")
        remaining = producer.flush(60)
    if remaining or tracker.failed:
        raise UserError(
            f"{remaining + len(tracker.failed)} events were not acknowledged by Kafka "
            f"({'; '.join(tracker.failed[:3]) or 'flush timed out'})"
        )
    return tracker.delivered


@app.command()
def simulate(
    orders: Annotated[int, typer.Option(help="Orders to generate.", min=1)] = 2000,
    seed: Annotated[int, typer.Option(help="Same seed, same events.")] = 42,
    fraud_rate: Annotated[
        float, typer.Option(help="Share of orders that are fraud.", min=0, max=1)
    ] = 0.05,
    invalid_rate: Annotated[
        float, typer.Option(help="Share of events deliberately broken.", min=0, max=1)
    ] = 0.0,
    merchants: Annotated[int, typer.Option(help="Merchants.", min=1)] = 40,
    days: Annotated[
        float, typer.Option(help="Event-time span, ending now (or --end).", min=0.1)
    ] = 30.0,
    end: Annotated[
        str | None, typer.Option(help="End of the timeline, ISO-8601 with offset.")
    ] = None,
    rate: Annotated[
        float, typer.Option(help="Events per second; 0 = as fast as possible.", min=0)
    ] = 0.0,
    output: Annotated[
        Path | None, typer.Option(help="Write JSON lines here instead of Kafka.")
    ] = None,
    wallet: Annotated[
        int,
        typer.Option(
            help="Wallet payments (charges, shop payments, transfers, withdrawals).", min=0
        ),
    ] = 0,
    wallet_fraud_rate: Annotated[
        float, typer.Option(help="Share of wallet activities that are fraud.", min=0, max=1)
    ] = 0.03,
    campaign: Annotated[
        bool,
        typer.Option(
            help="Shape traffic for the お月玉 campaign: members who never log in, heavy card "
            "users who hit the daily cap, and the ticket_farming pattern."
        ),
    ] = False,
    people: Annotated[
        int,
        typer.Option(
            help="Buyers (0: one per three orders). Fewer buyers order more often each: "
            "longer repayment histories for the credit model.",
            min=0,
        ),
    ] = 0,
) -> None:
    """Generate realistic Japanese traffic with named fraud patterns and publish it."""
    from datetime import UTC, datetime

    from streams.simulate import SimConfig, Simulator

    end_time = datetime.now(UTC)
    if end:
        try:
            end_time = datetime.fromisoformat(end)
        except ValueError:
            raise UserError(
                f"--end {end!r} is not ISO-8601 (e.g. 2026-11-01T00:00:00+09:00)"
            ) from None
        if end_time.tzinfo is None:
            raise UserError("--end needs a UTC offset, e.g. 2026-11-01T00:00:00+09:00")
    cfg = SimConfig(
        orders=orders,
        seed=seed,
        fraud_rate=fraud_rate,
        merchants=merchants,
        days=days,
        invalid_rate=invalid_rate,
        end=end_time,
        wallet_payments=wallet,
        wallet_fraud_rate=wallet_fraud_rate,
        campaign=campaign,
        people=people,
    )
    events = list(Simulator(cfg).events())
    if output is not None:
        write_events(events, output)
        console.print(f"wrote {len(events)} events to {output}")
        return
    s = settings()
    encoded = encode_events(s, events)
    sent = send_prepared(s, encoded, "simulating", rate)
    console.print(f"sent {sent} events ({summarize_topics(events)})")


def write_events(events: list[Any], output: Path) -> None:
    import orjson

    with output.open("wb") as out:
        for e in events:
            if e.raw is None:
                line = {"topic": e.topic, "value": e.value}
                if e.fraud_pattern is not None:  # the truth, for `shinsa eval --payments`
                    line["pattern"] = e.fraud_pattern
                out.write(orjson.dumps(line) + b"\n")


def encode_events(s: Settings, events: list[Any]) -> list[tuple[str, bytes | None, bytes]]:
    """Simulated events as (topic, key, bytes): valid ones Avro, broken ones JSON or raw bytes."""
    import orjson

    from streams.clients import event_key, prepare
    from streams.codec import CodecError, SchemaRegistry

    registry = SchemaRegistry(s.schema_dir)
    out = []
    for e in events:
        if e.raw is not None:
            out.append((e.topic, None, e.raw))
            continue
        try:
            p = prepare(registry, e.topic, e.value)
            out.append((p.topic, p.key, p.value))
        except CodecError:  # deliberately invalid: send as JSON so the worker rejects it
            key = None
            with contextlib.suppress(KeyError, TypeError):
                key = event_key(e.topic, e.value)
            out.append((e.topic, key, orjson.dumps(e.value)))
    return out


def summarize_topics(events: list[Any]) -> str:
    counts = Counter(e.topic for e in events)
    return ", ".join(f"{n} {t}" for t, n in counts.most_common())


# ---------------------------------------------------------------- reading


@app.command()
def decisions(
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep waiting for new ones.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines for scripts.")] = False,
    limit: Annotated[int, typer.Option(help="Show at most the last N (table mode).", min=1)] = 50,
) -> None:
    """Decisions from the decisions topic: a table, or JSON lines with --json."""
    from streams.clients import read_topic
    from streams.codec import CodecError, SchemaRegistry, datum_to_json

    s = settings()
    registry = SchemaRegistry(s.schema_dir)
    rows: list[dict[str, Any]] = []
    for msg in read_topic(s, s.topic("decisions"), follow=follow):
        try:
            d = registry.decode("Decision", msg.value())
        except CodecError as exc:
            err.print(f"[yellow]skipping undecodable decision at offset {msg.offset()}: {exc}")
            continue
        if as_json:
            sys.stdout.write(datum_to_json(d).decode() + "\n")
            sys.stdout.flush()
        elif follow:
            console.print(decision_line(d))
        else:
            rows.append(d)
    if not as_json and not follow:
        counts = Counter(r["decision"] for r in rows)
        table = Table(
            "order",
            "merchant",
            "amount (¥)",
            "decision",
            "score",
            "reasons",
            "latency ms",
            title=f"last {min(limit, len(rows))} of {len(rows)} decisions "
            f"({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})",
        )
        for r in sorted(rows, key=lambda r: r["decided_at"])[-limit:]:
            table.add_row(
                r["order_id"],
                r["merchant_id"],
                f"{r['amount']:,}",
                colour(r["decision"]),
                f"{r['score']:.2f}",
                ", ".join(r["reasons"]),
                f"{r['latency_ingest_ms']:.0f}",
            )
        console.print(table)


def colour(decision: str) -> str:
    return {
        "APPROVE": "[green]APPROVE[/]",
        "REVIEW": "[yellow]REVIEW[/]",
        "DECLINE": "[red]DECLINE[/]",
    }.get(decision, decision)


def decision_line(d: dict[str, Any]) -> str:
    return (
        f"{d['order_id']}  {colour(d['decision'])}  ¥{d['amount']:,}  score {d['score']:.2f}  "
        f"{', '.join(d['reasons'])}"
    )


@app.command()
def dlq(
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines for scripts.")] = False,
) -> None:
    """Dead letters: where each came from and why (payloads are not shown: they may hold PII)."""
    import orjson

    from streams.clients import read_topic
    from streams.dlq import DETAIL, REASON, SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC

    s = settings()
    rows = []
    for msg in read_topic(s, s.topic("dlq")):
        h = {k: v.decode("utf-8", "replace") for k, v in (msg.headers() or [])}
        rows.append(
            {
                "topic": h.get(SOURCE_TOPIC),
                "partition": h.get(SOURCE_PARTITION),
                "offset": h.get(SOURCE_OFFSET),
                "reason": h.get(REASON),
                "detail": h.get(DETAIL),
                "bytes": len(msg.value() or b""),
            }
        )
    if as_json:
        for r in rows:
            sys.stdout.write(orjson.dumps(r).decode() + "\n")
        return
    table = Table(
        "source",
        "partition",
        "offset",
        "reason",
        "detail",
        "bytes",
        title=f"{len(rows)} dead letters",
    )
    for r in rows[-100:]:
        table.add_row(
            *(str(r[k]) for k in ("topic", "partition", "offset", "reason", "detail", "bytes"))
        )
    console.print(table)


# ---------------------------------------------------------------- identity


@identity_app.command("resolve")
def identity_resolve(
    file: Annotated[Path, typer.Argument(help="JSON lines of person records; '-' for stdin.")],
) -> None:
    """Resolve person records in a fresh namespace; print each line with its identity_id.

    Fields are those of the Order schema's buyer (name, name_kana, email, phone, birth_date,
    address{postal_code, prefecture, city, street, building}); other fields pass through.
    """
    import asyncio
    import uuid

    import orjson
    from redis import asyncio as aioredis

    from agents.identity import drop_namespace, resolve_buyers
    from streams.codec import CodecError, SchemaRegistry
    from streams.records import Buyer, record_from_datum

    s = settings()
    registry = SchemaRegistry(s.schema_dir)
    fields = set(Buyer.__dataclass_fields__)
    text = sys.stdin.read() if str(file) == "-" else read_text(file)
    lines, buyers, problems = [], [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
            if not isinstance(obj, dict):
                raise CodecError("invalid_json", "each line must be a JSON object")
            datum = registry.from_json_type(
                "Order", "Buyer", {k: obj[k] for k in fields & set(obj)}
            )
            buyers.append(record_from_datum(Buyer, datum))
            lines.append(obj)
        except orjson.JSONDecodeError as exc:
            problems.append(f"line {number}: not valid JSON ({exc.msg})")
        except CodecError as exc:
            problems.append(f"line {number}: {exc.reason}: {exc.detail}")
    if problems:
        raise UserError(
            f"{len(problems)} invalid line(s), nothing resolved:\n" + "\n".join(problems[:50])
        )
    namespace = f"{s.identity_namespace}:resolve:{uuid.uuid4().hex[:12]}"

    async def run() -> list[str]:
        client = aioredis.Redis.from_url(s.redis_url, socket_connect_timeout=3)
        try:
            with progress() as bar:
                task = bar.add_task("resolving", total=len(buyers), rate="")
                return await resolve_buyers(
                    client,
                    namespace,
                    buyers,
                    s.hash_key.get_secret_value().encode(),
                    fanout_limit=s.identity_fanout_limit,
                    on_batch=lambda n: bar.advance(task, n),
                )
        finally:
            await drop_namespace(client, namespace)
            await client.aclose()

    ids = asyncio.run(run())
    for obj, identity_id in zip(lines, ids, strict=True):
        sys.stdout.write(orjson.dumps(obj | {"identity_id": identity_id}).decode() + "\n")
    err.print(f"{len(lines)} records, {len(set(ids))} identities")


def read_policy_file(file: Path) -> Any:
    from agents.policy import PolicyError, load_policy_yaml

    if not file.is_file():
        raise UserError(f"{file}: no such file")
    try:
        return load_policy_yaml(file.read_text(encoding="utf-8"), str(file))
    except PolicyError as exc:
        raise UserError(f"invalid policy, nothing was published:\n{exc}") from None


@policy_app.command("apply")
def policy_apply(
    file: Annotated[Path, typer.Argument(help="Policy YAML (schema: agents/policy.py).")],
    shadow: Annotated[
        bool, typer.Option("--shadow", help="Run beside the active policy; decide nothing.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and diff only.")] = False,
) -> None:
    """Validate a policy file, show what changes, and publish it; workers switch without restart."""
    from streams import policy_admin

    s = settings()
    new = read_policy_file(file)
    current = policy_admin.published(s)
    key = policy_admin.SHADOW if shadow else policy_admin.ACTIVE
    baseline = current[policy_admin.ACTIVE] or policy_admin.DEFAULT_POLICY_SET
    changes = policy_admin.diff(baseline, new)
    console.print(changes or f"no change in the rules against {baseline.version}", markup=False)
    if dry_run:
        err.print(f"valid: {new.version} (dry run, nothing published)")
        return
    policy_admin.publish(s, key, new)
    what = "shadow policy (runs beside the active one, decides nothing)" if shadow else "policy"
    err.print(f"published {what} {new.version} to {s.topic('policies')}")


@policy_app.command("show")
def policy_show(
    merchant: Annotated[
        str | None, typer.Argument(help="A merchant id; default rules if omitted.")
    ] = None,
    shadow: Annotated[bool, typer.Option("--shadow", help="The shadow policy instead.")] = False,
) -> None:
    """The effective rules in force (defaults filled in) for a merchant, or the default."""
    from streams import policy_admin

    s = settings()
    current = policy_admin.published(s)
    policy = current[policy_admin.SHADOW if shadow else policy_admin.ACTIVE]
    if policy is None and shadow:
        raise UserError("no shadow policy runs (start one: `shinsa policy apply FILE --shadow`)")
    policy = policy or policy_admin.DEFAULT_POLICY_SET
    rules = policy.for_merchant(merchant) if merchant else policy.default
    scope = f"merchant {merchant}" if merchant else "default"
    if merchant and merchant not in policy.merchants:
        scope += " (no override: the default rules)"
    console.print(f"# {policy.version}, {scope}", markup=False)
    console.print(policy_admin.as_yaml(policy_admin.rules_dict(rules)), markup=False)
    console.print(
        f"# lists: {len(policy.blocks)} block, {len(policy.allows)} allow entries", markup=False
    )


@policy_app.command("shadow")
def policy_shadow(
    stop: Annotated[bool, typer.Option("--stop", help="Stop the shadow run.")] = False,
) -> None:
    """How the shadow policy would have decided the orders it saw, against the active one."""
    from streams import policy_admin
    from streams.codec import SchemaRegistry

    s = settings()
    shadow = policy_admin.published(s)[policy_admin.SHADOW]
    if shadow is None:
        raise UserError("no shadow policy runs (start one: `shinsa policy apply FILE --shadow`)")
    if stop:
        policy_admin.publish(s, policy_admin.SHADOW, None)
        err.print(f"stopped shadow policy {shadow.version}")
        return
    pairs = policy_admin.shadow_report(s, SchemaRegistry(s.schema_dir), shadow.version)
    table = Table("active", "shadow", "orders", title=f"shadow {shadow.version}")
    for (active, candidate), n in sorted(pairs.items(), key=lambda kv: -kv[1]):
        style = "" if active == candidate else "bold yellow"
        table.add_row(active, candidate, f"{n:,}", style=style)
    console.print(table)
    total = sum(pairs.values())
    differ = sum(n for (a, b), n in pairs.items() if a != b)
    err.print(f"{differ:,} of {total:,} orders would be decided differently")


@policy_app.command("hash")
def policy_hash(
    kind: Annotated[str, typer.Argument(help="phone, email or device.")],
    value: Annotated[str, typer.Argument(help="The raw value; it is normalized, then hashed.")],
) -> None:
    """The keyed hash a block or allow list entry holds for a phone, email or device."""
    from agents.policy import list_hash

    if kind not in ("phone", "email", "device"):
        raise UserError("kind must be phone, email or device (identities are listed by id)")
    hashed = list_hash(settings().hash_key.get_secret_value().encode(), kind, value)
    if hashed is None:
        raise UserError(f"not a usable {kind}: it does not normalize (check the value)")
    console.print(f"- {{kind: {kind}, hash: {hashed}}}", markup=False)


@identity_app.command("show")
def identity_show(
    identity_id: Annotated[str, typer.Argument(help="An identity id, e.g. i42.")],
) -> None:
    """An identity's summary without PII: counts, first/last seen, merges."""
    import asyncio
    from datetime import UTC, datetime

    from redis import asyncio as aioredis

    from agents.identity import IdentityGraph

    s = settings()

    async def run() -> dict[str, Any] | None:
        client = aioredis.Redis.from_url(s.redis_url, socket_connect_timeout=3)
        try:
            return await IdentityGraph(client, s.identity_namespace).summary(identity_id)
        finally:
            await client.aclose()

    summary = asyncio.run(run())
    if summary is None:
        raise UserError(
            f"no identity {identity_id!r} in {s.identity_namespace} "
            "(ids appear in decisions: `shinsa decisions`)"
        )
    table = Table("field", "value", title=f"identity {summary['identity_id']}")
    if summary["requested"] != summary["identity_id"]:
        table.add_row("merged from", summary["requested"])
    for key in ("orders", "merges", "names", "addresses", "phones", "emails"):
        table.add_row(key, str(summary.get(key, 0)))
    for key in ("first", "last"):
        if key in summary:
            stamp = datetime.fromtimestamp(summary[key] / 1000, tz=UTC).isoformat(
                timespec="seconds"
            )
            table.add_row(f"{key} seen", stamp)
    console.print(table)


@identity_app.command("merges")
def identity_merges(
    limit: Annotated[int, typer.Option(help="How many, newest first.", min=1)] = 20,
) -> None:
    """Recent merges of the identity graph and its totals (identities, merges, saturated keys)."""
    import asyncio
    from datetime import UTC, datetime

    from redis import asyncio as aioredis

    from agents.identity import IdentityGraph

    s = settings()

    async def run() -> tuple[list[dict[str, str]], dict[str, int]]:
        client = aioredis.Redis.from_url(s.redis_url, socket_connect_timeout=3)
        try:
            graph = IdentityGraph(client, s.identity_namespace)
            return await graph.merges(limit), await graph.stats()
        finally:
            await client.aclose()

    merges, stats = asyncio.run(run())
    table = Table(
        "at",
        "survivor",
        "absorbed",
        title="identity merges, newest first; totals: "
        + ", ".join(f"{k} {v}" for k, v in sorted(stats.items())),
    )
    for m in merges:
        at = datetime.fromtimestamp(int(m["event"].split("-")[0]) / 1000, tz=UTC)
        table.add_row(at.isoformat(timespec="seconds"), m["winner"], m["loser"])
    console.print(table)


def read_text(file: Path) -> str:
    if not file.exists():
        raise UserError(f"{file}: no such file")
    return file.read_text("utf-8")


# ---------------------------------------------------------------- review and audit


class VerdictChoice(StrEnum):
    fraud = "fraud"
    legit = "legit"


@review_app.command("list")
def review_list(
    limit: Annotated[int, typer.Option(help="Show the oldest N.", min=1)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines for scripts.")] = False,
) -> None:
    """Orders decided REVIEW without a reviewer's verdict, oldest first; the buyer masked."""
    from streams.review import review_queue, review_table, row_json

    rows, total = review_queue(settings(), limit)
    if as_json:
        sys.stdout.write("".join(row_json(r) + "\n" for r in rows))
        return
    console.print(review_table(rows, total))


@review_app.command("resolve")
def review_resolve(
    order: Annotated[str, typer.Argument(help="The order id.")],
    verdict: Annotated[VerdictChoice, typer.Option(help="The reviewer's verdict.")],
    note: Annotated[str | None, typer.Option(help="Why (kept with the outcome).")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Also for an order decided APPROVE or DECLINE.")
    ] = False,
) -> None:
    """Publish a reviewer's verdict (FRAUD_CONFIRMED / LEGIT_CONFIRMED) for the model to learn."""
    from streams.review import resolve

    done = resolve(settings(), order, verdict.value, note, force=force)
    if done.previous is not None:
        err.print(
            f"order {order} already had the verdict {done.previous['kind']} "
            f"({done.previous['event_time']:%Y-%m-%d %H:%M:%S} UTC): this one corrects it",
            style="yellow",
            markup=False,
        )
    console.print(
        f"published {done.outcome['kind']} (source REVIEWER) for order {order}, decided "
        f"{done.decision}, to {done.topic} (partition {done.partition}, offset {done.offset})",
        markup=False,
    )


@app.command()
def explain(
    order: Annotated[str, typer.Argument(help="The order id.")],
    as_json: Annotated[bool, typer.Option("--json", help="The whole trace as JSON.")] = False,
) -> None:
    """Why an order was decided as it was: its decision trace (rules, lists, model, policy)."""
    from streams.codec import datum_to_json
    from streams.explain import find_trace, trace_renderables

    trace = find_trace(settings(), order)
    if as_json:
        sys.stdout.write(datum_to_json(trace).decode() + "\n")
        return
    for part in trace_renderables(trace):
        console.print(part)


# ---------------------------------------------------------------- evaluation


@app.command("eval")
def eval_history(
    file: Annotated[
        Path, typer.Argument(help="`shinsa simulate --output` JSON lines, or a CSV/Parquet export.")
    ],
    label: Annotated[str | None, typer.Option(help="Export: the 0/1 fraud column.")] = None,
    time_column: Annotated[
        str | None, typer.Option("--time", help="Export: ISO 8601 or epoch seconds.")
    ] = None,
    amount: Annotated[str | None, typer.Option(help="Export: the amount column.")] = None,
    entity: Annotated[
        list[str] | None,
        typer.Option(help="Export: history and known risk per value of this column (repeatable)."),
    ] = None,
    ignore: Annotated[
        list[str] | None, typer.Option(help="Export: a column not to use (repeatable).")
    ] = None,
    pattern: Annotated[
        str | None,
        typer.Option(help="Export: each fraud's pattern name; recall reported per pattern."),
    ] = None,
    delay: Annotated[
        str | None,
        typer.Option(
            help="When a label is known: 30m, 12h, 7d, or 'outcome' (simulator).",
            show_default="outcome for simulator files, else 7d",
        ),
    ] = None,
    estimator: Annotated[str, typer.Option(help="logreg, tree or forest.")] = "logreg",
    review_rate: Annotated[float, typer.Option(help="Share of orders reviewed.")] = 0.01,
    payments: Annotated[
        bool, typer.Option(help="Simulator file: its wallet payments instead of its orders.")
    ] = False,
    target: Annotated[
        str,
        typer.Option(
            help="fraud, or credit: a simulator file's deferred orders judged on their "
            "repayments by the credit model (an export: --label is the default column)."
        ),
    ] = "fraud",
) -> None:
    """Backtest: replay a labelled history through the model with delayed labels.

    Prints a comparison table on stderr and one JSON object with every number on stdout.
    """
    import orjson

    from streams.backtest import Columns, EvalOptions, report_table, run_eval

    columns = Columns(label, time_column, amount, tuple(entity or ()), tuple(ignore or ()), pattern)
    options = EvalOptions(delay, estimator, review_rate, columns, payments, target)
    with progress() as bar:
        report = run_eval(
            file, options, settings(), progress=bar, say=lambda note: err.print(escape(note))
        )
    err.print(report_table(report))
    sys.stdout.write(orjson.dumps(report).decode() + "\n")


# ---------------------------------------------------------------- monitoring


@app.command()
def kpi(
    url: Annotated[
        str | None,
        typer.Option(help="A worker's /metrics URL (default: this host's SHINSA_METRICS_PORT)."),
    ] = None,
    prometheus: Annotated[
        str | None,
        typer.Option(help="A Prometheus base URL: all workers over --window instead."),
    ] = None,
    window: Annotated[str, typer.Option(help="With --prometheus: e.g. 15m, 1h, 1d.")] = "1h",
) -> None:
    """Business KPIs as a table, from a worker's /metrics or from Prometheus."""
    from streams.kpi import show_kpis

    show_kpis(settings(), console, url=url, prometheus=prometheus, window=window)


@monitoring_app.command("render")
def monitoring_render(
    output: Annotated[
        Path | None, typer.Option(help="Directory (default: $SHINSA_DATA_DIR/monitoring).")
    ] = None,
) -> None:
    """Write this host's prometheus.yml and alertmanager.yml (webhook: SHINSA_ALERT_WEBHOOK_URL)."""
    from streams import stack

    s = settings()
    for path in stack.render_monitoring(s, output):
        console.print(f"wrote {path}")
    if not s.alert_webhook_url.get_secret_value():
        err.print("[yellow]SHINSA_ALERT_WEBHOOK_URL is not set: no alertmanager.yml written")


# ---------------------------------------------------------------- demo


@app.command()
def demo(
    orders: Annotated[int, typer.Option(help="Orders to simulate.", min=10)] = 3000,
    seed: Annotated[
        int | None, typer.Option(help="Simulator seed (default: from the clock).")
    ] = None,
) -> None:
    """Stack up, a worker, simulated traffic, then decisions, KPIs and where to look next."""
    from streams.demo import run_demo

    run_demo(settings(), orders=orders, seed=seed, console=console, progress=progress)


def main() -> None:
    from confluent_kafka import KafkaException
    from redis.exceptions import RedisError

    from streams.codec import CodecError
    from streams.stack import StackError

    try:
        app()
    except (UserError, StackError, CodecError, KafkaException, OSError, RedisError) as exc:
        # user text may hold [brackets]; one line, however narrow the terminal
        err.print("[red]error:[/red]", escape(str(exc)), soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
