"""The お月玉 campaign, the pure part: the campaign file (every problem with its line), JST
days and months at their edges, which decided purchases earn, the engine's script arguments,
and the draw: reproducible from the seed, one win per person, weighted by tickets, tamper-evident
ledger digests."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from agents.campaign import (
    Campaign,
    CampaignError,
    Seen,
    jst_day_text,
    jst_month,
    load_campaign_yaml,
    month_closes,
    previous_month,
    script_args,
    to_ms,
)
from agents.draw import (
    Entry,
    commitment,
    draw,
    ledger_digest,
    reduce_ledger,
    tickets_by_person,
)

GOOD = """\
id: otsukidama
name: お月玉
months: [2026-11, 2026-12]
min_amount_yen: 500
methods: [CARD]
daily_cap: 3
winners_per_month: 10000
prize_yen: 10000
"""


def test_a_campaign_file_parses_with_the_seed_s_rules():
    campaign = load_campaign_yaml(GOOD)
    assert campaign.months == ("2026-11", "2026-12")
    assert (campaign.min_amount_yen, campaign.daily_cap, campaign.winners_per_month) == (
        500,
        3,
        10_000,
    )


def test_a_bad_campaign_file_lists_every_problem_with_its_line():
    bad = GOOD.replace("months: [2026-11, 2026-12]", "months: [2026-13]")
    bad = bad.replace("daily_cap: 3", "daily_cap: 0").replace("[CARD]", "[CASH]")
    bad += "prize: 5\n"
    with pytest.raises(CampaignError) as caught:
        load_campaign_yaml(bad, "c.yaml")
    lines = str(caught.value).splitlines()
    assert any(x.startswith("c.yaml:3: months:") and "2026-13" in x for x in lines), lines
    assert any(x.startswith("c.yaml:6: daily_cap:") for x in lines), lines
    assert any(x.startswith("c.yaml:5: methods:") and "CASH" in x for x in lines), lines
    assert any(x.startswith("c.yaml:9: prize: unknown field") for x in lines), lines
    with pytest.raises(CampaignError, match="not valid YAML"):
        load_campaign_yaml("id: [", "c.yaml")


def ms(text: str) -> int:
    return to_ms(datetime.fromisoformat(text))


def test_days_and_months_are_japan_s():
    assert jst_day_text(ms("2026-11-30T23:59:59+09:00")) == "2026-11-30"
    assert jst_day_text(ms("2026-12-01T00:00:00+09:00")) == "2026-12-01"
    assert jst_month(ms("2026-11-30T14:59:59+00:00")) == "2026-11"  # 23:59:59 JST
    assert jst_month(ms("2026-11-30T15:00:00+00:00")) == "2026-12"  # 00:00 JST
    assert month_closes("2026-11") == datetime(2026, 11, 30, 15, tzinfo=UTC)
    assert month_closes("2026-12") == datetime(2026, 12, 31, 15, tzinfo=UTC)
    assert previous_month("2026-01") == "2025-12" and previous_month("2026-11") == "2026-10"


def decision(amount: int = 500, **kw: object) -> dict[str, object]:
    base = {
        "decision": "APPROVE",
        "amount": amount,
        "payment_method": "CARD",
        "identity_id": "i1",
        "subject": "ORDER",
        "payment_kind": None,
    }
    return base | kw


def test_which_purchases_earn():
    campaign = load_campaign_yaml(GOOD)
    assert campaign.earns(decision(500)) and not campaign.earns(decision(499))
    assert not campaign.earns(decision(decision="REVIEW"))
    assert not campaign.earns(decision(payment_method="DEFERRED"))
    assert campaign.earns(decision(subject="PAYMENT", payment_kind="PAY"))
    assert not campaign.earns(decision(subject="PAYMENT", payment_kind="TRANSFER"))
    assert not campaign.earns(decision(identity_id=None))


def test_the_engine_gets_purchases_and_logins_of_campaign_months_only():
    campaign = load_campaign_yaml(GOOD)
    other = Campaign(id="later", months=("2027-01",))
    november = ms("2026-11-10T12:00:00+09:00")
    october = ms("2026-10-10T12:00:00+09:00")
    events = [
        (Seen("P", november, "o-1", "i1"), decision()),
        (Seen("P", october, "o-2", "i1"), decision()),  # before the campaign
        (Seen("P", november, "o-3", "i1"), decision(499)),
        (Seen("L", november, "login-1", "i1"), None),
        (Seen("L", november, "login-2", ""), None),  # an account without KYC: nobody
        (Seen("R", october, "o-9"), None),
    ]
    args = script_args(events, [campaign, other])
    assert args == [
        *("P", "otsukidama", "2026-11", "i1", "o-1", "2026-11-10", 3),
        *("L", "otsukidama", "2026-11", "i1", "login-1", "", 3),
        *("R", "", "", "", "o-9", "", ""),
    ]


def ledger(*rows: tuple[str, str, str]) -> list[dict[str, str]]:
    return [
        {
            "campaign_id": "c",
            "month": "2026-11",
            "purchase_id": p,
            "identity_id": who,
            "day": "2026-11-01",
            "action": action,
        }
        for p, who, action in rows
    ]


def test_the_ledger_reads_as_a_table_of_each_purchase_s_newest_record():
    table = reduce_ledger(
        ledger(("o1", "a", "ISSUED"), ("o2", "a", "ISSUED"), ("o1", "a", "REVOKED"))
        + ledger(("o1", "a", "ISSUED")),  # a redelivery re-sends the state it had then
        "c",
        "2026-11",
    )
    assert table["o1"] == Entry("a", "2026-11-01", "ISSUED")
    assert tickets_by_person(table) == {"a": 2}
    revoked = reduce_ledger(ledger(("o1", "a", "ISSUED"), ("o1", "a", "REVOKED")), "c", "2026-11")
    assert tickets_by_person(revoked) == {}
    assert ledger_digest(table) != ledger_digest(revoked)


def test_the_draw_is_reproducible_and_one_win_per_person():
    tickets = {f"i{n}": 1 + n % 3 for n in range(1000)}
    seed = b"s" * 32
    first = draw(tickets, seed, 100)
    assert first == draw(dict(reversed(list(tickets.items()))), seed, 100)  # order-free
    assert len({p for p, _ in first}) == 100
    assert draw(tickets, b"t" * 32, 100) != first
    assert all(tickets[p] == n for p, n in first)
    assert len(draw(tickets, seed, 5000)) == 1000  # fewer people than prizes: all win
    assert draw({}, seed, 10) == []
    assert len(commitment(seed)) == 64


def test_more_tickets_win_more_often():
    tickets = {"heavy": 3} | {f"i{n}": 1 for n in range(99)}
    wins = Counter()
    for s in range(600):
        for person, _ in draw(tickets, s.to_bytes(32, "big"), 10):
            wins[person] += 1
    light = sum(wins[f"i{n}"] for n in range(99)) / 99
    assert wins["heavy"] > 2 * light  # 3 tickets: about 3× the chance of one
