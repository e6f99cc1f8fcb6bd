"""`shinsa eval`: the backtest (streams/tools/backtest.py does the work)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from streams.tools.cli.common import err, progress, settings


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

    from streams.tools.backtest import Columns, EvalOptions, report_table, run_eval

    columns = Columns(label, time_column, amount, tuple(entity or ()), tuple(ignore or ()), pattern)
    options = EvalOptions(delay, estimator, review_rate, columns, payments, target)
    with progress() as bar:
        report = run_eval(
            file, options, settings(), progress=bar, say=lambda note: err.print(escape(note))
        )
    err.print(report_table(report))
    sys.stdout.write(orjson.dumps(report).decode() + "\n")
