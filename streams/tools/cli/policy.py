"""`shinsa policy`: validate, diff, publish and inspect screening policies
(streams/tools/policy_admin.py does the work)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from streams.errors import UserError
from streams.tools.cli.common import console, err, settings

policy_app = typer.Typer(help="Screening policies: default and per-merchant rules, lists.")


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
    from streams.tools import policy_admin

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
    from streams.tools import policy_admin

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
    from streams.codec import SchemaRegistry
    from streams.tools import policy_admin

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
