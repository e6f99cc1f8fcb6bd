"""The お月玉 campaign on the real broker and Redis: a screening worker (it resolves the members'
KYC to identities) and a campaign worker in its own role and consumer group, fed logins,
decisions and outcomes. The edges: 499 / 500 yen, the 4th purchase of a day, 23:59 / 00:00 JST,
month end, a purchase before the month's first login, a redelivered purchase, a revoked one
(its daily slot not refilled), a cancelled one, a replay under another identity; the draw is
reproducible and `verify` catches a changed ledger."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from agents.draw import DrawError, commit_month, draw, draw_month, reduce_ledger, verify_month
from agents.draw import tickets_by_person as live_tickets
from tests.conftest import run_cli
from tests.integration.conftest import Worker, collect, produce
from tests.integration.test_wallet import Wallet, wait_for_keys

pytestmark = pytest.mark.integration

CAMPAIGN = """\
id: otsukidama
name: お月玉
months: [2026-10]
min_amount_yen: 500
methods: [CARD]
daily_cap: 3
winners_per_month: 1
prize_yen: 10000
"""


def at(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


class Feed:
    def __init__(self, registry, wallet: Wallet) -> None:
        self.registry, self.wallet = registry, wallet

    def purchase(self, pid: str, identity: str, when: str, amount: int = 1000, **kw: Any):
        datum = {
            "order_id": pid,
            "merchant_id": "m0001",
            "identity_id": identity,
            "decision": "APPROVE",
            "score": 0.1,
            "reasons": ["SCORE_RULES_ONLY"],
            "policy_version": "default-00000000",
            "amount": amount,
            "event_time": at(when),
            "decided_at": at(when),
            "latency_event_ms": 1.0,
            "latency_ingest_ms": 1.0,
            "payment_method": "CARD",
        } | kw
        value = self.registry.encode("Decision", self.registry.from_json("Decision", datum))
        return ("decisions", pid.encode(), value)

    def login(self, login_id: str, account: str, when: str, ok: bool = True):
        datum = {
            "login_id": login_id,
            "account_id": account,
            "event_time": at(when),
            "method": "PASSWORD",
            "success": ok,
        }
        value = self.registry.encode("Login", self.registry.from_json("Login", datum))
        return ("logins", account.encode(), value)

    def outcome(self, pid: str, kind: str = "CHARGEBACK"):
        datum = {
            "order_id": pid,
            "event_time": at("2026-11-10T10:00:00+09:00"),
            "kind": kind,
            "source": "ISSUER" if kind == "CHARGEBACK" else "MERCHANT",
        }
        value = self.registry.encode("Outcome", self.registry.from_json("Outcome", datum))
        return ("outcomes", pid.encode(), value)


def ledger_now(env, registry) -> list[dict[str, Any]]:
    from agents.draw import read_ledger

    return read_ledger(env, registry)


def wait_ledger(env, registry, test, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        table = reduce_ledger(ledger_now(env, registry), "otsukidama", "2026-10")
        if test(table):
            return table
        assert time.monotonic() < deadline, f"ledger never got there: {table}"
        time.sleep(0.5)


def stats(env) -> dict[str, int]:
    raw = redis.Redis.from_url(env.redis_url).hgetall(
        f"{env.identity_namespace}:camp:otsukidama:2026-10:stats"
    )
    return {k.decode(): int(v) for k, v in raw.items()}


def test_tickets_at_the_edges_and_an_auditable_draw(env, worker, registry, tmp_path: Path):
    campaign_file = tmp_path / "campaign.yaml"
    campaign_file.write_text(CAMPAIGN, encoding="utf-8")
    result = run_cli(env, "campaign", "apply", str(campaign_file))
    assert result.returncode == 0, result.stderr
    worker.start()  # the screening worker: it resolves the members' KYC to identities
    campaign = Worker(env, tmp_path / "campaign.log", role="campaign").start()
    try:
        now = datetime.now(UTC)
        w = Wallet(registry, now)
        produce(env, w.opened("acc-a", 301, kyc="FULL") + w.opened("acc-b", 302, kyc="FULL"))
        wait_for_keys(env, ["wa:acc-a", "wa:acc-b"])
        client = redis.Redis.from_url(env.redis_url)
        a, b = (
            client.hget(f"{env.identity_namespace}:wa:{x}", "identity").decode()
            for x in ("acc-a", "acc-b")
        )
        f = Feed(registry, w)
        phase1 = [
            f.login("la-1", "acc-a", "2026-10-01T09:00:00+09:00"),
            f.login("la-0", "acc-a", "2026-10-01T08:00:00+09:00", ok=False),
            f.purchase("a-499", a, "2026-10-02T12:00:00+09:00", amount=499),
            f.purchase("a-500", a, "2026-10-02T12:00:00+09:00", amount=500),
            f.purchase("a-500", a, "2026-10-02T12:00:00+09:00", amount=500),  # sent twice
            *(f.purchase(f"a-3{n}", a, f"2026-10-03T1{n}:00:00+09:00") for n in range(1, 5)),
            f.purchase("a-2359", a, "2026-10-04T23:59:59+09:00"),
            f.purchase("a-0000", a, "2026-10-05T00:00:00+09:00"),
            f.purchase("a-eom", a, "2026-10-31T23:59:59+09:00"),
            f.purchase("a-nov", a, "2026-11-01T00:00:00+09:00"),  # November: not the campaign's
            f.purchase("a-deferred", a, "2026-10-06T12:00:00+09:00", payment_method="DEFERRED"),
            f.purchase("a-declined", a, "2026-10-06T12:00:00+09:00", decision="DECLINE"),
            f.purchase("b-1", b, "2026-10-05T12:00:00+09:00"),  # before B's first login
        ]
        produce(env, phase1)
        table = wait_ledger(env, registry, lambda t: len(t) >= 7)
        time.sleep(2)  # anything else it would write
        table = reduce_ledger(ledger_now(env, registry), "otsukidama", "2026-10")
        days = Counter(e.day for e in table.values() if e.identity_id == a)
        assert days == {
            "2026-10-02": 1,  # 500 earns, 499 does not; a-500 twice, one ticket
            "2026-10-03": 3,  # the 4th purchase of the day is over the cap
            "2026-10-04": 1,  # 23:59:59 JST
            "2026-10-05": 1,  # 00:00 JST: the next day
            "2026-10-31": 1,  # month end
        }, table
        assert "b-1" not in table  # B has not logged in this month yet
        assert stats(env)["eligible"] == 1

        # B's first login of the month: the purchase made before it earns now, on its own day
        issued_3 = sorted(p for p, e in table.items() if e.day == "2026-10-03")
        produce(
            env,
            [
                f.login("lb-1", "acc-b", "2026-10-20T09:00:00+09:00"),
                f.outcome(issued_3[0]),  # a ticket revoked: its slot is not refilled
                f.purchase("a-35", a, "2026-10-03T18:00:00+09:00"),
                f.outcome("a-2359", "CANCELLED"),  # a cancelled purchase loses its ticket too
                # the same purchase replayed under another identity (as after a merge): still
                # the one ticket it had, never a second one
                f.purchase("a-0000", b, "2026-10-05T00:00:00+09:00"),
            ],
        )
        table = wait_ledger(
            env,
            registry,
            lambda t: (
                "b-1" in t
                and t[issued_3[0]].action == "REVOKED"
                and t["a-2359"].action == "REVOKED"
            ),
        )
        time.sleep(2)
        table = reduce_ledger(ledger_now(env, registry), "otsukidama", "2026-10")
        assert table["b-1"].day == "2026-10-05" and table["b-1"].action == "ISSUED"
        assert "a-35" not in table  # the revoked ticket's slot stays used
        assert table["a-0000"].identity_id == a
        assert live_tickets(table) == {a: 5, b: 1}
        s = stats(env)
        assert (s["issued"], s["revoked"], s["participants"], s["eligible"]) == (8, 2, 2, 2)
        metrics = campaign.metrics()  # a redelivery re-sends a record: at least these
        assert metrics['shinsa_campaign_tickets_total{action="ISSUED"}'] >= 8
        assert metrics['shinsa_campaign_tickets_total{action="REVOKED"}'] >= 2
        assert campaign.errors() == [] and worker.errors() == []
    finally:
        campaign.stop()

    # the draw: committed before October closed, drawn after, verified, then a forged record
    record = commit_month(env, "otsukidama", "2026-10", datetime(2026, 10, 20, tzinfo=UTC))
    with pytest.raises(DrawError, match="not closed"):
        draw_month(
            env, registry, "otsukidama", "2026-10", 1, 10_000, datetime(2026, 10, 31, tzinfo=UTC)
        )
    result = draw_month(
        env, registry, "otsukidama", "2026-10", 1, 10_000, datetime(2026, 11, 2, tzinfo=UTC)
    )
    assert result["commitment"] == record["commitment"] and result["participants"] == 2
    seed = bytes.fromhex(result["seed"])
    assert result["chosen"] == draw({a: 5, b: 1}, seed, 1)  # anyone can recompute it
    checks = verify_month(env, registry, "otsukidama", "2026-10")
    assert all(ok for _, ok, _ in checks), checks
    ticket = {
        "campaign_id": "otsukidama",
        "month": "2026-10",
        "purchase_id": "forged",
        "identity_id": b,
        "day": "2026-10-09",
        "action": "ISSUED",
        "at": int(time.time() * 1000),
    }
    produce(
        env,
        [
            (
                "campaign-tickets",
                b"forged",
                registry.encode("CampaignTicket", registry.from_json("CampaignTicket", ticket)),
            )
        ],
    )
    checks = dict(
        (name, ok) for name, ok, _ in verify_month(env, registry, "otsukidama", "2026-10")
    )
    assert checks["seed matches the commitment"] and not checks["ledger matches the drawn one"]
    result = run_cli(env, "campaign", "verify", "--month", "2026-10")
    assert result.returncode == 1 and "MISMATCH" in result.stdout + result.stderr
    assert collect(env, "campaign-winners", 1)
