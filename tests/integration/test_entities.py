"""Entity activity and known risk in the real Redis: the scripts' arithmetic is Python's."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest
from redis import asyncio as aioredis
from redis.exceptions import ResponseError

from agents.entities import ACTIVITY_WIDTH, Decayed, EntityState, activity_values
from agents.learn import RiskChanges
from agents.state import (
    Changes,
    HotPathState,
    Keys,
    OrderedWriter,
    Snapshot,
    SnapshotStore,
    entity_ref,
)

pytestmark = pytest.mark.integration
T0 = 1_780_000_000_000
HOUR = 3_600_000


def test_batches_and_labels_add_up_in_redis_as_in_python(local_stack):
    namespace = f"it-ent-{uuid.uuid4().hex[:8]}"
    secret = b"secret"
    merchant = entity_ref(secret, "merchant", "m-1")
    device = entity_ref(secret, "device", "dev-1")
    rnd = random.Random(7)
    batches = [
        [(T0 + rnd.randrange(0, 30 * 24) * HOUR, rnd.randrange(100, 90_000)) for _ in range(50)]
        for _ in range(4)
    ]

    async def run() -> tuple[dict[str, EntityState], EntityState, list[bytes]]:
        client = aioredis.Redis.from_url(local_stack.redis_url)
        try:
            state = HotPathState(client, namespace, secret, 60)
            for batch in batches:  # events of each batch out of order, batches overlapping
                changes = Changes([], [], [], [])
                for at, amount in batch:
                    changes.record_activity(merchant, at, activity_values(amount))
                changes.record_activity(device, batch[0][0], activity_values(batch[0][1]))
                await state.save(changes)
            store = SnapshotStore(client, namespace, 60)
            snap = Snapshot({}, 0.5, "logreg-v1", T0, "i1", 100, "CARD", "APPROVE")
            snap.entities = [merchant]
            risk = RiskChanges()
            risk.add(snap.entities, T0 + 40 * 24 * HOUR, None, 1)
            risk.add(snap.entities, T0 + 41 * 24 * HOUR, None, 0)
            await store.mark_learned([("o1", snap)], list(risk.sums.items()))
            loaded = await state.load([], [], [merchant, device, entity_ref(secret, "device", "x")])
            keys = await client.keys(f"{namespace}:*")
            back = await store.load(["o1"])
            assert back[0] is not None and back[0].entities == [merchant]
            await client.delete(*keys)
            return loaded.entities, loaded.entities[merchant], keys
        finally:
            await client.aclose()

    entities, found, keys = asyncio.run(run())
    expected = EntityState()
    for batch in batches:
        for at, amount in batch:
            expected.record(at, activity_values(amount))
    expected.learn(T0 + 40 * 24 * HOUR, 1)
    expected.learn(T0 + 41 * 24 * HOUR, 0)
    end = T0 + 42 * 24 * HOUR
    assert found.last_ms == expected.last_ms
    assert found.activity.at(end) == pytest.approx(expected.activity.at(end), rel=1e-9)
    assert found.risk.at(end) == pytest.approx(expected.risk.at(end), rel=1e-9)
    assert entities[entity_ref(b"secret", "device", "dev-1")].activity.sums[0] > 0
    unknown = entities[entity_ref(b"secret", "device", "x")]
    assert unknown.activity.empty and unknown.risk.empty and unknown.last_ms == 0
    # no raw id in a key: the device and merchant ids are hashed
    assert not any(b"dev-1" in k or b"m-1" in k for k in keys)
    assert Keys(namespace).entity(merchant).encode() in keys


def test_habits_kept_by_the_last_release_are_widened_by_the_save_script(local_stack):
    """Redis written before the activity sums gained the surprise count: the first batch after
    the upgrade adds to the old habits (entities.lua widens them) instead of replacing them."""
    namespace = f"it-wide-{uuid.uuid4().hex[:8]}"
    card = entity_ref(b"secret", "identity", "i-1")
    old = Decayed(3, T0, [2.0, 8.0, 32.0, 5.0, 20.0, 80.0, 9.0, 36.0, 144.0])

    async def run() -> EntityState:
        client = aioredis.Redis.from_url(local_stack.redis_url)
        try:
            key = Keys(namespace).entity(card)
            await client.hset(key, mapping={"a": old.to_text(), "l": T0})
            state = HotPathState(client, namespace, b"secret", 60)
            changes = Changes([], [], [], [])
            changes.record_activity(card, T0 + HOUR, activity_values(100, ratio=1.5))
            await state.save(changes)
            loaded = await state.load([], [], [card])
            await client.delete(key)
            return loaded.entities[card]
        finally:
            await client.aclose()

    found = asyncio.run(run())
    expected = Decayed.from_text(ACTIVITY_WIDTH, old.to_text())
    expected.add(T0 + HOUR, activity_values(100, ratio=1.5))
    assert found.activity.at_ms == T0 + HOUR
    assert found.activity.sums == pytest.approx(expected.sums, rel=1e-9)
    assert found.activity.sums[3] == 1.0  # the surprise, the old sums kept beside it
    assert found.last_ms == T0 + HOUR


def test_ordered_writes_run_in_order_and_none_after_a_failure(local_stack):
    """The hot path's slice writes (agents/state.py OrderedWriter): Redis applies them in the
    order submitted, and a failed one stops those after it, so a batch's state is a prefix of
    its slices and the retry answers that prefix from the kept decisions."""
    key = f"it-ordered-{uuid.uuid4().hex[:8]}"
    script = (
        "if ARGV[2] == 'boom' then return redis.error_reply('a bug in slice ' .. ARGV[2]) end\n"
        "return redis.call('RPUSH', ARGV[1], ARGV[2])"
    )
    writer = OrderedWriter(local_stack.redis_url, script)

    async def run(values: list[str]) -> None:
        writes = writer.batch()
        for value in values:
            writes.submit([key, value])
        await writes.wait()

    try:
        asyncio.run(run([str(i) for i in range(50)]))
        with pytest.raises(ResponseError, match="a bug in slice boom"):
            asyncio.run(run(["a", "b", "boom", "c", "d"]))
        written = [v.decode() for v in writer.client.lrange(key, 0, -1)]
        assert written == [str(i) for i in range(50)] + ["a", "b"]
    finally:
        writer.client.delete(key)
        writer.close()
