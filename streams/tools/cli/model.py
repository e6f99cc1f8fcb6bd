"""`shinsa model`: the online fraud model's operations — what decides now, the archive of
checkpoints, promotion, rollback and the kill switch.

Everything is read from the compacted `models` topic (agents/model.py says what each key
holds). Changes to the model itself go through the one learner, as a request in Redis that
expires if no learner answers: the learner owns the model's place in the outcomes, so only it
may publish a checkpoint. The kill switch is a signed message on the models topic that every
worker follows: it works with no learner running, which is when it may be needed most.
"""

from __future__ import annotations

import getpass
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from streams.errors import UserError
from streams.settings import Settings, settings_for_cli

model_app = typer.Typer(help="The online fraud model.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

WaitOption = Annotated[
    float, typer.Option(help="Seconds to wait for the learner to publish the change.")
]


@dataclass
class ModelsTopic:
    """What the models topic holds now (agents/model.py): the checkpoint in use, the archive
    of checkpoints by number (header, signed blob) and the kill switch."""

    newest: dict[str, Any] | None = None
    archive: dict[int, tuple[dict[str, Any], bytes]] = field(default_factory=dict)
    switch: dict[str, Any] | None = None
    checkpoints: int = 0
    rejected: int = 0


def read_models(s: Settings, start: dict[int, int] | None = None) -> ModelsTopic:
    """One pass over the models topic (from `start` offsets, else the beginning); a message
    that does not verify is counted, not used."""
    from agents.model import (
        MODEL_KEY,
        SWITCH_KEY,
        CheckpointError,
        archived_checkpoint,
        decode_switch,
        verify_checkpoint,
    )
    from streams.clients import read_topic

    secret = s.hash_key.get_secret_value().encode()
    seen = ModelsTopic()
    for msg in read_topic(s, s.topic("models"), start=start):
        key, value = msg.key(), msg.value()
        number = archived_checkpoint(key)
        if number is not None and value is None:  # fell out of the archive
            seen.archive.pop(number, None)
            continue
        if value is None or (key != MODEL_KEY and key != SWITCH_KEY and number is None):
            continue
        try:
            if key == SWITCH_KEY:
                seen.switch = decode_switch(value, secret)
                continue
            header, _ = verify_checkpoint(value, secret)
        except CheckpointError:
            seen.rejected += 1
            continue
        if number is not None:
            seen.archive[number] = (header, value)
        else:
            seen.checkpoints += 1
            if seen.newest is None or header["checkpoint"] > seen.newest["checkpoint"]:
                seen.newest = header
    return seen


def no_model_yet(s: Settings, rejected: int) -> UserError:
    return UserError(
        f"no model checkpoint on {s.topic('models')} yet ({rejected} rejected): the learner "
        "publishes one once outcomes arrive (`shinsa worker`, then outcomes on "
        f"{s.topic('outcomes')})"
    )


def iso_time(epoch_seconds: float | None) -> str | None:
    if not epoch_seconds:
        return None
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec="seconds")


def cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "—" if value is None else str(value)


def operator() -> str:
    """Who asked for a change, as the records keep it."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def checkpoint_number(version: str) -> int:
    """`12` or `logreg-v12` → 12."""
    number = version.rpartition("-v")[2] if "-v" in version else version
    if not number.isdigit():
        raise UserError(
            f"{version!r} is not a checkpoint: give its number (12) or its version (logreg-v12), "
            "as `shinsa model history` lists them"
        )
    return int(number)


@model_app.command("status")
def model_status(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """The newest model checkpoint: version, labels learned, progressive metrics, features,
    the challenger learning beside it, if any, and the kill switch."""
    s = settings_for_cli()
    seen = read_models(s)
    newest = seen.newest
    if newest is None:
        raise no_model_yet(s, seen.rejected)
    warm = newest["labels"] >= s.model_min_labels and newest["positives"] >= s.model_min_positives
    rules_only = bool(seen.switch and seen.switch["rules_only"])
    status = {
        **newest,
        "warm": warm,
        "rules_only": rules_only,
        "checkpoints_on_topic": seen.checkpoints,
        "archived": len(seen.archive),
        "rejected": seen.rejected,
    }
    for key in ("updated_at", "promoted_at", "rolled_back_at"):
        status[key] = iso_time(newest.get(key))
    if as_json:
        sys.stdout.write(orjson.dumps(status).decode() + "\n")
        return
    challenger = status.pop("challenger", None)
    credit = status.pop("credit", None) or {}
    table = Table("field", "model", "challenger", "credit", title=f"model {newest['version']}")
    for key, value in status.items():
        other = challenger.get(key) if challenger else None
        table.add_row(
            key,
            cell(value),
            cell(other) if key in (challenger or {}) else "",
            cell(credit[key]) if key in credit else "",
        )
    console.print(table)
    if rules_only:
        err.print(
            f"[bold red]kill switch on[/] since {iso_time(seen.switch['at'])} "
            f"({seen.switch['by']}: {seen.switch['reason'] or 'no reason given'}): the policy "
            "rules decide alone; `shinsa model on` lets the models decide again"
        )
    if not credit:
        err.print("no credit model yet: it starts with the first repayment (PAID, UNPAID) label")
    if not challenger:
        err.print("no challenger: set SHINSA_MODEL_CHALLENGER on the workers to start one")
    if not warm:
        err.print(
            f"cold start: decisions use the policy rules until {s.model_min_labels} labels "
            f"({s.model_min_positives} frauds) are learned"
        )


def change_of(header: dict[str, Any], before: dict[str, Any] | None) -> str:
    """What an operator did between two archived checkpoints, in words."""
    if before is None:
        return ""
    if header.get("rollbacks", 0) > before.get("rollbacks", 0):
        return f"rolled back to {header['rolled_back_to']}"
    if header.get("promotions", 0) > before.get("promotions", 0):
        return f"{header['kind']} promoted over {before['kind']}"
    return ""


@model_app.command("history")
def model_history(
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines, oldest first.")] = False,
) -> None:
    """The archived checkpoints, oldest first (SHINSA_MODEL_HISTORY are kept): what each
    learned, how it did, and the promotions and rollbacks between them."""
    s = settings_for_cli()
    seen = read_models(s)
    if not seen.archive:
        if seen.newest is not None:
            raise UserError(
                f"no archived checkpoint on {s.topic('models')}, only the model in use "
                f"({seen.newest['version']}): its learner predates the archive; the next "
                "checkpoint starts it"
            )
        raise no_model_yet(s, seen.rejected)
    rows = []
    before: dict[str, Any] | None = None
    for number in sorted(seen.archive):
        header = seen.archive[number][0]
        rows.append(
            {
                "checkpoint": number,
                "version": header["version"],
                "kind": header["kind"],
                "labels": header["labels"],
                "positives": header["positives"],
                "roc_auc": header.get("roc_auc"),
                "average_precision": header.get("average_precision"),
                "updated_at": iso_time(header["updated_at"]),
                "change": change_of(header, before),
                "in_use": seen.newest is not None and number == seen.newest["checkpoint"],
            }
        )
        before = header
    if as_json:
        for row in rows:
            sys.stdout.write(orjson.dumps(row).decode() + "\n")
        return
    table = Table(
        "checkpoint",
        "version",
        "labels",
        "frauds",
        "ROC AUC",
        "AP",
        "learned until",
        "change",
        title=f"model history ({len(rows)} archived, newest {s.model_history} kept)",
    )
    for row in rows:
        mark = " ←" if row["in_use"] else ""
        table.add_row(
            f"{row['checkpoint']}{mark}",
            row["version"],
            f"{row['labels']:,}",
            f"{row['positives']:,}",
            cell(row["roc_auc"]),
            cell(row["average_precision"]),
            row["updated_at"] or "—",
            row["change"],
        )
    console.print(table)
    if seen.switch and seen.switch["rules_only"]:
        err.print("kill switch on: the policy rules decide alone (`shinsa model on` undoes it)")


def ask_learner(
    s: Settings,
    key: str,
    fields: dict[str, bytes],
    before: dict[str, Any],
    counter: str,
    wait: float,
) -> dict[str, Any]:
    """Leave a request (who and when, plus `fields`) for the learner in Redis and wait for the
    checkpoint that answers it: the first whose `counter` (promotions, rollbacks) is above
    `before`'s. The request expires unanswered, so a later learner never acts on a stale one."""
    import redis

    from streams.clients import end_offsets

    fields = {"by": operator().encode(), "at": str(time.time()).encode(), **fields}
    start = end_offsets(s, s.topic("models"))  # the answer comes after this: read only that
    client = redis.Redis.from_url(s.redis_url)
    try:
        with client.pipeline(transaction=True) as pipe:
            pipe.delete(key).hset(key, mapping=fields).expire(key, max(1, round(wait)))
            pipe.execute()
    except redis.RedisError as exc:
        raise UserError(f"cannot reach Redis at {s.redis_url}: {exc}") from None
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        time.sleep(1.0)
        after = read_models(s, start).newest
        if after and after.get(counter, 0) > before.get(counter, 0):
            return after
    client.delete(key)
    raise UserError(
        f"no learner answered in {wait:g} s, nothing changed: is a worker running "
        "(`shinsa worker`)? Try again with a longer --wait if the learner is busy"
    )


@model_app.command("promote")
def model_promote(wait: WaitOption = 30.0) -> None:
    """Let the challenger decide: the learner swaps it with the model (which stays on as the
    challenger, so promoting again undoes it), records the promotion and publishes it."""
    from agents.state import Keys

    s = settings_for_cli()
    seen = read_models(s)
    before = seen.newest
    if before is None:
        raise no_model_yet(s, seen.rejected)
    if not before.get("challenger"):
        raise UserError(
            f"model {before['version']} has no challenger to promote: set "
            "SHINSA_MODEL_CHALLENGER (logreg, tree or forest) on the workers and let it learn"
        )
    after = ask_learner(s, Keys(s.identity_namespace).promote(), {}, before, "promotions", wait)
    console.print(
        f"promoted: {after['kind']} decides from {after['version']} on "
        f"({before['kind']} is the challenger now; `shinsa model promote` undoes it)"
    )


@model_app.command("rollback")
def model_rollback(
    version: Annotated[
        str, typer.Argument(help="The archived checkpoint to return to: 12 or logreg-v12.")
    ],
    credit: Annotated[
        bool, typer.Option("--credit", help="Return the credit model to that checkpoint too.")
    ] = False,
    wait: WaitOption = 30.0,
) -> None:
    """Return to an archived checkpoint's fraud model (and its challenger; with --credit, its
    credit model too). The learner publishes it as a new version and learns on from the next
    label; the labels learned since that checkpoint are not learned again."""
    from agents.state import Keys

    s = settings_for_cli()
    target = checkpoint_number(version)
    seen = read_models(s)
    if seen.newest is None:
        raise no_model_yet(s, seen.rejected)
    if target not in seen.archive:
        kept = sorted(seen.archive)
        span = f"{kept[0]}–{kept[-1]}" if kept else "none"
        raise UserError(
            f"checkpoint {target} is not in the archive (kept: {span}); "
            "`shinsa model history` lists them"
        )
    if target == seen.newest["checkpoint"]:
        raise UserError(f"checkpoint {target} is the model in use: nothing to roll back")
    header, blob = seen.archive[target]
    before = seen.newest
    request = {"checkpoint": blob, "credit": b"1" if credit else b"0"}
    key = Keys(s.identity_namespace).rollback()
    after = ask_learner(s, key, request, before, "rollbacks", wait)
    console.print(
        f"rolled back: {after['version']} decides with the model of {header['version']} "
        f"({header['labels']:,} labels; {before['version']} had {before['labels']:,})"
        f"{', and its credit model' if credit else ''}; it learns on from the next label"
    )


def set_switch(rules_only: bool, reason: str) -> dict[str, Any]:
    """Publish the kill switch's state on the models topic and wait until it is written."""
    from agents.model import SWITCH_KEY, encode_switch
    from streams.clients import make_producer

    s = settings_for_cli()
    state = {"rules_only": rules_only, "by": operator(), "at": time.time(), "reason": reason}
    blob = encode_switch(
        rules_only, state["by"], state["at"], reason, s.hash_key.get_secret_value().encode()
    )
    failures: list[str] = []
    producer = make_producer(s)
    producer.produce(
        s.topic("models"),
        key=SWITCH_KEY,
        value=blob,
        on_delivery=lambda e, _m: e is not None and failures.append(str(e)),
    )
    if producer.flush(30) or failures:
        reason_text = failures[0] if failures else "timed out"
        raise UserError(
            f"the switch was not written to {s.topic('models')} ({reason_text}): is the stack "
            "up (`shinsa stack status`)?"
        )
    return state


@model_app.command("off")
def model_off(
    reason: Annotated[str, typer.Option(help="Why, for the record and the on-call.")] = "",
) -> None:
    """Kill switch: every worker decides with the policy rules alone (reason
    MODEL_SWITCHED_OFF) within moments, until `shinsa model on`. The learner keeps learning."""
    set_switch(True, reason)
    console.print(
        "kill switch on: the workers decide with the policy rules alone from now on "
        "(`shinsa model on` lets the models decide again)"
    )


@model_app.command("on")
def model_on() -> None:
    """Let the models decide again (undoes `shinsa model off`)."""
    set_switch(False, "")
    console.print("kill switch off: the warm models decide again")
