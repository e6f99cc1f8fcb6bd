"""Alerts reach a person: a real Alertmanager, configured from the repository's template as
`shinsa monitoring render` renders it, delivers a firing page to the on-call receiver and a
ticket to the working-hours receiver (two local webhook receivers this test starts), each
message with the alert's runbook from rules/alerts.yml, then their resolution.

Only the template's grouping waits (30 s, 5 min) are shortened, so the test takes seconds.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.tools import stack
from tests.integration.conftest import running_alertmanager

pytestmark = pytest.mark.integration


class Receiver:
    """A local incoming webhook: every JSON body posted to it, in order."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        received = self.messages

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def texts(self) -> str:
        return "\n".join(
            f"{m.get('text', '')} {a.get('title', '')} {a.get('text', '')}"
            for m in self.messages
            for a in m.get("attachments", [{}])
        )


@pytest.fixture
def receivers() -> Iterator[tuple[Receiver, Receiver]]:
    pages, tickets = Receiver(), Receiver()
    yield pages, tickets
    pages.server.shutdown()
    tickets.server.shutdown()


def alert_rule(name: str) -> dict[str, Any]:
    rules = yaml.safe_load((stack.RULES_DIR / "alerts.yml").read_text())
    return next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == name)


def posted(name: str, ends: datetime | None = None) -> dict[str, Any]:
    rule = alert_rule(name)
    alert = {
        "labels": {"alertname": name, **rule["labels"]},
        "annotations": {k: str(v) for k, v in rule["annotations"].items()},
        "startsAt": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
    }
    if ends is not None:
        alert["endsAt"] = ends.isoformat()
    return alert


def send(address: str, alerts: list[dict[str, Any]]) -> None:
    request = urllib.request.Request(
        f"http://{address}/api/v2/alerts",
        data=json.dumps(alerts).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    assert urllib.request.urlopen(request, timeout=5).status == 200


def wait(test: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not test():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_a_page_and_a_ticket_reach_their_own_receivers_with_their_runbooks(
    receivers: tuple[Receiver, Receiver], tmp_path: Path
):
    pages, tickets = receivers
    rendered = stack.render_alertmanager_config(
        stack.ALERTMANAGER_TEMPLATE.read_text(), pages.url, tickets.url
    )
    quick = rendered.replace("group_wait: 30s", "group_wait: 1s")
    quick = quick.replace("group_interval: 5m", "group_interval: 1s")
    assert quick != rendered
    with running_alertmanager(quick, tmp_path) as address:
        page, ticket = "ShinsaWorkerDown", "ShinsaCampaignTicketsStopped"
        assert alert_rule(page)["labels"]["severity"] == "page"
        assert alert_rule(ticket)["labels"]["severity"] == "ticket"
        send(address, [posted(page), posted(ticket)])
        wait(lambda: page in pages.texts() and ticket in tickets.texts(), "both delivered")
        page_runbook = " ".join(alert_rule(page)["annotations"]["runbook"].split()[:6])
        ticket_runbook = " ".join(alert_rule(ticket)["annotations"]["runbook"].split()[:6])
        assert "[PAGE]" in pages.texts() and page_runbook in " ".join(pages.texts().split())
        assert "[TICKET]" in tickets.texts()
        assert ticket_runbook in " ".join(tickets.texts().split())
        assert ticket not in pages.texts() and page not in tickets.texts()  # each its own way

        send(address, [posted(page, ends=datetime.now(UTC))])  # the worker is back
        wait(lambda: "[RESOLVED]" in pages.texts(), "the page's resolution delivered")
        assert "[RESOLVED]" not in tickets.texts()
