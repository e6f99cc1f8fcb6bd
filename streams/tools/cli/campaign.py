"""`shinsa campaign`: campaigns as data (apply), their month's KPIs and a person's tickets, and
the auditable monthly draw (commit, draw, verify). agents/campaign.py and agents/draw.py hold
the rules; this module only reads arguments and prints."""

from __future__ import annotations

import asyncio
import csv
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from streams.errors import UserError
from streams.settings import Settings, settings_for_cli

if TYPE_CHECKING:
    from agents.campaign import Campaign

campaign_app = typer.Typer(
    help="The お月玉 campaign: tickets earned in the stream, an auditable monthly draw.",
    no_args_is_help=True,
)
console = Console()

MonthOption = Annotated[str, typer.Option(help="JST month, YYYY-MM (default: this month).")]
CampaignOption = Annotated[
    str, typer.Option("--campaign", help="Campaign id (default: the only one in force).")
]


def this_month() -> str:
    from agents.campaign import jst_month, to_ms

    return jst_month(to_ms(datetime.now(UTC)))


def campaigns_in_force(settings: Settings) -> dict[str, Campaign]:
    from agents.campaign import CampaignBook

    book = CampaignBook(settings)
    try:
        book.catch_up()
        return dict(book.campaigns)
    finally:
        book.close()


def pick(settings: Settings, campaign_id: str) -> Campaign:
    found = campaigns_in_force(settings)
    if campaign_id:
        if campaign_id not in found:
            known = ", ".join(sorted(found)) or "none"
            raise UserError(f"no campaign {campaign_id!r} in force (in force: {known})")
        return found[campaign_id]
    if len(found) != 1:
        known = ", ".join(sorted(found)) or "none: `shinsa campaign apply FILE`"
        raise UserError(f"say which campaign with --campaign (in force: {known})")
    return next(iter(found.values()))


@campaign_app.command("apply")
def campaign_apply(
    file: Annotated[Path, typer.Argument(help="The campaign's YAML file.")],
    dry_run: Annotated[bool, typer.Option(help="Validate only; publish nothing.")] = False,
) -> None:
    """Validate a campaign (every problem listed with its line) and publish it (campaign
    workers follow it without restart)."""
    import orjson

    from agents.campaign import CampaignError, load_campaign_yaml
    from streams.clients import DeliveryTracker, make_producer, produce_one

    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read {file}: {exc.strerror}") from None
    try:
        campaign = load_campaign_yaml(text, str(file))
    except CampaignError as exc:
        raise UserError(f"the campaign is not valid:\n{exc}") from None
    table = Table("field", "value", title=f"campaign {campaign.id}")
    for name, value in campaign.model_dump().items():
        table.add_row(name, ", ".join(value) if isinstance(value, tuple) else str(value))
    console.print(table)
    if dry_run:
        console.print("valid; nothing published (--dry-run)")
        return
    s = settings_for_cli()
    producer = make_producer(s)
    tracker = DeliveryTracker()
    value = orjson.dumps(campaign.model_dump(mode="json"))
    produce_one(producer, s.topic("campaigns"), campaign.id.encode(), value, tracker)
    if producer.flush(30) or tracker.failed:
        raise UserError(f"publishing the campaign failed: {tracker.failed or 'timed out'}")
    console.print(
        f"campaign {campaign.id} published; campaign workers apply it at their next batch"
    )


@campaign_app.command("status")
def campaign_status(month: MonthOption = "", campaign: CampaignOption = "") -> None:
    """The month's KPIs beside last month's, and the draw's state."""
    from agents.campaign import CampaignState, previous_month
    from agents.draw import published_draw
    from agents.state import redis_client

    s = settings_for_cli()
    chosen = pick(s, campaign)
    month = month or this_month()
    before = previous_month(month)

    async def read() -> tuple[dict, dict]:
        client = redis_client(s)
        try:
            state = CampaignState(client, s.identity_namespace)
            return (
                await state.month_stats(chosen.id, month),
                await state.month_stats(chosen.id, before),
            )
        finally:
            await client.aclose()

    now, last = asyncio.run(read())
    table = Table("figure", month, before, "change", title=f"campaign {chosen.id}")
    for kind, label in (
        ("issued", "tickets issued"),
        ("revoked", "tickets revoked"),
        ("participants", "participants (a live ticket)"),
        ("eligible", "eligible members (logged in)"),
        ("purchases", "earning purchases seen"),
    ):
        a, b = now.get(kind, 0), last.get(kind, 0)
        change = f"{(a - b) / b:+.1%}" if b else "—"
        table.add_row(label, f"{a:,}", f"{b:,}", change)
    draw = published_draw(s, chosen.id, month)
    state = (
        f"drawn {draw['drawn_at']}: {draw['winners']:,} winners"
        if "seed" in draw
        else f"committed {draw['committed_at']}"
        if draw
        else "not committed"
    )
    table.add_row("draw", state, "", "")
    console.print(table)


@campaign_app.command("tickets")
def campaign_tickets(
    identity: Annotated[str, typer.Argument(help="An identity id (no PII is shown).")],
    month: MonthOption = "",
    campaign: CampaignOption = "",
) -> None:
    """A person's tickets per JST day of the month, and their purchases' states."""
    from agents.campaign import CampaignState
    from agents.state import redis_client

    s = settings_for_cli()
    chosen = pick(s, campaign)
    month = month or this_month()

    async def read() -> dict[str, str]:
        client = redis_client(s)
        try:
            state = CampaignState(client, s.identity_namespace)
            return await state.person(chosen.id, month, identity)
        finally:
            await client.aclose()

    person = asyncio.run(read())
    if not person:
        raise UserError(f"{identity} has no campaign activity in {month}")
    table = Table("JST day", "tickets", "purchases", title=f"{identity} in {month}")
    days: dict[str, list[str]] = {}
    for field, value in person.items():
        if field.startswith("p:"):
            day, state, _ = value.split("|")
            days.setdefault(day, []).append(state)
    for day in sorted(days):
        states = days[day]
        summary = ", ".join(f"{states.count(x)} {x}" for x in sorted(set(states)))
        table.add_row(day, person.get(f"d:{day}", "0"), summary)
    console.print(table)
    logged = "yes" if person.get("login") else "no (purchases wait for a login this month)"
    console.print(f"logged in this month: {logged}; live tickets: {person.get('live', '0')}")


@campaign_app.command("commit")
def campaign_commit(month: MonthOption = "", campaign: CampaignOption = "") -> None:
    """Before the month closes: publish the commitment (SHA-256) of the draw's secret seed."""
    from agents.draw import DrawError, commit_month

    s = settings_for_cli()
    chosen = pick(s, campaign)
    month = month or this_month()
    try:
        record = commit_month(s, chosen.id, month, datetime.now(UTC))
    except DrawError as exc:
        raise UserError(str(exc)) from None
    console.print(f"committed {chosen.id} {month}: sha256(seed) = {record['commitment']}")


@campaign_app.command("draw")
def campaign_draw(
    month: Annotated[str, typer.Option(help="The closed JST month to draw, YYYY-MM.")],
    out: Annotated[Path | None, typer.Option(help="CSV of the winners' identity ids.")] = None,
    campaign: CampaignOption = "",
) -> None:
    """After the month closes: draw its winners, weighted by tickets, one win per person."""
    from agents.draw import DrawError, draw_month, read_ledger
    from streams.codec import SchemaRegistry
    from streams.tools.progress import progress_for

    s = settings_for_cli()
    chosen = pick(s, campaign)
    registry = SchemaRegistry(s.schema_dir)
    with progress_for(Console(stderr=True)) as progress:
        task = progress.add_task("reading the ledger", total=None)
        ledger = read_ledger(s, registry, lambda: progress.advance(task))
    try:
        result = draw_month(
            s,
            registry,
            chosen.id,
            month,
            chosen.winners_per_month,
            chosen.prize_yen,
            datetime.now(UTC),
            ledger,
        )
    except DrawError as exc:
        raise UserError(str(exc)) from None
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["rank", "identity_id", "tickets"])
            writer.writerows((r, p, n) for r, (p, n) in enumerate(result["chosen"], 1))
    console.print(
        f"{result['winners']:,} winners of {result['participants']:,} participants "
        f"({result['tickets']:,} tickets); seed {result['seed']} revealed on campaign-draws"
        + (f"; winners in {out}" if out else "")
    )


@campaign_app.command("verify")
def campaign_verify(
    month: Annotated[str, typer.Option(help="The drawn JST month, YYYY-MM.")],
    campaign: CampaignOption = "",
) -> None:
    """Recompute the draw from the ledger and the revealed seed; fails on any mismatch."""
    from agents.draw import DrawError, verify_month
    from streams.codec import SchemaRegistry

    s = settings_for_cli()
    chosen = pick(s, campaign)
    try:
        checks = verify_month(s, SchemaRegistry(s.schema_dir), chosen.id, month)
    except DrawError as exc:
        raise UserError(str(exc)) from None
    table = Table("check", "result", "detail", title=f"draw of {chosen.id} {month}")
    for name, passed, detail in checks:
        table.add_row(name, "[green]ok[/green]" if passed else "[red]MISMATCH[/red]", detail)
    console.print(table)
    if not all(passed for _, passed, _ in checks):
        raise UserError("the draw does not verify: the ledger or the winners changed since")
