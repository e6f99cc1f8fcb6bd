"""`shinsa identity`: resolve records, look at an identity, list merges (no PII shown)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from streams.errors import UserError
from streams.tools.cli.common import console, err, progress, settings

identity_app = typer.Typer(help="Identity resolution (名寄せ).", no_args_is_help=True)


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
