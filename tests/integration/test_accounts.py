"""agents/state.py accounts on the real Redis: the exposure totals the gauges report follow
every account change (settlements and the hot path's approvals, redeliveries included), and a
recount over the accounts themselves agrees with them; outstanding by credit band and the
repayment history's sums (hours to pay, yen repaid) follow too."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis import asyncio as aioredis

from agents.state import AccountStore, Changes, HotPathState, Snapshot, account_from_hash

pytestmark = pytest.mark.integration
BANDS = ("A", "E", "COLD")


def snapshot(identity_id: str, amount: int) -> Snapshot:
    return Snapshot({}, 0.1, "logreg-v0", 0, identity_id, amount, "DEFERRED", "APPROVE")


def test_totals_follow_every_account_change_and_agree_with_a_recount(local_stack):
    namespace = f"it-acct-{uuid.uuid4().hex[:8]}"
    other = f"it-acct-{uuid.uuid4().hex[:8]}"

    async def run() -> dict[str, object]:
        client = aioredis.Redis.from_url(local_stack.redis_url)
        try:
            store = AccountStore(client, namespace)
            state = HotPathState(client, namespace, b"secret", 60)
            seen: dict[str, object] = {"fresh": await store.totals()}
            # the hot path approves 250 orders (one redelivered: counted once), in bands ...
            approved = [(f"i{n}", "approved", f"o{n}", 1000 + n, BANDS[n % 3]) for n in range(250)]
            snaps = [(f"o{n}", snapshot(f"i{n}", 1000 + n)) for n in range(250)]
            decided = [(f"o{n}", b"d", b"t") for n in range(250)]
            await state.save(Changes([], approved, snaps, decided))
            await state.save(Changes([], approved[:1], snaps[:1], decided[:1]))
            seen["approved"] = await store.totals()
            seen["approved bands"] = await store.band_totals()
            # ... then settlements: 25 repaid, 10 unpaid (one twice), one unpaid then repaid
            events = [(f"i{n}", "repaid", f"o{n}", 0, 48) for n in range(0, 250, 10)]
            events += [(f"i{n}", "unpaid", f"o{n}", 0, 0) for n in range(1, 250, 25)]
            events += [("i1", "unpaid", "o1", 0, 0), ("i3", "unpaid", "o3", 0, 0)]
            events += [("i3", "repaid", "o3", 0, 900)]
            events += [("i999", "repaid", "never-opened", 0, 5)]  # a settlement of nothing open
            await store.apply(events)
            await AccountStore(client, other).apply([("i1", "approved", "x", 99_999, 0)])
            seen["settled"] = await store.totals()
            seen["settled bands"] = await store.band_totals()
            seen["i3"] = account_from_hash(await client.hgetall(f"{namespace}:acct:i3"))
            seen["i10"] = account_from_hash(await client.hgetall(f"{namespace}:acct:i10"))
            seen["recount"] = await store.recount(step=7)
            seen["after recount"] = await store.totals()
            await client.delete(*await client.keys(f"{namespace}:*"))
            await client.delete(*await client.keys(f"{other}:*"))
            return seen
        finally:
            await client.aclose()

    seen = asyncio.run(run())
    opened = sum(1000 + n for n in range(250))
    repaid = sum(1000 + n for n in range(0, 250, 10)) + 1003
    assert seen["fresh"] == (0, 0)
    assert seen["approved"] == (opened, 0)
    assert seen["settled"] == (opened - repaid, 10)
    assert seen["recount"] == seen["after recount"] == seen["settled"]
    closed = {*range(0, 250, 10), 3}
    assert seen["approved bands"] == {
        band: sum(1000 + n for n in range(250) if BANDS[n % 3] == band) for band in BANDS
    }
    assert seen["settled bands"] == {
        band: sum(1000 + n for n in range(250) if BANDS[n % 3] == band and n not in closed)
        for band in BANDS
    }
    assert seen["i3"]["history"] == {  # reported unpaid, then repaid 900 hours after its order
        "on_time": 0,
        "late": 1,
        "unpaid": 1,
        "pay_hours": 900,
        "repaid_yen": 1003,
    }
    assert seen["i10"]["history"]["on_time"] == 1
    assert seen["i10"]["history"]["pay_hours"] == 48
    assert seen["i10"]["history"]["repaid_yen"] == 1010


def test_accounts_written_before_totals_were_kept_are_recounted_once(local_stack):
    namespace = f"it-acct-{uuid.uuid4().hex[:8]}"

    async def run() -> tuple[tuple[int, int], tuple[int, int]]:
        client = aioredis.Redis.from_url(local_stack.redis_url)
        try:
            # the layout an earlier version wrote: accounts, no totals
            await client.hset(f"{namespace}:acct:i1", mapping={"o:a": 5000, "u:a": 1})
            await client.hset(f"{namespace}:acct:i2", mapping={"o:b": 7000})
            store = AccountStore(client, namespace)
            first = await store.totals()
            await store.apply([("i2", "repaid", "b", 0, 24)])
            return first, await store.totals()
        finally:
            await client.delete(*await client.keys(f"{namespace}:*"))
            await client.aclose()

    first, after = asyncio.run(run())
    assert first == (12_000, 1)
    assert after == (5_000, 1)
