"""Merchant audience segments on the real broker and Redis, through a real worker and its HTTP
API: approved orders become a merchant's customers; a count never shows fewer than 50 and is
rounded; a differencing attack is refused; a merge does not count a person twice; a merchant
never sees another's customers; a bad query is refused with what is wrong; refusals counted."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from agents.segments import AGE_BANDS, SegmentStore, parse_rows
from agents.state import redis_client
from streams.clients import prepare
from tests.conftest import run_cli
from tests.integration.conftest import collect, produce, simulated

pytestmark = pytest.mark.integration


def buyer(n: int, prefecture: str, gender: str | None, born: str) -> dict[str, Any]:
    postal = {"東京都": "100-0001", "大阪府": "530-0001"}[prefecture]
    person = {
        "name": f"佐藤 花子{n:03d}",
        "phone": f"090-{3000 + n:04d}-{4000 + n:04d}",
        "email": f"seg{n}@example.jp",
        "birth_date": born,
        "address": {"postal_code": postal, "prefecture": prefecture, "street": f"本町1-{n}"},
    }
    return person | ({"gender": gender} if gender else {})


def send(registry, topic: str, value: dict[str, Any]) -> tuple:
    p = prepare(registry, topic, value)
    return (p.topic, p.key, p.value)


def order(order_id: str, merchant_id: str, person: dict[str, Any]) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "merchant_id": merchant_id,
        "event_time": datetime.now(UTC).isoformat(),
        "amount": 3000,
        "payment_method": "CARD",
        "buyer": person,
    }


def api(worker, path: str, key: str | None, body: Any) -> tuple[int, dict[str, Any]]:
    import re

    found = re.search(r"API on (http://\S+)/segments", worker.text())
    assert found, "the worker did not say where its API is"
    request = urllib.request.Request(
        found.group(1) + path, data=json.dumps(body).encode(), method="POST"
    )
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def issue_key(env, merchant_id: str) -> str:
    """Through the CLI, as an operator does: the key is the last line it prints."""
    result = run_cli(env, "segment", "key", merchant_id)
    assert result.returncode == 0, result.stderr
    key = next(line for line in result.stdout.splitlines() if line.startswith("shk_"))
    stored = redis.Redis.from_url(env.redis_url).hgetall(f"{env.identity_namespace}:seg:keys")
    assert key.encode() not in stored and all(key.encode() not in v for v in stored.values())
    return key


def rows(env, merchant_id: str):
    async def read():
        client = redis_client(env)
        try:
            store = SegmentStore(client, env.identity_namespace)
            return await store.rows(merchant_id), await store.ids(merchant_id)
        finally:
            await client.aclose()

    return asyncio.run(read())


def decided(env, registry, worker, want: int) -> dict[str, str]:
    seen = collect(env, "decisions", want, worker=worker)
    return {
        d["order_id"]: d["decision"] for d in (registry.decode("Decision", m.value()) for m in seen)
    }


def wait_rows(env, merchant_id: str, live: int, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        found, ids = rows(env, merchant_id)
        if int((found["live"] == 1).sum()) == live:
            return found, ids
        assert time.monotonic() < deadline, f"{merchant_id}: {(found['live'] == 1).sum()} rows"
        time.sleep(0.3)


def test_segments_hold_the_minimum_and_refuse_what_would_single_people_out(env, worker, registry):
    merchants = [e for e in simulated(1) if e.topic == "merchants"]
    shop, other, round_shop = (m.value["merchant_id"] for m in merchants[:3])
    sent = [send(registry, e.topic, e.value) for e in merchants]
    worker.start()
    key, other_key = issue_key(env, shop), issue_key(env, other)
    born = (datetime.now(UTC) - timedelta(days=365 * 32 + 30)).date().isoformat()  # 32: 30-34
    people = [
        buyer(n, "東京都" if n < 52 else "大阪府", "FEMALE" if n % 2 else None, born)
        for n in range(57)
    ]
    orders = [order(f"seg-{n}", shop, p) for n, p in enumerate(people[:49])]
    produce(env, sent + [send(registry, "orders", o) for o in orders])
    verdicts = decided(env, registry, worker, 49)
    assert set(verdicts.values()) == {"APPROVE"}, verdicts
    wait_rows(env, shop, 49)

    # 49 people: never the number, never an export
    status, answer = api(worker, "/segments/count", key, {})
    assert (status, answer["count"], answer["shown"]) == (200, None, "fewer than 50")
    status, answer = api(worker, "/segments/export", key, {})
    assert (status, answer["reason"]) == (422, "below_minimum")

    # the 50th: shown, 50; the attributes came from the orders (age band, gender, prefecture)
    produce(env, [send(registry, "orders", order("seg-49", shop, people[49]))])
    wait_rows(env, shop, 50)
    status, answer = api(worker, "/segments/count", key, {"age_bands": ["30-34"]})
    assert (status, answer["count"]) == (200, 50), answer
    found, ids = rows(env, shop)
    assert set(found["age"]) == {5} and set(found["gender"]) == {0, 1}  # 30-34; unknown, female
    assert set(found["prefecture"]) == {13}  # 東京都: JIS 13
    assert all(ids) and not any("佐藤" in i or "@" in i for i in ids)  # identity ids, no PII

    # 7 more buyers: the same question now would tell who the 7 are (differencing in time)
    more = [order(f"seg-{n}", shop, people[n]) for n in range(50, 57)]
    produce(env, [send(registry, "orders", o) for o in more])
    wait_rows(env, shop, 57)
    status, answer = api(worker, "/segments/count", key, {"age_bands": ["30-34"]})
    assert (status, answer["reason"]) == (409, "differencing"), answer
    assert set(rows(env, shop)[0]["prefecture"]) == {13, 27}  # 大阪府: JIS 27
    # …and so would Tokyo (52) beside the whole audience (57: 5 in Osaka)
    status, answer = api(worker, "/segments/count", key, {"prefectures": ["東京"]})
    assert (status, answer["reason"]) == (409, "differencing"), answer

    # rounding: 57 customers of another shop are shown as 50
    rounded = [order(f"round-{n}", round_shop, p) for n, p in enumerate(people)]
    produce(env, [send(registry, "orders", o) for o in rounded])
    wait_rows(env, round_shop, 57)
    round_key = issue_key(env, round_shop)
    status, answer = api(worker, "/segments/count", round_key, {"within_days": 30})
    assert (status, answer["count"], answer["shown"]) == (200, 50, "50"), answer
    status, answer = api(worker, "/segments/export", round_key, {"within_days": 30})
    assert status == 200 and len(answer["identity_ids"]) == 57  # the very same set: no new info

    # one merchant, its own customers only; no key, no answer
    status, answer = api(worker, "/segments/count", other_key, {"merchant_id": shop})
    assert (status, answer["reason"]) == (403, "other_merchant")
    status, answer = api(worker, "/segments/count", other_key, {})
    assert (status, answer["count"]) == (200, None)  # its own audience: nobody yet
    assert api(worker, "/segments/count", None, {})[0] == 401
    assert api(worker, "/segments/count", "shk_not-a-key", {})[0] == 401

    # a bad query: every problem said, nothing counted
    status, answer = api(
        worker, "/segments/count", key, {"age_bands": ["16-19"], "prefectures": ["Tokio"]}
    )
    assert (status, answer["reason"]) == (400, "bad_query")
    assert any("16-19" in p and "20-24" in p for p in answer["problems"])
    assert any("Tokio" in p for p in answer["problems"])

    metrics = worker.metrics()
    refused = {
        reason: metrics[f'shinsa_segment_refusals_total{{reason="{reason}"}}']
        for reason in ("below_minimum", "differencing", "other_merchant", "unauthorized")
    }
    assert refused == {
        "below_minimum": 3,
        "differencing": 2,
        "other_merchant": 1,
        "unauthorized": 2,
    }, refused
    assert metrics['shinsa_segment_refusals_total{reason="bad_query"}'] == 1
    assert worker.errors() == []


def test_a_merge_moves_the_person_and_counts_it_once(env, worker, registry):
    merchants = [e for e in simulated(1) if e.topic == "merchants"]
    shop = merchants[0].value["merchant_id"]
    sent = [send(registry, e.topic, e.value) for e in merchants]
    worker.start()
    base = buyer(900, "東京都", None, "1990-05-05")
    # two spellings of one buyer with nothing in common but what the third order links
    phone_only = base | {"email": None, "name": "佐藤 花子", "birth_date": None}
    mail_only = base | {
        "phone": None,
        "name": "サトウ ハナコ",
        "gender": "FEMALE",
        "address": {"postal_code": "530-0001", "prefecture": "大阪府", "street": "梅田2-2"},
    }
    both = base | {"name": "佐藤 花子", "birth_date": None}
    first = [order("mg-1", shop, phone_only), order("mg-2", shop, mail_only)]
    produce(env, sent + [send(registry, "orders", o) for o in first])
    assert set(decided(env, registry, worker, 2).values()) == {"APPROVE"}
    found, ids = wait_rows(env, shop, 2)
    assert len(set(ids)) == 2, "two identities before the link"
    produce(env, [send(registry, "orders", order("mg-3", shop, both))])
    assert decided(env, registry, worker, 3)["mg-3"] == "APPROVE"  # saved before it is sent
    found, ids = wait_rows(env, shop, 1)
    live = found[found["live"] == 1]
    assert int(live["purchases"][0]) == 3 and int(live["spent"][0]) == 9000
    # the survivor keeps the gender the absorbed spelling gave and one prefecture
    assert int(live["gender"][0]) == 1 and int(live["prefecture"][0]) in (13, 27)
    survivor = [i for i, row in zip(ids, found, strict=True) if row["live"] == 1]
    assert survivor[0] and "" in ids, "the absorbed row is emptied, not left counted"
    assert parse_rows(b"").size == 0
    assert worker.errors() == []


def test_a_wallet_shop_payment_adds_its_payer_as_kyc_described_them(env, worker, registry):
    from tests.integration.test_wallet import Wallet, wait_for_keys

    now = datetime.now(UTC)
    w = Wallet(registry, now)
    worker.start()
    kyc = buyer(700, "大阪府", "MALE", f"{now.year - 27}-01-01")  # 26 or 27: 25-29
    produce(
        env,
        [
            w.account("wa-1", "OPENED", timedelta(days=30)),
            w.account("wa-1", "KYC_VERIFIED", timedelta(days=29), kyc_level="FULL", person=kyc),
        ],
    )
    wait_for_keys(env, ["wa:wa-1"])
    pay = {
        "payment_id": "pay-seg-1",
        "account_id": "wa-1",
        "merchant_id": "m-wallet-shop",
        "event_time": int(now.timestamp() * 1000),
        "kind": "PAY",
        "amount": 1200,
    }
    produce(env, [("payments", b"pay-seg-1", w.encode("Payment", pay))])
    seen = collect(env, "decisions", 1, worker=worker)
    assert registry.decode("Decision", seen[0].value())["decision"] == "APPROVE"
    found, ids = wait_rows(env, "m-wallet-shop", 1)
    row = found[0]
    assert (int(row["purchases"]), int(row["spent"])) == (1, 1200)
    assert (AGE_BANDS[row["age"]], int(row["gender"]), int(row["prefecture"])) == ("25-29", 2, 27)
    identity = redis.Redis.from_url(env.redis_url).hget(
        f"{env.identity_namespace}:wa:wa-1", "identity"
    )
    assert ids == [identity.decode()]
    assert worker.errors() == []
