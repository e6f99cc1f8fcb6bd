"""`shinsa`: the command line of the local stack, the worker and the clients.

One module per command group (stack, run, events, identity, model, policy, review, evaluate,
monitoring, segment, campaign); this root only puts them together. Errors a user can fix are
printed as one message saying what to do, without a traceback. Heavy imports (Faust, Kafka
clients) happen inside the commands that need them.
"""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from streams.errors import UserError
from streams.tools.cli import evaluate, events, monitoring, review, run
from streams.tools.cli.campaign import campaign_app
from streams.tools.cli.common import err
from streams.tools.cli.identity import identity_app
from streams.tools.cli.model import model_app
from streams.tools.cli.policy import policy_app
from streams.tools.cli.segment import segment_app
from streams.tools.cli.stack import stack_app

app = typer.Typer(
    help="Shinsa: real-time transaction screening on Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# in the order `shinsa --help` lists them
app.command()(run.worker)
app.command()(events.produce)
app.command()(events.simulate)
app.command()(events.decisions)
app.command()(events.dlq)
app.command()(review.explain)
app.command("eval")(evaluate.eval_history)
app.command()(monitoring.kpi)
app.command()(run.demo)
app.add_typer(stack_app, name="stack")
app.add_typer(identity_app, name="identity")
app.add_typer(model_app, name="model")
app.add_typer(policy_app, name="policy")
app.add_typer(monitoring.monitoring_app, name="monitoring")
app.add_typer(review.review_app, name="review")
app.add_typer(segment_app, name="segment")
app.add_typer(campaign_app, name="campaign")


def main() -> None:
    from confluent_kafka import KafkaException
    from redis.exceptions import RedisError

    from streams.codec import CodecError
    from streams.tools.stack import StackError

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
