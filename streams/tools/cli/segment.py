"""`shinsa segment`: merchant audience segments through the worker's HTTP API, as a merchant's
own tools would call it (agents/segments.py holds the rules), and API keys for merchants."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from streams.settings import settings_for_cli
from streams.tools.api_client import call

segment_app = typer.Typer(
    help="Merchant audience segments (age band, gender, prefecture; never fewer than 50).",
    no_args_is_help=True,
)
console = Console()

KeyOption = Annotated[
    str,
    typer.Option(
        envvar="SHINSA_SEGMENT_KEY",
        help="The merchant's API key (`shinsa segment key MERCHANT` issues one).",
        show_default=False,
    ),
]
UrlOption = Annotated[
    str, typer.Option(help="The worker's API; default http://SHINSA_API_HOST:SHINSA_API_PORT.")
]
AgeOption = Annotated[list[str], typer.Option("--age", help="Age band, e.g. 20-24 (repeat).")]
GenderOption = Annotated[
    list[str], typer.Option("--gender", help="female, male or unknown (repeat).")
]
PrefectureOption = Annotated[
    list[str], typer.Option("--prefecture", help="東京都, 東京 or JIS code 13 (repeat).")
]
WithinOption = Annotated[
    int | None, typer.Option(help="Bought within the last N days (JST; today is day 1).")
]
MinPurchasesOption = Annotated[int | None, typer.Option(help="At least N purchases.")]
MaxPurchasesOption = Annotated[int | None, typer.Option(help="At most N purchases.")]
AmountOption = Annotated[
    list[str], typer.Option("--amount", help="Yen spent band, e.g. 10000-49999 (repeat).")
]


def _api(url: str) -> str:
    if url:
        return url.rstrip("/")
    s = settings_for_cli()
    host = "127.0.0.1" if s.api_host in ("0.0.0.0", "") else s.api_host
    return f"http://{host}:{s.api_port}"


def query_of(
    ages: list[str],
    genders: list[str],
    prefectures: list[str],
    within_days: int | None,
    min_purchases: int | None,
    max_purchases: int | None,
    amounts: list[str],
) -> dict[str, Any]:
    """The JSON query of the options given (the API checks it and says what is wrong)."""
    query: dict[str, Any] = {
        "age_bands": ages,
        "genders": genders,
        "prefectures": prefectures,
        "within_days": within_days,
        "min_purchases": min_purchases,
        "max_purchases": max_purchases,
        "amount_bands": amounts,
    }
    return {k: v for k, v in query.items() if v not in (None, [])}


@segment_app.command("count")
def segment_count(
    key: KeyOption = "",
    age: AgeOption = [],  # noqa: B006 (typer reads the default)
    gender: GenderOption = [],  # noqa: B006
    prefecture: PrefectureOption = [],  # noqa: B006
    within_days: WithinOption = None,
    min_purchases: MinPurchasesOption = None,
    max_purchases: MaxPurchasesOption = None,
    amount: AmountOption = [],  # noqa: B006
    url: UrlOption = "",
) -> None:
    """How many of your customers a segment holds (rounded down; "fewer than 50" below 50)."""
    query = query_of(age, gender, prefecture, within_days, min_purchases, max_purchases, amount)
    answer = call(_api(url), "/segments/count", key or None, query)
    table = Table(title=f"segment of merchant {answer['merchant_id']}")
    table.add_column("filter")
    table.add_column("values")
    for name, value in query.items():
        table.add_row(name, ", ".join(map(str, value)) if isinstance(value, list) else str(value))
    table.add_row("[bold]people[/bold]", f"[bold]{answer['shown']}[/bold]")
    console.print(table)


@segment_app.command("export")
def segment_export(
    out: Annotated[Path, typer.Option(help="CSV file of the audience's identity ids.")],
    key: KeyOption = "",
    age: AgeOption = [],  # noqa: B006
    gender: GenderOption = [],  # noqa: B006
    prefecture: PrefectureOption = [],  # noqa: B006
    within_days: WithinOption = None,
    min_purchases: MinPurchasesOption = None,
    max_purchases: MaxPurchasesOption = None,
    amount: AmountOption = [],  # noqa: B006
    url: UrlOption = "",
) -> None:
    """Write a segment's audience (identity ids, no PII) for message delivery; refused under 50."""
    query = query_of(age, gender, prefecture, within_days, min_purchases, max_purchases, amount)
    answer = call(_api(url), "/segments/export", key or None, query)
    ids = answer["identity_ids"]
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["identity_id"])
        writer.writerows([i] for i in ids)
    console.print(f"{len(ids):,} identity ids written to {out}")


@segment_app.command("filters")
def segment_filters(url: UrlOption = "") -> None:
    """The filters and the values each accepts."""
    found = call(_api(url), "/segments/filters", None)
    for name in ("age_bands", "genders", "amount_bands"):
        console.print(f"[bold]{name}[/bold]: {', '.join(found[name])}")
    names = [f"{code} {name}" for code, name in sorted(found["prefectures"].items(), key=_code)]
    console.print("[bold]prefectures[/bold]: " + ", ".join(names))


def _code(item: tuple[str, str]) -> int:
    return int(item[0])


@segment_app.command("key")
def segment_key(
    merchant_id: Annotated[str, typer.Argument(help="The merchant the key answers for.")],
    revoke: Annotated[bool, typer.Option(help="Revoke the merchant's keys instead.")] = False,
) -> None:
    """Issue a merchant's API key (shown once; Redis keeps only its SHA-256), or revoke them."""
    import asyncio

    from agents.segments import SegmentStore
    from agents.state import redis_client

    s = settings_for_cli()

    async def run() -> str:
        client = redis_client(s)
        try:
            store = SegmentStore(client, s.identity_namespace)
            if revoke:
                return f"{await store.revoke_keys(merchant_id)} key(s) of {merchant_id} revoked"
            key = await store.issue_key(merchant_id)
            return (
                f"API key of merchant {merchant_id} (shown once, keep it secret):\n{key}\n"
                f"use it as SHINSA_SEGMENT_KEY or `Authorization: Bearer <key>`"
            )
        finally:
            await client.aclose()

    console.print(asyncio.run(run()), soft_wrap=True, highlight=False)
