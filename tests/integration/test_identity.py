"""The identity graph on the real Redis: variations link, families and namesakes do not."""

from __future__ import annotations

import asyncio
import multiprocessing
import uuid
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import asyncio as aioredis

from agents.identity import (
    IdentityGraph,
    Lookup,
    drop_namespace,
    person_keys,
    resolve_overlapped,
)
from streams.records import Address, Buyer

pytestmark = pytest.mark.integration
SECRET = b"test-secret"


def buyer(
    name="山田 太郎",
    kana="ヤマダ タロウ",
    phone="090-1234-5678",
    email="taro.yamada@gmail.com",
    birth="1985-04-01",
    postal="100-0001",
    street="千代田1丁目1番1号",
    building=None,
):
    return Buyer(
        name=name,
        name_kana=kana,
        phone=phone,
        email=email,
        birth_date=birth,
        address=Address(postal_code=postal, street=street, building=building),
    )


async def resolve(graph: IdentityGraph, buyers: list[Buyer]) -> list[str]:
    people = [person_keys(b, SECRET) for b in buyers]
    found = await graph.resolve(people, [1_790_000_000_000 + i for i in range(len(people))], 0)
    return [await graph.root(i.identity_id) for i in found]


@pytest.fixture
async def graph(local_stack):
    client = aioredis.Redis.from_url(local_stack.redis_url)
    namespace = f"it-{uuid.uuid4().hex[:8]}"
    yield IdentityGraph(client, namespace, fanout_limit=3)
    await drop_namespace(client, namespace)
    await client.aclose()


async def test_one_person_written_many_ways_is_one_identity(graph):
    variations = [
        buyer(),
        buyer(name="やまだ たろう", phone="09012345678", email="TaroYamada+shop@gmail.com"),
        buyer(name="山田\u3000太郎", phone="+81 90-1234-5678", email=None, postal="〒1000001"),
        buyer(
            name="ﾔﾏﾀﾞ ﾀﾛｳ",
            kana="ﾔﾏﾀﾞ ﾀﾛｳ",
            phone="０９０－１２３４－５６７８",
            email=None,
            birth=None,
        ),
    ]
    assert len(set(await resolve(graph, variations))) == 1


async def test_family_sharing_address_and_landline_stay_apart(graph):
    home = dict(phone="03-3456-7890", postal="100-0001", street="千代田1-1-1", birth=None)
    family = [
        buyer(name="山田 太郎", kana="ヤマダ タロウ", email="taro@example.co.jp", **home),
        buyer(name="山田 花子", kana="ヤマダ ハナコ", email="hanako@example.co.jp", **home),
        buyer(name="山田 一郎", kana="ヤマダ イチロウ", email=None, **home),
    ]
    assert len(set(await resolve(graph, family))) == 3


async def test_namesakes_elsewhere_stay_apart(graph):
    a = buyer(phone="090-1111-2222", email="a@example.co.jp", birth="1980-01-01")
    b = buyer(
        phone="080-3333-4444",
        email="b@example.co.jp",
        birth="1990-02-02",
        postal="530-0001",
        street="梅田2-2-2",
    )
    assert len(set(await resolve(graph, [a, b]))) == 2


async def test_a_record_linking_two_identities_merges_them_into_the_older(graph):
    a = buyer(phone="090-1111-2222", email="a1@example.co.jp", birth=None, street="千代田1-1-1")
    b = buyer(phone="080-3333-4444", email="a2@example.co.jp", birth=None, street="千代田9-9-9")
    first, second = await resolve(graph, [a, b])
    assert first != second
    bridge = replace(b, phone="090-1111-2222")
    (merged,) = await resolve(graph, [bridge])
    assert merged == first == await graph.root(second)
    summary = await graph.summary(second)
    assert summary["orders"] == 3 and summary["merges"] == 1 and summary["phones"] == 2
    assert (await graph.stats())["merges"] == 1
    assert [(m["winner"], m["loser"]) for m in await graph.merges()] == [(first, second)]


async def test_a_new_identity_and_a_returning_one_report_what_is_known_of_them(graph):
    """The script skips the reads for a fresh id: its counts must still be the kept ones."""
    at = 1_790_000_000_000
    keys = person_keys(buyer(email=None), SECRET)
    (new,) = await graph.resolve([keys], [at], 0)
    assert new.new and new.orders == 1 and new.first_seen_ms == at
    assert (new.names, new.addresses, new.phones, new.emails) == (1, 1, 1, 0)
    moved = person_keys(buyer(street="千代田2丁目2番2号"), SECRET)  # same phone, name, email
    (back,) = await graph.resolve([moved], [at - 5_000], 0)  # an earlier event, late
    assert back.identity_id == new.identity_id and not back.new
    assert back.orders == 2 and back.first_seen_ms == at - 5_000
    assert (back.names, back.addresses, back.phones, back.emails) == (1, 2, 1, 1)
    summary = await graph.summary(new.identity_id)
    assert summary["orders"] == 2 and summary["addresses"] == 2


async def test_a_shared_phone_stops_merging_past_the_limit(graph):
    helpdesk = "090-2468-1357"
    names = ["佐藤 一", "鈴木 二", "高橋 三", "田中 四", "伊藤 五", "渡辺 六"]
    people = [
        buyer(name=n, kana=None, phone=helpdesk, email=None, birth=None, street=f"千代田{i}-1-1")
        for i, n in enumerate(names, 1)
    ]
    ids = await resolve(graph, people)
    assert len(set(ids[:3])) == 1  # up to the limit of 3 names the phone links
    assert len({ids[0], *ids[3:]}) == 4  # past it, it no longer does
    assert (await graph.stats())["saturated_keys"] == 1


async def test_redis_holds_no_pii(graph):
    b = buyer()
    await resolve(graph, [b])
    dump = []
    async for key in graph.client.scan_iter(f"{graph.namespace}:*"):
        dump.append(key)
        kind = await graph.client.type(key)
        if kind == b"hash":
            dump.extend(v for kv in (await graph.client.hgetall(key)).items() for v in kv)
        elif kind == b"set":
            dump.extend(await graph.client.smembers(key))
    blob = b"|".join(dump).decode("utf-8", "replace")
    for secret in ("山田", "ヤマダ", "1234", "taro", "千代田", "1985"):
        assert secret not in blob


# Two processes resolving overlapping records at once end with the same partition as one.

PEOPLE = [
    buyer(
        name=f"{last} {first}",
        kana=None,
        phone=f"090-{1000 + i:04d}-{2000 + i:04d}",
        email=f"user{i}@example.co.jp",
        birth=None,
        street=f"千代田{i}-1-1",
    )
    for i, (last, first) in enumerate(
        [("青木", "一郎"), ("石井", "二郎"), ("上田", "三郎"), ("遠藤", "四郎"), ("大野", "五郎")]
    )
]


def variants(i: int) -> list[Buyer]:
    """Records of person i that share only one key with each other, so links are transitive."""
    p = PEOPLE[i]
    return [
        p,
        replace(p, email=None),  # phone only
        replace(p, phone=None),  # email only
        replace(p, phone=None, email=f"alt{i}@example.co.jp"),  # address+name only
    ]


def resolve_in_process(
    redis_url: str, namespace: str, records: list[tuple[int, int]], batch: int
) -> list[str]:
    async def run() -> list[str]:
        client = aioredis.Redis.from_url(redis_url)
        graph = IdentityGraph(client, namespace)
        ids: list[str] = []
        for start in range(0, len(records), batch):
            chunk = [variants(p)[v] for p, v in records[start : start + batch]]
            people = [person_keys(b, SECRET) for b in chunk]
            ids += [i.identity_id for i in await graph.resolve(people, [0] * len(people), 0)]
        await client.aclose()
        return ids

    return asyncio.run(run())


async def partition(
    graph: IdentityGraph, records: list[tuple[int, int]], ids: list[str]
) -> set[frozenset[tuple[int, int]]]:
    groups: dict[str, set[tuple[int, int]]] = {}
    for record, identity in zip(records, ids, strict=True):
        groups.setdefault(await graph.root(identity), set()).add(record)
    return {frozenset(g) for g in groups.values()}


@pytest.fixture(scope="module")
def pool():
    with multiprocessing.get_context("spawn").Pool(2) as p:
        yield p


ALL_RECORDS = [(p, v) for p in range(len(PEOPLE)) for v in range(4)]


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    order=st.permutations(ALL_RECORDS),
    split=st.integers(1, len(ALL_RECORDS) - 1),
    batch=st.integers(1, 5),
)
def test_two_processes_end_with_the_partition_of_one(local_stack, pool, order, split, batch):
    namespace = f"it-{uuid.uuid4().hex[:8]}"
    halves = [order[:split], order[split:]]
    results = pool.starmap(
        resolve_in_process, [(local_stack.redis_url, namespace, h, batch) for h in halves]
    )

    async def check() -> None:
        client = aioredis.Redis.from_url(local_stack.redis_url)
        graph = IdentityGraph(client, namespace)
        got = await partition(graph, halves[0] + halves[1], results[0] + results[1])
        assert got == {frozenset((p, v) for v in range(4)) for p in range(len(PEOPLE))}
        keys = [k async for k in client.scan_iter(f"{namespace}:*")]
        await client.delete(*keys)
        await client.aclose()

    asyncio.run(check())


async def test_a_redelivered_order_is_not_counted_twice(graph):
    person = person_keys(buyer(), SECRET)
    first = await graph.resolve([person], [1], 0, ["o-1"])
    again = await graph.resolve([person], [1], 0, ["o-1"])
    assert again[0].identity_id == first[0].identity_id
    assert again[0].orders == first[0].orders == 1
    later = await graph.resolve([person], [2], 0, ["o-2"])
    assert later[0].orders == 2


# resolve_overlapped: what the intake agent runs per batch, a chunk per script call.


def some_records() -> list[Buyer]:
    """Variations, a family, namesakes and a bridge between two identities."""
    a = buyer(phone="090-1111-2222", email="a1@example.co.jp", birth=None, street="千代田1-1-1")
    b = buyer(phone="080-3333-4444", email="a2@example.co.jp", birth=None, street="千代田9-9-9")
    home = dict(phone="03-3456-7890", postal="100-0001", street="千代田1-1-1", birth=None)
    return [
        buyer(),
        a,
        buyer(name="やまだ たろう", phone="09012345678", email="TaroYamada+shop@gmail.com"),
        b,
        buyer(name="山田 花子", kana="ヤマダ ハナコ", email="hanako@example.co.jp", **home),
        replace(b, phone="090-1111-2222"),
        buyer(name="山田 一郎", kana="ヤマダ イチロウ", email=None, **home),
        buyer(name="ﾔﾏﾀﾞ ﾀﾛｳ", kana="ﾔﾏﾀﾞ ﾀﾛｳ", phone="０９０－１２３４－５６７８", email=None),
    ]


def lookup(i: int, b: Buyer) -> Lookup[int]:
    return Lookup(person_keys(b, SECRET), 1_790_000_000_000 + i, f"o-{i % 6}", i)


@pytest.fixture
async def other_graph(graph):
    """A second, empty graph on the same Redis."""
    other = IdentityGraph(graph.client, f"{graph.namespace}-b", graph.fanout_limit)
    yield other
    await drop_namespace(graph.client, other.namespace)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, None])
async def test_overlapped_chunks_resolve_like_one_call(graph, other_graph, chunk_size):
    records = some_records()
    records += records[:3]  # o-0 … o-2 again: redeliveries, in a later chunk
    skipped = {4}  # prepare rejects it: no identity, no call
    kept = [lookup(i, b) for i, b in enumerate(records) if i not in skipped]
    one_call = await graph.resolve(
        [x.keys for x in kept], [x.time_ms for x in kept], 7, [x.order_id for x in kept]
    )
    done = await resolve_overlapped(
        other_graph,
        list(enumerate(records)),
        lambda item: None if item[0] in skipped else lookup(*item),
        7,
        chunk_size,
    )
    assert done.error is None and done.unresolved == []
    assert done.found == [(x.context, i) for x, i in zip(kept, one_call, strict=True)]
    assert await other_graph.stats() == await graph.stats()


async def test_after_a_failed_call_the_rest_is_left_unresolved(graph, monkeypatch):
    calls = 0
    resolve = graph.resolve

    async def fails_second_time(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ValueError("a bug")
        return await resolve(*args, **kwargs)

    monkeypatch.setattr(graph, "resolve", fails_second_time)
    records = some_records()
    prepared = []

    def prepare(item: tuple[int, Buyer]) -> Lookup[int]:
        prepared.append(item[0])
        return lookup(*item)

    done = await resolve_overlapped(graph, list(enumerate(records)), prepare, 0, chunk_size=2)
    assert isinstance(done.error, ValueError) and calls == 2
    assert [i for i, _ in done.found] == [0, 1]
    assert done.unresolved == list(range(2, len(records)))
    assert prepared == list(range(len(records)))  # every item still validated
