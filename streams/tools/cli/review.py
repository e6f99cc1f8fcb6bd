"""`shinsa review` and `shinsa explain`: the review queue, reviewers' verdicts, and why an
order was decided as it was."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated

import typer

from streams.tools.cli.common import console, err, settings

review_app = typer.Typer(
    help="The review queue: orders decided REVIEW and reviewers' verdicts.", no_args_is_help=True
)


class VerdictChoice(StrEnum):
    fraud = "fraud"
    legit = "legit"


@review_app.command("list")
def review_list(
    limit: Annotated[int, typer.Option(help="Show the oldest N.", min=1)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines for scripts.")] = False,
) -> None:
    """Orders decided REVIEW without a reviewer's verdict, oldest first; the buyer masked."""
    from streams.tools.review import review_queue, review_table, row_json

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
    from streams.tools.review import resolve

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


def explain(
    order: Annotated[str, typer.Argument(help="The order id.")],
    as_json: Annotated[bool, typer.Option("--json", help="The whole trace as JSON.")] = False,
) -> None:
    """Why an order was decided as it was: its decision trace (rules, lists, model, policy)."""
    from streams.codec import datum_to_json
    from streams.tools.explain import find_trace, trace_renderables

    trace = find_trace(settings(), order)
    if as_json:
        sys.stdout.write(datum_to_json(trace).decode() + "\n")
        return
    for part in trace_renderables(trace):
        console.print(part)
